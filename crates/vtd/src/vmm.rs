//! Calls to one VMM's control socket (protocol: `api::control`), with a
//! timeout, its answers turned into API errors.

use std::time::Duration;

use serde::de::DeserializeOwned;
use vt_http::Response;

use crate::error::ApiError;
use crate::store::VmDir;

/// How long vtd waits for a VMM's control socket to answer (the VMM's own
/// limit for its event loop is 5 s).
const VMM_TIMEOUT: Duration = Duration::from_secs(10);

pub fn call(
    dir: &VmDir,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Response, ApiError> {
    vt_http::call_with_timeout(&dir.socket(), method, path, body, Some(VMM_TIMEOUT))
        .map_err(|e| ApiError::new(503, format!("the VMM does not answer: {e}")))
}

pub fn get<T: DeserializeOwned>(dir: &VmDir, path: &str) -> Result<T, ApiError> {
    let r = call(dir, "GET", path, None)?;
    serde_json::from_slice(&r.body).map_err(|e| ApiError::internal("VMM answer", e))
}

/// Sends a command; the VMM's error answers come back as ours.
pub fn put(dir: &VmDir, path: &str) -> Result<(), ApiError> {
    let r = call(dir, "PUT", path, None)?;
    if (200..300).contains(&r.status) {
        return Ok(());
    }
    let msg = serde_json::from_slice::<api::control::ErrorBody>(&r.body)
        .map_or_else(|_| r.text(), |b| b.error);
    Err(ApiError::new(r.status, msg))
}

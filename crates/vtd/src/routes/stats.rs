//! `GET /vms/{name}/stats` (one VM's [`api::stats::VmStats`]) and
//! `GET /metrics` (every VM's, OpenMetrics text for Prometheus).

use vt_http::{Reply, Response};

use super::{json, Answer};
use crate::daemon::Daemon;
use crate::error::ApiError;

/// `GET /vms/{name}/stats`.
pub fn get(d: &Daemon, name: &str) -> Answer {
    let vm = d.get(name)?;
    json(200, &crate::stats::read(&vm))
}

/// `GET /metrics`.
pub fn metrics(d: &Daemon) -> Answer {
    let vms = d.list().iter().map(|vm| crate::stats::read(vm)).collect();
    let text = crate::metrics::encode(vms).map_err(|e| ApiError::internal("encoding", e))?;
    Ok(Reply::Full(Response::new(
        200,
        crate::metrics::CONTENT_TYPE,
        text,
    )))
}

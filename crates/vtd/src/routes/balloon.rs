//! `GET`/`PUT /vms/{name}/balloon`: the running VM's balloon, passed to
//! its VMM's `/vm/balloon` (`vt setmem NAME SIZE`).

use api::control::{self as proto, BalloonInfo, BalloonRequest, ErrorBody};

use super::{json, Answer};
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::vmm;

/// The VMM's answer as ours: the body on success, its error otherwise.
fn forward(r: vt_http::Response) -> Answer {
    if (200..300).contains(&r.status) {
        let info: BalloonInfo =
            serde_json::from_slice(&r.body).map_err(|e| ApiError::internal("VMM answer", e))?;
        return json(200, &info);
    }
    let msg = serde_json::from_slice::<ErrorBody>(&r.body).map_or_else(|_| r.text(), |b| b.error);
    Err(ApiError::new(r.status, msg))
}

pub fn get(d: &Daemon, name: &str) -> Answer {
    let vm = d.get(name)?;
    vm.active_pid()?;
    forward(vmm::call(&vm.dir, "GET", proto::BALLOON, None)?)
}

pub fn put(d: &Daemon, name: &str, body: &[u8], peer: &vt_http::Peer) -> Answer {
    let req: BalloonRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("bad balloon request: {e}")))?;
    let vm = d.get(name)?;
    let _op = vm.op();
    d.still_current(&vm, Some(peer))?;
    vm.active_pid()?;
    let body = serde_json::to_vec(&req).map_err(|e| ApiError::internal("balloon request", e))?;
    forward(vmm::call(&vm.dir, "PUT", proto::BALLOON, Some(body))?)
}

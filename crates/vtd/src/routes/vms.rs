//! `/vms` and `/vms/{name}`: list, define, show, undefine.

use api::manager::{VmDefinition, VmStatus};

use super::{json, Answer};
use crate::daemon::Daemon;
use crate::error::ApiError;

/// `GET /vms`.
pub fn list(d: &Daemon) -> Answer {
    let all: Vec<VmStatus> = d.list().iter().map(|vm| vm.status(false)).collect();
    json(200, &all)
}

/// `POST /vms` with a [`VmDefinition`].
pub fn create(d: &Daemon, body: &[u8], peer: &vt_http::Peer) -> Answer {
    let mut def: VmDefinition = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid VM definition: {e}")))?;
    let caller = api::manager::Owner {
        uid: peer.uid,
        gid: peer.gid,
    };
    // Root may define a VM for another user; anyone else defines their own.
    if peer.uid != 0 {
        if def.owner.is_some_and(|o| o != caller) {
            return Err(ApiError::new(403, "only root may set another owner"));
        }
        def.owner = Some(caller);
    }
    let vm = d.create(def)?;
    json(201, &vm.status(false))
}

/// `GET /vms/{name}`, with the VMM's counters while it runs and each
/// NIC as the host has it.
pub fn get(d: &Daemon, name: &str) -> Answer {
    let vm = d.get(name)?;
    let mut s = vm.status(true);
    s.nics = crate::nics::status(d, &vm.def(), s.state.is_active());
    s.pending_changes = crate::edit::has_pending(&vm.dir);
    json(200, &s)
}

/// `DELETE /vms/{name}`.
pub fn undefine(d: &Daemon, name: &str, peer: &vt_http::Peer) -> Answer {
    d.undefine(name, Some(peer))?;
    Ok(vt_http::Reply::Full(vt_http::Response::new(
        204,
        "application/json",
        "",
    )))
}

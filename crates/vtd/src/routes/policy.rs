//! `/policy`: the policy switches (`vt policy list|set`).

use api::network::PolicySet;

use super::{json, Answer};
use crate::daemon::Daemon;
use crate::error::ApiError;

/// `GET /policy`.
pub fn list(d: &Daemon) -> Answer {
    json(200, &d.policy.list())
}

/// `PUT /policy/{name}` with a [`PolicySet`]; root only. The change goes
/// to the action log with its new value; a switch that changes the
/// network rules has them rebuilt at once.
pub fn set(d: &Daemon, name: &str, body: &[u8], peer: &vt_http::Peer) -> Answer {
    if peer.uid != 0 {
        return Err(ApiError::new(403, "only root may change policy switches"));
    }
    let want: PolicySet = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid policy change: {e}")))?;
    let before = d.policy.on(name);
    let sw = d.policy.set(name, want.state, want.persistent)?;
    let what = format!(
        "/policy/{name}: {} -> {}{}",
        if before { "on" } else { "off" },
        if sw.state { "on" } else { "off" },
        if want.persistent { " (persistent)" } else { "" }
    );
    d.audit.record(peer, "POLICY", &what, 200);
    if name == "vm_inter_vm_traffic" {
        d.sync_rules()?;
    }
    json(200, &sw)
}

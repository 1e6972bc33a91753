//! `/policy`: the policy switches (`vt policy list|set`).

use api::network::PolicySet;

use super::{json, Answer};
use crate::daemon::Daemon;
use crate::error::ApiError;

/// `GET /policy`.
pub fn list(d: &Daemon) -> Answer {
    json(200, &d.policy.list())
}

/// `PUT /policy/{name}` with a [`PolicySet`]; root only. A switch that
/// changes the network rules has them rebuilt at once (if that fails the
/// switch is put back). The change goes to the action log with the old
/// and new value.
pub fn set(d: &Daemon, name: &str, body: &[u8], peer: &vt_http::Peer) -> Answer {
    if peer.uid != 0 {
        return Err(ApiError::new(403, "only root may change policy switches"));
    }
    let want: PolicySet = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid policy change: {e}")))?;
    let before = d.policy.get(name)?;
    let sw = d.policy.set(name, want.state, want.persistent)?;
    if name == "vm_inter_vm_traffic" {
        if let Err(e) = d.sync_rules() {
            // Not half-applied: the switch goes back as it was.
            let _ = d.policy.restore(&before);
            return Err(e);
        }
    }
    let what = format!(
        "{name} {} -> {}{}",
        if before.state { "on" } else { "off" },
        if sw.state { "on" } else { "off" },
        if want.persistent { " (persistent)" } else { "" }
    );
    d.audit
        .action(peer, "policy.set", None, audit::Outcome::Ok, what);
    json(200, &sw)
}

//! `PATCH /vms/{name}` (a JSON merge patch, RFC 7396, of the definition)
//! and `GET /vms/{name}/definition` (the definition the next start uses,
//! as `vt dumpdef` prints it and `vt define` takes it back).

use super::{json, Answer};
use crate::daemon::Daemon;
use crate::error::ApiError;

/// `PATCH /vms/{name}`: the VM's status afterwards (`pending_changes`
/// set when it runs and the change waits for its next start); `note` gets
/// what changed for the audit record (`changed: memory_mib, vcpus`, and
/// `owner: uid 1000 -> uid 1001` when the owner changed).
pub fn patch(
    d: &Daemon,
    name: &str,
    body: &[u8],
    peer: &vt_http::Peer,
    note: &mut Option<String>,
) -> Answer {
    let patch: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
    let change = d.edit(name, &patch, peer)?;
    let mut said = if change.keys.is_empty() {
        "changed: nothing".to_string()
    } else {
        format!("changed: {}", change.keys.join(", "))
    };
    if let Some((before, after)) = change.owner {
        let who = |u: Option<u32>| u.map_or("root".to_string(), |u| format!("uid {u}"));
        said.push_str(&format!("; owner: {} -> {}", who(before), who(after)));
    }
    *note = Some(said);
    super::vms::get(d, name)
}

/// `GET /vms/{name}/definition`.
pub fn definition(d: &Daemon, name: &str) -> Answer {
    let vm = d.get(name)?;
    json(200, &d.next_definition(&vm)?)
}

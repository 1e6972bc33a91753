//! Readiness for systemd (`Type=notify`, contrib/systemd/vtd.service):
//! `READY=1` once both API sockets accept connections and the VMs found
//! running were re-attached, with a `STATUS=` line (the `sd-notify`
//! crate; nothing is sent when `$NOTIFY_SOCKET` is unset).

use std::path::Path;

use sd_notify::NotifyState;

/// Tells the service manager that vtd serves `socket`.
pub fn notify_ready(socket: &Path, vms: usize) {
    let status = format!("serving {} ({vms} VMs defined)", socket.display());
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]) {
        tracing::warn!("cannot tell systemd that vtd is ready: {e}");
    }
}

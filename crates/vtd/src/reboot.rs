//! A graceful reboot, as virsh does it: press the VM's ACPI power button
//! and, when the guest powers itself off, start it again (a new VMM; a
//! pending definition change applies). vtd remembers the intent until the
//! VMM ends or the wait runs out; a stop, shutdown or reset in between
//! cancels it, so `vt reboot` then `vt shutdown` leaves the VM off. The
//! intent lives in vtd's memory: a vtd restarted meanwhile forgets it
//! (the guest then stays off, as after a shutdown). The hard reset is
//! `POST /vms/{name}/reset` (`vt reset`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::control as proto;
use api::manager::VmState;

use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::vm::{lock, Vm};

/// The reason vtd records when the guest powered itself off.
const POWERED_OFF: &str = "guest powered off";

/// Reboots waiting for their guest to power off: VM name → intent id.
#[derive(Debug, Default)]
pub struct Intents {
    pending: Mutex<HashMap<String, u64>>,
    next: AtomicU64,
}

impl Intents {
    fn begin(&self, name: &str) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(name.to_string(), id);
        id
    }

    /// Whether intent `id` of `name` is still wanted; it is used up.
    fn take(&self, name: &str, id: u64) -> bool {
        let mut p = lock(&self.pending);
        if p.get(name) == Some(&id) {
            p.remove(name);
            return true;
        }
        false
    }

    /// Forgets `name`'s reboot (a stop, shutdown or reset came after it).
    pub fn cancel(&self, name: &str) {
        lock(&self.pending).remove(name);
    }
}

impl Daemon {
    /// `POST /vms/{name}/reboot`: presses the power button and watches,
    /// for `wait`, for the guest to power off, then starts the VM again.
    /// A guest that does not power off in time keeps running (nothing is
    /// forced; `vt reset` is the hard way).
    pub fn reboot_gracefully(&self, vm: &Arc<Vm>, wait: Duration) -> Result<(), ApiError> {
        let pid = vm.active_pid()?;
        let name = vm.name().to_string();
        let id = self.reboots.begin(&name);
        if let Err(e) = crate::vmm::put(&vm.dir, proto::POWER_BUTTON) {
            self.reboots.cancel(&name);
            return Err(e);
        }
        self.events.publish(
            &name,
            "rebooting",
            vm.state(),
            Some("power button pressed: started again when the guest powers off".into()),
        );
        let me = self.me.clone();
        let vm = vm.clone();
        let watcher = move || {
            let ended = vm.wait_end(pid, wait);
            let Some(d) = me.upgrade() else { return };
            if !d.reboots.take(&name, id) {
                return;
            }
            if !ended {
                eprintln!(
                    "vtd: VM {name}: reboot: the guest did not power off within {}s; it keeps running",
                    wait.as_secs()
                );
                return;
            }
            let s = vm.status(false);
            if s.state != VmState::Stopped || s.reason.as_deref() != Some(POWERED_OFF) {
                return;
            }
            let started = d.apply_pending(&name).and_then(|vm| {
                let _op = vm.op();
                if vm.state().is_active() {
                    return Ok(());
                }
                d.start_vm(&vm, None)
            });
            if let Err(e) = started {
                eprintln!(
                    "vtd: VM {name}: reboot: starting again failed: {}",
                    e.message
                );
            }
        };
        std::thread::Builder::new()
            .name("vm-reboot".into())
            .spawn(watcher)
            .map_err(|e| ApiError::internal("cannot watch the reboot", e))?;
        Ok(())
    }
}

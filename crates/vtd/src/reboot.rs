//! A graceful reboot, as virsh does it: press the VM's ACPI power button
//! and, when the guest powers itself off, start it again (a new VMM; a
//! pending definition change applies, checked again). vtd remembers the
//! intent until the VMM ends or the wait runs out; a stop, shutdown or
//! reset in between cancels it, so `vt reboot` then `vt shutdown` leaves
//! the VM off. One watcher thread per VM at most: a second reboot while
//! one waits only moves its deadline. The restart takes the VM's `op`
//! lock before it takes the intent, so a stop that came first (it cancels
//! under `op`) wins. A restart that fails publishes `reboot-failed`. The
//! intent lives in vtd's memory: a vtd restarted meanwhile forgets it
//! (the guest then stays off, as after a shutdown). The hard reset is
//! `POST /vms/{name}/reset` (`vt reset`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::control as proto;
use api::manager::VmState;

use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::vm::{lock, Vm};

/// The reason vtd records when the guest powered itself off.
const POWERED_OFF: &str = "guest powered off";

/// How often a watcher looks whether its intent changed.
const SLICE: Duration = Duration::from_millis(500);

/// A reboot wanted: of the VMM `pid`, until `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Intent {
    pid: u32,
    deadline: Instant,
}

/// The VMs with a reboot watcher: VM name → its intent (`None`:
/// cancelled, the watcher is about to end).
#[derive(Debug, Default)]
pub struct Intents {
    watched: Mutex<HashMap<String, Option<Intent>>>,
}

impl Intents {
    /// Records the intent; true when no watcher runs for `name` yet (the
    /// caller starts one).
    fn begin(&self, name: &str, intent: Intent) -> bool {
        lock(&self.watched)
            .insert(name.to_string(), Some(intent))
            .is_none()
    }

    /// Forgets `name`'s reboot (a stop, shutdown or reset came after it).
    pub fn cancel(&self, name: &str) {
        if let Some(i) = lock(&self.watched).get_mut(name) {
            *i = None;
        }
    }

    /// The intent the watcher of `name` serves now; `None` (and the
    /// watcher's entry gone) when it was cancelled.
    fn current(&self, name: &str) -> Option<Intent> {
        let mut w = lock(&self.watched);
        let i = w.get(name).copied().flatten();
        if i.is_none() {
            w.remove(name);
        }
        i
    }

    /// Ends the watcher of `name`.
    fn end(&self, name: &str) {
        lock(&self.watched).remove(name);
    }

    /// How many VMs have a reboot watcher (for tests).
    #[cfg(test)]
    fn watchers(&self) -> usize {
        lock(&self.watched).len()
    }
}

impl Daemon {
    /// `POST /vms/{name}/reboot` (the caller holds `vm.op()`): presses the
    /// power button and watches, for `wait`, for the guest to power off,
    /// then starts the VM again. A guest that does not power off in time
    /// keeps running (nothing is forced; `vt reset` is the hard way).
    pub fn reboot_gracefully(&self, vm: &Arc<Vm>, wait: Duration) -> Result<(), ApiError> {
        let pid = vm.active_pid()?;
        let name = vm.name().to_string();
        crate::vmm::put(&vm.dir, proto::POWER_BUTTON)?;
        let intent = Intent {
            pid,
            deadline: Instant::now() + wait,
        };
        let new = self.reboots.begin(&name, intent);
        self.events.publish(
            &name,
            "rebooting",
            vm.state(),
            Some("power button pressed: started again when the guest powers off".into()),
        );
        if !new {
            return Ok(());
        }
        let me = self.me.clone();
        let vm = vm.clone();
        let watcher = move || {
            while let Some(d) = me.upgrade() {
                if !d.watch_reboot(&vm) {
                    return;
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("vm-reboot".into())
            .spawn(watcher)
        {
            self.reboots.end(&name);
            return Err(ApiError::internal("cannot watch the reboot", e));
        }
        Ok(())
    }

    /// One step of `vm`'s reboot watcher; false when it is done.
    fn watch_reboot(&self, vm: &Arc<Vm>) -> bool {
        let name = vm.name();
        let Some(intent) = self.reboots.current(name) else {
            return false;
        };
        let left = intent.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.reboots.end(name);
            tracing::warn!(
                "VM {name}: reboot: the guest did not power off in time; it keeps running"
            );
            return false;
        }
        if !vm.wait_end(intent.pid, left.min(SLICE)) {
            return true;
        }
        // The VMM ended. A stop, shutdown or reset that took `op` first
        // has cancelled the intent: it is taken under `op` only.
        let _op = vm.op();
        match self.reboots.current(name) {
            None => return false,
            // A new reboot of a VM started again meanwhile: watch that.
            Some(now) if now.pid != intent.pid => return true,
            Some(_) => self.reboots.end(name),
        }
        let s = vm.status(false);
        if s.state != VmState::Stopped || s.reason.as_deref() != Some(POWERED_OFF) {
            return false;
        }
        let started = self
            .still_current(vm, None)
            .and_then(|()| self.apply_pending(vm))
            .and_then(|()| self.start_vm(vm, None));
        if let Err(e) = started {
            tracing::warn!("VM {name}: reboot: starting again failed: {}", e.message);
            self.events.publish(
                name,
                "reboot-failed",
                vm.state(),
                Some(format!("starting again failed: {}", e.message)),
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second reboot while one waits moves the deadline, no second
    /// watcher; a cancel leaves the entry until the watcher sees it.
    #[test]
    fn one_watcher_per_vm() {
        let i = Intents::default();
        let at = |s| Intent {
            pid: 7,
            deadline: Instant::now() + Duration::from_secs(s),
        };
        assert!(i.begin("a", at(1)));
        for _ in 0..100 {
            assert!(!i.begin("a", at(5)));
        }
        assert_eq!(i.watchers(), 1);
        assert!(i.current("a").is_some());
        i.cancel("a");
        assert_eq!(i.watchers(), 1);
        assert!(i.current("a").is_none());
        assert_eq!(i.watchers(), 0);
        assert!(i.begin("a", at(1)));
    }
}

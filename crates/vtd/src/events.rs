//! State-change events, fanned out to every `GET /events` follower.
//!
//! Each follower has a bounded queue; one that falls behind by more than
//! [`QUEUE`] events is dropped (its stream ends) rather than slowing the
//! daemon down. Every event is also a `lifecycle.EVENT` record of the
//! audit trail.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use api::manager::{Event, VmState};

use crate::audit::Audit;
use crate::store::now_ms;

const QUEUE: usize = 256;

#[derive(Default)]
pub struct Events {
    followers: Mutex<Vec<SyncSender<String>>>,
    audit: Option<Arc<Audit>>,
}

impl Events {
    /// Events that are also recorded in `audit`.
    pub fn audited(audit: Arc<Audit>) -> Events {
        Events {
            followers: Mutex::default(),
            audit: Some(audit),
        }
    }

    /// Sends an event to every follower.
    pub fn publish(&self, vm: &str, event: &str, state: VmState, reason: Option<String>) {
        self.publish_vmm(vm, event, state, reason, None);
    }

    /// Sends an event, recording the VMM's pid and uid (when known) in
    /// the audit trail.
    pub fn publish_vmm(
        &self,
        vm: &str,
        event: &str,
        state: VmState,
        reason: Option<String>,
        vmm: Option<(u32, Option<u32>)>,
    ) {
        // Every lifecycle change is in vtd's log too.
        let why = reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let pid = vmm.map(|v| v.0);
        match state {
            VmState::Crashed | VmState::Unknown => {
                tracing::warn!(
                    vm,
                    event,
                    state = state.as_str(),
                    pid,
                    "VM {vm} {event}{why}"
                )
            }
            _ => tracing::info!(
                vm,
                event,
                state = state.as_str(),
                pid,
                "VM {vm} {event}{why}"
            ),
        }
        if let Some(a) = &self.audit {
            let detail = reason
                .clone()
                .unwrap_or_else(|| format!("state {}", state.as_str()));
            a.lifecycle(vm, event, vmm.map(|v| v.0), vmm.and_then(|v| v.1), detail);
        }
        let e = Event {
            time_ms: now_ms(),
            vm: vm.to_string(),
            event: event.to_string(),
            state,
            reason,
        };
        let Ok(line) = serde_json::to_string(&e) else {
            return;
        };
        let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        followers.retain(|f| match f.try_send(line.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        });
    }

    /// A new follower's queue of JSON lines.
    pub fn follow(&self) -> Receiver<String> {
        let (tx, rx) = sync_channel(QUEUE);
        self.followers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_get_events_and_slow_ones_are_dropped() {
        let ev = Events::default();
        let a = ev.follow();
        ev.publish("vm1", "started", VmState::Running, None);
        let e: Event = serde_json::from_str(&a.recv().unwrap()).unwrap();
        assert_eq!((e.vm.as_str(), e.event.as_str()), ("vm1", "started"));
        for _ in 0..=QUEUE {
            ev.publish("vm1", "paused", VmState::Paused, None);
        }
        // The queue overflowed: that follower is gone.
        assert!(ev.followers.lock().unwrap().is_empty());
    }
}

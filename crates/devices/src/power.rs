//! Power requests from devices to the VMM.
//!
//! A device (ACPI sleep register, i8042, ACPI reset register) calls
//! [`PowerSignal::request`]; the VMM's event loop wakes on
//! [`PowerSignal::event_fd`] and reads the request with [`PowerSignal::take`].
//! The first request wins: a reset after a power-off is ignored.

use std::sync::atomic::{AtomicU8, Ordering};

use vmm_sys_util::eventfd::EventFd;

/// What the guest asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerRequest {
    PowerOff,
    Reset,
}

const NONE: u8 = 0;
const POWER_OFF: u8 = 1;
const RESET: u8 = 2;

/// A one-shot latch plus an eventfd to wake the VMM.
pub struct PowerSignal {
    state: AtomicU8,
    evt: EventFd,
}

impl PowerSignal {
    pub fn new() -> std::io::Result<Self> {
        Ok(PowerSignal {
            state: AtomicU8::new(NONE),
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// Records `req` (unless one is already pending) and wakes the VMM.
    pub fn request(&self, req: PowerRequest) {
        let v = match req {
            PowerRequest::PowerOff => POWER_OFF,
            PowerRequest::Reset => RESET,
        };
        let _ = self
            .state
            .compare_exchange(NONE, v, Ordering::AcqRel, Ordering::Acquire);
        // A failed write means the counter is saturated: already signalled.
        let _ = self.evt.write(1);
    }

    /// The pending request, if any.
    pub fn take(&self) -> Option<PowerRequest> {
        let _ = self.evt.read();
        match self.state.load(Ordering::Acquire) {
            POWER_OFF => Some(PowerRequest::PowerOff),
            RESET => Some(PowerRequest::Reset),
            _ => None,
        }
    }

    /// The eventfd to poll.
    pub fn event_fd(&self) -> &EventFd {
        &self.evt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_wins() {
        let p = PowerSignal::new().unwrap();
        assert_eq!(p.take(), None);
        p.request(PowerRequest::PowerOff);
        p.request(PowerRequest::Reset);
        assert_eq!(p.take(), Some(PowerRequest::PowerOff));
    }
}

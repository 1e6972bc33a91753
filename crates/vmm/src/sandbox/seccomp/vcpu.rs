//! The vCPU threads' allow-list, installed first thing in each vCPU thread
//! (on top of the main thread's filter, which it inherits).
//!
//! A vCPU runs `KVM_RUN` and handles port and MMIO exits on the buses: UART
//! output (`write` to the serial file or stdout), eventfd writes (irqfds,
//! power requests, the VMM's event channel), and on guest writes to a
//! virtio device's registers: MSI-X routes (`KVM_SET_GSI_ROUTING`,
//! `KVM_IRQFD`), notification eventfds moving with BAR 0 (`KVM_IOEVENTFD`),
//! and device activation: tap offloads (`TUNSETOFFLOAD`), a rate-limit
//! timer, the worker's epoll and the worker thread itself, which inherits
//! this filter, so what a worker does is allowed here too (`worker.rs`).
//! A device reset joins its worker.

use super::{ioctls, worker, Result, Rules};

/// Adds the vCPU threads' calls to `r`.
pub fn rules(r: &mut Rules) -> Result<()> {
    worker::rules(r)?;
    r.allow(&[
        // Device activation: the worker's eventfds, epoll, timer, thread.
        libc::SYS_eventfd2,
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_timerfd_create,
        libc::SYS_clone3,
    ]);
    r.allow_ioctls(ioctls::VCPU)?;
    Ok(())
}

//! Interrupts from a virtio device to the guest: MSI-X vectors, each an
//! eventfd that KVM turns into an MSI (irqfd on a GSI routed by the VMM).
//!
//! A vector that is masked (or MSI-X disabled) when the device fires is
//! marked pending in the PBA and fired when the guest unmasks it.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::bus::lock;
use crate::pci::msix::Msix;
use crate::stats::QueueInterrupts;

/// "No vector" in the common configuration.
pub const NO_VECTOR: u16 = 0xffff;
/// ISR bits.
pub const ISR_QUEUE: u8 = 1;
pub const ISR_CONFIG: u8 = 2;

/// What the transport needs from the hypervisor; the VMM implements it on
/// its KVM VM.
pub trait VmHooks: Send + Sync {
    /// Makes writes to `evt` raise interrupt line `gsi`.
    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> io::Result<()>;
    /// Points interrupt line `gsi` at the MSI `address`/`data`.
    fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> io::Result<()>;
    /// Makes guest writes to MMIO `addr` signal `evt` without a VM exit.
    fn register_ioevent(&self, evt: &EventFd, addr: u64) -> io::Result<()>;
    /// Undoes [`VmHooks::register_ioevent`].
    fn unregister_ioevent(&self, evt: &EventFd, addr: u64) -> io::Result<()>;
}

/// The MSI-X state of one function and an eventfd per vector.
pub struct Vectors {
    pub msix: Mutex<Msix>,
    irqfds: Vec<EventFd>,
}

impl Vectors {
    /// `irqfds[n]` raises vector n.
    pub fn new(irqfds: Vec<EventFd>) -> Self {
        let n = u16::try_from(irqfds.len()).unwrap_or(u16::MAX);
        Vectors {
            msix: Mutex::new(Msix::new(n)),
            irqfds,
        }
    }

    pub fn irqfd(&self, vector: u16) -> Option<&EventFd> {
        self.irqfds.get(usize::from(vector))
    }

    /// Raises `vector` now, or marks it pending while it is masked.
    pub fn fire(&self, vector: u16) {
        if vector == NO_VECTOR {
            return;
        }
        if lock(&self.msix).deliverable(vector) {
            if let Some(evt) = self.irqfd(vector) {
                let _ = evt.write(1);
            }
        }
    }

    /// Fires every pending vector that is no longer masked.
    pub fn replay_pending(&self) {
        let mut msix = lock(&self.msix);
        for v in 0..msix.vectors() {
            if msix.unmasked(v) && msix.take_pending(v) {
                if let Some(evt) = self.irqfd(v) {
                    let _ = evt.write(1);
                }
            }
        }
    }
}

/// The transport state an interrupt touches: the ISR byte and the
/// device-failed flag (shown as DEVICE_NEEDS_RESET in the status).
#[derive(Default)]
pub struct SharedStatus {
    pub isr: AtomicU8,
    pub needs_reset: AtomicBool,
}

/// How an active device signals the guest; built by the transport when the
/// driver sets DRIVER_OK, with the vectors the driver chose.
pub struct Interrupt {
    vectors: Arc<Vectors>,
    shared: Arc<SharedStatus>,
    queue_vectors: Vec<u16>,
    config_vector: u16,
    /// Interrupts sent per queue, when the device counts them.
    counts: Option<Arc<dyn QueueInterrupts>>,
}

impl Interrupt {
    pub fn new(
        vectors: Arc<Vectors>,
        shared: Arc<SharedStatus>,
        queue_vectors: Vec<u16>,
        config_vector: u16,
    ) -> Self {
        Interrupt {
            vectors,
            shared,
            queue_vectors,
            config_vector,
            counts: None,
        }
    }

    /// Counts each queue's interrupts in `counts` (entry i for queue i).
    pub fn with_counts(mut self, counts: Option<Arc<dyn QueueInterrupts>>) -> Self {
        self.counts = counts;
        self
    }

    /// Tells the guest that queue `index` has used buffers.
    pub fn signal_queue(&self, index: usize) {
        self.shared.isr.fetch_or(ISR_QUEUE, Ordering::SeqCst);
        let v = self.queue_vectors.get(index).copied().unwrap_or(NO_VECTOR);
        if let Some(n) = self
            .counts
            .as_ref()
            .and_then(|c| c.queue_interrupts().get(index))
        {
            n.fetch_add(1, Ordering::Relaxed);
        }
        self.vectors.fire(v);
    }

    /// Tells the guest that the device configuration (or status) changed.
    pub fn signal_config(&self) {
        self.shared.isr.fetch_or(ISR_CONFIG, Ordering::SeqCst);
        self.vectors.fire(self.config_vector);
    }

    /// Marks the device broken by its driver (DEVICE_NEEDS_RESET) and tells
    /// the guest; the device stops serving its queues until reset.
    pub fn fail(&self, why: &str) {
        if !self.shared.needs_reset.swap(true, Ordering::SeqCst) {
            log::warn!("virtio device needs reset: {why}");
            self.signal_config();
        }
    }

    pub fn failed(&self) -> bool {
        self.shared.needs_reset.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(n: usize) -> Arc<Vectors> {
        let fds = (0..n)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
            .collect();
        Arc::new(Vectors::new(fds))
    }

    fn unmask_all(v: &Vectors) {
        let mut m = lock(&v.msix);
        m.set_control(1 << 15);
        for n in 0..m.vectors() {
            m.write_table(u64::from(n) * 16 + 12, &0u32.to_le_bytes());
        }
    }

    #[test]
    fn masked_vectors_wait_in_the_pba_until_unmasked() {
        let v = vectors(2);
        let shared = Arc::new(SharedStatus::default());
        let irq = Interrupt::new(v.clone(), shared.clone(), vec![1], 0);
        irq.signal_queue(0);
        assert!(v.irqfd(1).unwrap().read().is_err(), "fired while masked");
        unmask_all(&v);
        v.replay_pending();
        assert_eq!(v.irqfd(1).unwrap().read().unwrap(), 1);
        assert!(v.irqfd(0).unwrap().read().is_err());
        irq.signal_queue(0);
        assert_eq!(v.irqfd(1).unwrap().read().unwrap(), 1);
        assert_eq!(shared.isr.load(Ordering::SeqCst), ISR_QUEUE);
    }

    #[test]
    fn failure_is_reported_once_on_the_config_vector() {
        let v = vectors(2);
        unmask_all(&v);
        let shared = Arc::new(SharedStatus::default());
        let irq = Interrupt::new(v.clone(), shared.clone(), vec![NO_VECTOR, 7], 0);
        irq.signal_queue(0); // no vector: nothing
        irq.signal_queue(1); // out of range: nothing
        irq.signal_queue(5); // no such queue: nothing
        assert!(v.irqfd(1).unwrap().read().is_err());
        irq.fail("test");
        irq.fail("again");
        assert!(irq.failed());
        assert_eq!(v.irqfd(0).unwrap().read().unwrap(), 1);
    }
}

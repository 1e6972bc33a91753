//! virtio 1.x devices over PCI (the "modern" interface only).
//!
//! - [`pci`]: the transport — a PCI function whose BAR 0 holds the common
//!   configuration, ISR, device configuration, notification area and the
//!   MSI-X table;
//! - [`interrupt`]: how a device worker raises a queue or configuration
//!   interrupt (MSI-X vectors backed by KVM irqfds);
//! - [`worker`]: the thread each active device runs its queues on;
//! - [`chain`]: reads and checks a descriptor chain the guest posted;
//! - the devices: [`rng`], [`block`], [`net`], [`balloon`].
//!
//! Everything in a queue is written by the guest and is hostile: a chain
//! that points outside guest memory, loops, or has the wrong shape marks the
//! device `DEVICE_NEEDS_RESET`; the VMM keeps running.

pub mod balloon;
pub mod block;
pub mod chain;
mod common;
pub mod interrupt;
pub mod net;
pub mod pci;
pub mod rng;
pub mod worker;

#[cfg(test)]
mod notify_tests;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use interrupt::{Interrupt, VmHooks};
pub use pci::VirtioPci;
pub use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Device types (virtio spec 5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;
pub const TYPE_BALLOON: u32 = 5;

/// Feature bits every device here offers.
pub const F_VERSION_1: u64 = 1 << 32;
pub const F_RING_INDIRECT_DESC: u64 = 1 << 28;
pub const F_RING_EVENT_IDX: u64 = 1 << 29;
/// The transport features offered by every device.
pub const COMMON_FEATURES: u64 = F_VERSION_1 | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX;

/// Device status bits (virtio spec 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const NEEDS_RESET: u8 = 0x40;
    pub const FAILED: u8 = 0x80;
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    pub mem: GuestMemoryMmap,
    /// The queues the driver enabled, with the eventfd its notifications
    /// arrive on; indexed like the device's queues (disabled ones are None).
    pub queues: Vec<Option<(Queue, EventFd)>>,
    /// The features the driver accepted.
    pub features: u64,
    pub interrupt: Arc<Interrupt>,
}

impl Activation {
    /// Takes queue `index` out, or says the device cannot run without it.
    pub fn take_queue(&mut self, index: usize) -> Result<(Queue, EventFd), ActivateError> {
        self.queues
            .get_mut(index)
            .and_then(Option::take)
            .ok_or(ActivateError::MissingQueue(index))
    }
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("queue {0} is required but was not enabled")]
    MissingQueue(usize),
    #[error("cannot start the device worker: {0}")]
    Worker(#[source] std::io::Error),
}

/// A virtio device behind the PCI transport.
pub trait VirtioDevice: Send {
    /// The virtio device type ([`TYPE_BLOCK`], ...).
    fn device_type(&self) -> u32;
    /// The largest size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Every feature the device offers, transport features included.
    fn features(&self) -> u64;
    /// Reads the device-specific configuration at `offset`; bytes past its
    /// end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration (most devices ignore it).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts serving the queues.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Stops serving the queues and forgets their state (driver reset).
    fn reset(&mut self);
    /// Where the transport counts the interrupts of each queue, if the
    /// device counts ([`crate::stats`]).
    fn queue_interrupts(&self) -> Option<Arc<dyn crate::stats::QueueInterrupts>> {
        None
    }
}

/// Copies `src[offset..]` into `data`, zero past the end of `src`.
pub fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    for (i, d) in data.iter_mut().enumerate() {
        *d = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|at| src.get(at))
            .copied()
            .unwrap_or(0);
    }
}

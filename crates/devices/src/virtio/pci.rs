//! The virtio-pci transport (virtio 1.x "modern" only, spec 4.1).
//!
//! BAR 0 (32-bit memory, [`BAR_SIZE`] bytes) holds, at fixed offsets:
//!
//! | offset   | what                                          |
//! |----------|-----------------------------------------------|
//! | `0x0000` | common configuration ([`super::common`])      |
//! | `0x1000` | ISR status (read clears)                      |
//! | `0x2000` | device-specific configuration                 |
//! | `0x3000` | queue notifications, 4 bytes per queue        |
//! | `0x4000` | MSI-X table (one vector per queue + config)   |
//! | `0x6000` | MSI-X pending-bit array                       |
//!
//! Notifications reach the device worker through an ioeventfd per queue
//! (no VM exit); a write the ioeventfd did not catch is forwarded too.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::interrupt::{SharedStatus, Vectors, VmHooks, NO_VECTOR};
use super::{Queue, QueueT, VirtioDevice};
use crate::bus::lock;
use crate::pci::{msix, BarKind, PciConfig, PciFunction, PciHeader};

pub const BAR_SIZE: u64 = 0x8000;
pub const COMMON_OFFSET: u64 = 0x0000;
pub const COMMON_LEN: u64 = 0x38;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_OFFSET: u64 = 0x2000;
pub const DEVICE_LEN: u64 = 0x1000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const NOTIFY_MULTIPLIER: u32 = 4;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u64 = 0x6000;

const VIRTIO_VENDOR: u16 = 0x1af4;
const VENDOR_CAP: u8 = 0x09;
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;
const COMMAND_MEMORY: u16 = 0x2;

/// Errors building a transport (VMM set-up, not guest input).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("PCI configuration: {0}")]
    Config(#[from] crate::pci::Error),
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("a device with {0} queues needs more MSI-X vectors than fit in BAR 0")]
    TooManyQueues(usize),
}

/// One virtio device as a PCI function.
pub struct VirtioPci {
    pub(super) config: PciConfig,
    pub(super) device: Box<dyn VirtioDevice>,
    pub(super) mem: GuestMemoryMmap,
    pub(super) hooks: Arc<dyn VmHooks>,
    pub(super) vectors: Arc<Vectors>,
    pub(super) shared: Arc<SharedStatus>,
    gsi_base: u32,
    msix_cap_reg: usize,
    msix_control: u16,
    notify_evts: Vec<EventFd>,
    /// Where the notification ioeventfds are registered now.
    notify_base: Option<u64>,
    // Common configuration state.
    pub(super) device_feature_select: u32,
    pub(super) driver_feature_select: u32,
    pub(super) driver_features: u64,
    pub(super) config_vector: u16,
    pub(super) status: u8,
    pub(super) config_generation: u8,
    pub(super) queue_select: u16,
    pub(super) queues: Vec<Queue>,
    pub(super) queue_vectors: Vec<u16>,
    pub(super) active: bool,
}

/// The PCI identity of a virtio device type (spec 4.1.2.1).
fn header(device_type: u32) -> PciHeader {
    let (class, subclass) = match device_type {
        super::TYPE_NET => (0x02, 0x00),
        super::TYPE_BLOCK => (0x01, 0x00),
        _ => (0xff, 0x00),
    };
    PciHeader {
        vendor_id: VIRTIO_VENDOR,
        device_id: 0x1040 + device_type as u16,
        class,
        subclass,
        prog_if: 0,
        revision: 1,
        subsystem_vendor_id: VIRTIO_VENDOR,
        subsystem_id: 0x40,
    }
}

fn virtio_cap(cfg_type: u8, offset: u64, len: u64, extra: Option<u32>) -> Vec<u8> {
    let cap_len = if extra.is_some() { 20 } else { 16 };
    let mut c = vec![VENDOR_CAP, 0, cap_len, cfg_type, 0, 0, 0, 0];
    c.extend_from_slice(&(offset as u32).to_le_bytes());
    c.extend_from_slice(&(len as u32).to_le_bytes());
    if let Some(x) = extra {
        c.extend_from_slice(&x.to_le_bytes());
    }
    c
}

impl VirtioPci {
    /// Wraps `device` in a PCI function whose BAR 0 sits at `bar_addr`,
    /// with MSI-X vectors on GSIs `gsi_base..` (one per queue, plus one).
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        hooks: Arc<dyn VmHooks>,
        gsi_base: u32,
        bar_addr: u64,
    ) -> Result<Self, Error> {
        let max_sizes = device.queue_max_sizes();
        let nvec = max_sizes.len() + 1;
        if nvec as u64 * msix::ENTRY_SIZE > MSIX_PBA_OFFSET - MSIX_TABLE_OFFSET {
            return Err(Error::TooManyQueues(max_sizes.len()));
        }
        let mut irqfds = Vec::with_capacity(nvec);
        for _ in 0..nvec {
            irqfds.push(EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Io("eventfd", e))?);
        }
        let vectors = Arc::new(Vectors::new(irqfds));
        let mut notify_evts = Vec::with_capacity(max_sizes.len());
        for _ in &max_sizes {
            notify_evts
                .push(EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Io("eventfd", e))?);
        }
        let mut queues = Vec::with_capacity(max_sizes.len());
        for &size in &max_sizes {
            queues.push(
                Queue::new(size)
                    .map_err(|e| Error::Io("queue", std::io::Error::other(e.to_string())))?,
            );
        }

        let mut config = PciConfig::new(&header(device.device_type()));
        config.add_bar(0, BAR_SIZE, BarKind::Mem32)?;
        config.set_bar_address(0, bar_addr);
        let nq = max_sizes.len() as u64;
        for cap in [
            virtio_cap(CAP_COMMON, COMMON_OFFSET, COMMON_LEN, None),
            virtio_cap(CAP_ISR, ISR_OFFSET, 4, None),
            virtio_cap(CAP_DEVICE, DEVICE_OFFSET, DEVICE_LEN, None),
            virtio_cap(
                CAP_NOTIFY,
                NOTIFY_OFFSET,
                nq * u64::from(NOTIFY_MULTIPLIER),
                Some(NOTIFY_MULTIPLIER),
            ),
        ] {
            config.add_capability(&cap, &[])?;
        }
        let (body, mask) =
            lock(&vectors.msix).capability(0, MSIX_TABLE_OFFSET as u32, MSIX_PBA_OFFSET as u32);
        let msix_cap = config.add_capability(&body, &mask)?;

        let pci = VirtioPci {
            config,
            device,
            mem,
            hooks,
            vectors,
            shared: Arc::new(SharedStatus::default()),
            gsi_base,
            msix_cap_reg: msix_cap / 4,
            msix_control: 0,
            notify_evts,
            notify_base: None,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            config_vector: NO_VECTOR,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            queue_vectors: vec![NO_VECTOR; max_sizes.len()],
            queues,
            active: false,
        };
        for v in 0..nvec as u16 {
            if let Some(evt) = pci.vectors.irqfd(v) {
                pci.hooks
                    .register_irqfd(evt, gsi_base + u32::from(v))
                    .map_err(|e| Error::Io("KVM_IRQFD", e))?;
            }
        }
        Ok(pci)
    }

    /// The eventfd a notification of queue `index` signals.
    pub fn notify_evt(&self, index: usize) -> Option<&EventFd> {
        self.notify_evts.get(index)
    }

    /// MSI-X vectors (and so GSIs) this function uses.
    pub fn vector_count(&self) -> u32 {
        u32::from(lock(&self.vectors.msix).vectors())
    }

    /// Moves the notification ioeventfds to where BAR 0 decodes now.
    fn place_notify(&mut self) {
        let want = if self.config.command() & COMMAND_MEMORY != 0 {
            self.config.bar_address(0)
        } else {
            None
        };
        if want == self.notify_base {
            return;
        }
        let at =
            |base: u64, i: usize| base + NOTIFY_OFFSET + i as u64 * u64::from(NOTIFY_MULTIPLIER);
        if let Some(old) = self.notify_base.take() {
            for (i, evt) in self.notify_evts.iter().enumerate() {
                let _ = self.hooks.unregister_ioevent(evt, at(old, i));
            }
        }
        if let Some(new) = want {
            for (i, evt) in self.notify_evts.iter().enumerate() {
                if let Err(e) = self.hooks.register_ioevent(evt, at(new, i)) {
                    log::warn!("virtio: ioeventfd at {:#x}: {e}", at(new, i));
                }
            }
            self.notify_base = Some(new);
        }
    }

    /// Re-reads the MSI-X message control the guest may have written.
    fn sync_msix_control(&mut self) {
        let control = (self.config.read(self.msix_cap_reg) >> 16) as u16;
        if control != self.msix_control {
            self.msix_control = control;
            lock(&self.vectors.msix).set_control(control);
            self.vectors.replay_pending();
        }
    }

    fn write_msix_table(&mut self, offset: u64, data: &[u8]) {
        // One look under the lock: the entry before and after the write.
        let changed = {
            let mut m = lock(&self.vectors.msix);
            let before = usize::try_from(offset / msix::ENTRY_SIZE)
                .ok()
                .and_then(|n| u16::try_from(n).ok())
                .and_then(|n| m.entry(n));
            match m.write_table(offset, data) {
                msix::MsixChange::Vector(v) => Some((v, before, m.entry(v))),
                msix::MsixChange::None => None,
            }
        };
        let Some((v, before, after)) = changed else {
            return;
        };
        // Re-route only when the message changed (KVM_SET_GSI_ROUTING
        // replaces the whole table), not on a mask toggle.
        let moved = |e: &msix::MsixEntry| {
            before.is_none_or(|b| b.address() != e.address() || b.data != e.data)
        };
        if let Some(e) = after.filter(moved) {
            let gsi = self.gsi_base + u32::from(v);
            if let Err(err) = self.hooks.set_msi_route(gsi, e.address(), e.data) {
                log::warn!("virtio: MSI route for GSI {gsi}: {err}");
            }
        }
        self.vectors.replay_pending();
    }
}

impl PciFunction for VirtioPci {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }

    fn write_config(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.config.write(reg, offset, data);
        self.sync_msix_control();
        self.place_notify();
    }

    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if bar != 0 {
            return;
        }
        match offset {
            o if o < COMMON_LEN => self.read_common(o, data),
            // Reading the ISR byte clears it; the bytes after it read zero.
            ISR_OFFSET => {
                let isr = self.shared.isr.swap(0, Ordering::SeqCst);
                if let Some(d) = data.first_mut() {
                    *d = isr;
                }
            }
            o if (DEVICE_OFFSET..DEVICE_OFFSET + DEVICE_LEN).contains(&o) => {
                self.device.read_config(o - DEVICE_OFFSET, data)
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                lock(&self.vectors.msix).read_table(o - MSIX_TABLE_OFFSET, data)
            }
            o if (MSIX_PBA_OFFSET..BAR_SIZE).contains(&o) => {
                lock(&self.vectors.msix).read_pba(o - MSIX_PBA_OFFSET, data)
            }
            _ => {}
        }
    }

    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != 0 {
            return;
        }
        match offset {
            o if o < COMMON_LEN => self.write_common(o, data),
            o if (DEVICE_OFFSET..DEVICE_OFFSET + DEVICE_LEN).contains(&o) => {
                self.device.write_config(o - DEVICE_OFFSET, data)
            }
            o if (NOTIFY_OFFSET..MSIX_TABLE_OFFSET).contains(&o) => {
                let q = (o - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER);
                if let Some(evt) = usize::try_from(q)
                    .ok()
                    .and_then(|q| self.notify_evts.get(q))
                {
                    let _ = evt.write(1);
                }
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.write_msix_table(o - MSIX_TABLE_OFFSET, data)
            }
            _ => {}
        }
    }
}

impl Drop for VirtioPci {
    fn drop(&mut self) {
        self.device.reset();
    }
}

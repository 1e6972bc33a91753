//! A fake virtio driver for unit tests: it sets a device up through the
//! PCI transport the way Linux does and posts descriptor chains — good or
//! deliberately broken — straight into guest memory.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::pci::{VirtioPci, COMMON_OFFSET, DEVICE_OFFSET, NOTIFY_OFFSET};
use super::{status, VirtioDevice, VmHooks};
use crate::pci::PciFunction;

pub const MEM_SIZE: usize = 4 << 20;
pub const QSIZE: u16 = 16;
/// Queue q's rings live at 0x10000 * (q + 1).
pub fn ring_base(q: u16) -> u64 {
    0x10000 * (u64::from(q) + 1)
}
/// Where tests put buffers.
pub const DATA: u64 = 0x100000;

pub const F_WRITE: u16 = 2;
pub const F_NEXT: u16 = 1;
pub const F_INDIRECT: u16 = 4;

#[derive(Default)]
pub struct Hooks {
    pub routes: Mutex<Vec<(u32, u64, u32)>>,
}

impl VmHooks for Hooks {
    fn register_irqfd(&self, _evt: &EventFd, _gsi: u32) -> std::io::Result<()> {
        Ok(())
    }
    fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> std::io::Result<()> {
        self.routes.lock().unwrap().push((gsi, address, data));
        Ok(())
    }
    fn register_ioevent(&self, _evt: &EventFd, _addr: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn unregister_ioevent(&self, _evt: &EventFd, _addr: u64) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct Driver {
    pub pci: VirtioPci,
    pub mem: GuestMemoryMmap,
    avail_idx: Vec<u16>,
    used_seen: Vec<u16>,
}

impl Driver {
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let pci = VirtioPci::new(
            device,
            mem.clone(),
            Arc::new(Hooks::default()),
            24,
            0xc000_0000,
        )
        .unwrap();
        Driver {
            pci,
            mem,
            avail_idx: vec![0; 8],
            used_seen: vec![0; 8],
        }
    }

    pub fn write(&mut self, off: u64, v: &[u8]) {
        self.pci.write_bar(0, COMMON_OFFSET + off, v);
    }

    pub fn read(&mut self, off: u64, len: usize) -> u64 {
        let mut b = vec![0u8; len];
        self.pci.read_bar(0, COMMON_OFFSET + off, &mut b);
        b.resize(8, 0);
        u64::from_le_bytes(b.try_into().unwrap())
    }

    pub fn status(&mut self) -> u8 {
        self.read(0x14, 1) as u8
    }

    pub fn device_features(&mut self) -> u64 {
        self.write(0x00, &0u32.to_le_bytes());
        let lo = self.read(0x04, 4);
        self.write(0x00, &1u32.to_le_bytes());
        lo | (self.read(0x04, 4) << 32)
    }

    pub fn config(&mut self, off: u64, len: usize) -> u64 {
        let mut b = vec![0u8; len];
        self.pci.read_bar(0, DEVICE_OFFSET + off, &mut b);
        b.resize(8, 0);
        u64::from_le_bytes(b.try_into().unwrap())
    }

    /// Linux's sequence: reset, ACK, DRIVER, features, FEATURES_OK, queues,
    /// DRIVER_OK. Returns the status read back at the end.
    pub fn init(&mut self, features: u64, queues: u16) -> u8 {
        self.write(0x14, &[0]);
        self.write(0x14, &[status::ACKNOWLEDGE]);
        self.write(0x14, &[status::ACKNOWLEDGE | status::DRIVER]);
        for (sel, half) in [(0u32, features as u32), (1, (features >> 32) as u32)] {
            self.write(0x08, &sel.to_le_bytes());
            self.write(0x0c, &half.to_le_bytes());
        }
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write(0x14, &[s]);
        if self.status() & status::FEATURES_OK == 0 {
            return self.status();
        }
        for q in 0..queues {
            let base = ring_base(q);
            // Fresh rings, as a driver allocates them after a reset.
            self.mem
                .write_slice(&[0u8; 0x3000], GuestAddress(base))
                .unwrap();
            self.avail_idx[usize::from(q)] = 0;
            self.used_seen[usize::from(q)] = 0;
            self.write(0x16, &q.to_le_bytes());
            self.write(0x18, &QSIZE.to_le_bytes());
            self.write(0x1a, &q.to_le_bytes());
            self.write(0x20, &(base as u32).to_le_bytes());
            self.write(0x24, &0u32.to_le_bytes());
            self.write(0x28, &((base + 0x1000) as u32).to_le_bytes());
            self.write(0x2c, &0u32.to_le_bytes());
            self.write(0x30, &(base + 0x2000).to_le_bytes());
            self.write(0x1c, &1u16.to_le_bytes());
        }
        self.write(0x14, &[s | status::DRIVER_OK]);
        self.status()
    }

    /// Writes descriptor `i` of queue `q`.
    pub fn desc(&self, q: u16, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(ring_base(q) + u64::from(i) * 16);
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        self.mem.write_obj(next, at.unchecked_add(14)).unwrap();
    }

    /// Makes chain `head` available on queue `q` and notifies.
    pub fn post(&mut self, q: u16, head: u16) {
        let qi = usize::from(q);
        let avail = ring_base(q) + 0x1000;
        let idx = self.avail_idx[qi];
        let slot = GuestAddress(avail + 4 + u64::from(idx % QSIZE) * 2);
        self.mem.write_obj(head, slot).unwrap();
        self.avail_idx[qi] = idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx[qi], GuestAddress(avail + 2))
            .unwrap();
        self.pci
            .write_bar(0, NOTIFY_OFFSET + u64::from(q) * 4, &q.to_le_bytes());
    }

    /// Waits for the next used element of queue `q`: (head, len).
    pub fn used(&mut self, q: u16) -> Option<(u32, u32)> {
        self.used_within(q, 5000)
    }

    /// Like [`Driver::used`], waiting at most `ms` milliseconds.
    pub fn used_within(&mut self, q: u16, ms: u64) -> Option<(u32, u32)> {
        let qi = usize::from(q);
        let used = ring_base(q) + 0x2000;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(ms) {
            let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap();
            if idx != self.used_seen[qi] {
                let seen = self.used_seen[qi];
                let elem = GuestAddress(used + 4 + u64::from(seen % QSIZE) * 8);
                self.used_seen[qi] = seen.wrapping_add(1);
                return Some((
                    self.mem.read_obj(elem).unwrap(),
                    self.mem.read_obj(elem.unchecked_add(4)).unwrap(),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    }

    /// Waits until the device reports DEVICE_NEEDS_RESET.
    pub fn wait_needs_reset(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if self.status() & status::NEEDS_RESET != 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }
}

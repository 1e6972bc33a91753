//! An address bus: port I/O (addresses 0..=0xffff) or MMIO (guest-physical
//! addresses). Each maps address ranges to devices.

use std::sync::{Arc, Mutex};

/// A device on a bus. `offset` is from the base of the range the device was
/// inserted at; `data` is the access (any length the guest used).
pub trait BusDevice: Send {
    /// Guest read at `offset`; fill `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors building the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("range {base:#x}+{len:#x} overlaps a registered device")]
    Overlap { base: u64, len: u64 },
    #[error("range {base:#x}+{len:#x} is empty or wraps")]
    BadRange { base: u64, len: u64 },
}

struct Entry {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// Address ranges mapped to devices. Built once, then shared read-only by the vCPUs.
#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>,
}

/// The port-I/O bus.
pub type PioBus = Bus;
/// The MMIO bus.
pub type MmioBus = Bus;

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `len` addresses from `base` to `device`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), Error> {
        let end = match base.checked_add(len) {
            Some(end) if len > 0 => end,
            _ => return Err(Error::BadRange { base, len }),
        };
        let overlaps = self
            .entries
            .iter()
            .any(|e| base < e.base + e.len && e.base < end);
        if overlaps {
            return Err(Error::Overlap { base, len });
        }
        let at = self.entries.partition_point(|e| e.base < base);
        self.entries.insert(at, Entry { base, len, device });
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(&Entry, u64)> {
        let idx = self.entries.partition_point(|e| e.base <= addr);
        let e = self.entries.get(idx.checked_sub(1)?)?;
        let offset = addr - e.base;
        (offset < e.len).then_some((e, offset))
    }

    /// Dispatches a guest read; unmapped addresses read as all ones. Returns
    /// whether a device handled it.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((e, offset)) => {
                lock(&e.device).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a guest write; writes to unmapped addresses are dropped.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((e, offset)) => {
                lock(&e.device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, surviving a poisoned lock (a device that panicked
/// once keeps serving; the panic was already reported).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_offset() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = PioBus::new();
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b[0], 2);
        assert!(bus.write(0x3ff, &[9]));
        assert!(!bus.write(0x400, &[9]));
        assert!(!bus.read(0x3f7, &mut b));
        assert_eq!(b[0], 0xff);
        assert_eq!(lock(&dev).writes, vec![(7, vec![9])]);
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let mut bus = PioBus::new();
        let d = || Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x60, 5, d()).unwrap();
        assert!(matches!(
            bus.insert(0x64, 1, d()),
            Err(Error::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(0x5c, 5, d()),
            Err(Error::Overlap { .. })
        ));
        bus.insert(0x5c, 4, d()).unwrap();
        assert!(matches!(
            bus.insert(u64::MAX, 2, d()),
            Err(Error::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert(0x10, 0, d()),
            Err(Error::BadRange { .. })
        ));
        bus.insert(u64::MAX - 1, 1, d()).unwrap();
        let mut b = [0u8; 4];
        assert!(bus.read(u64::MAX - 1, &mut b));
        assert!(!bus.read(u64::MAX, &mut b));
    }
}

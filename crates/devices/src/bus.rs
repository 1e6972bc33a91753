//! The port-I/O bus.

use std::sync::{Arc, Mutex};

/// A device reached through `in`/`out` instructions.
pub trait PioDevice: Send {
    /// Guest `in` at `offset` from the device's base; fill `data`.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// Guest `out` at `offset` from the device's base.
    fn write(&mut self, offset: u16, data: &[u8]);
}

/// Errors building the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("port range {base:#x}+{len} overlaps a registered device")]
    Overlap { base: u16, len: u16 },
    #[error("port range {base:#x}+{len} is empty or wraps")]
    BadRange { base: u16, len: u16 },
}

struct Entry {
    base: u16,
    len: u16,
    device: Arc<Mutex<dyn PioDevice>>,
}

/// Port ranges mapped to devices. Built once, then shared read-only by the vCPUs.
#[derive(Default)]
pub struct PioBus {
    entries: Vec<Entry>,
}

impl PioBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `len` ports from `base` to `device`.
    pub fn insert(
        &mut self,
        base: u16,
        len: u16,
        device: Arc<Mutex<dyn PioDevice>>,
    ) -> Result<(), Error> {
        let end = u32::from(base) + u32::from(len);
        if len == 0 || end > 0x1_0000 {
            return Err(Error::BadRange { base, len });
        }
        let overlaps = self.entries.iter().any(|e| {
            let e_end = u32::from(e.base) + u32::from(e.len);
            u32::from(base) < e_end && u32::from(e.base) < end
        });
        if overlaps {
            return Err(Error::Overlap { base, len });
        }
        let at = self.entries.partition_point(|e| e.base < base);
        self.entries.insert(at, Entry { base, len, device });
        Ok(())
    }

    fn find(&self, port: u16) -> Option<(&Entry, u16)> {
        let idx = self.entries.partition_point(|e| e.base <= port);
        let e = self.entries.get(idx.checked_sub(1)?)?;
        let offset = port - e.base;
        (offset < e.len).then_some((e, offset))
    }

    /// Dispatches a guest `in`; unmapped ports read as all ones. Returns
    /// whether a device handled it.
    pub fn read(&self, port: u16, data: &mut [u8]) -> bool {
        match self.find(port) {
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

    /// Dispatches a guest `out`; writes to unmapped ports are dropped.
    pub fn write(&self, port: u16, data: &[u8]) -> bool {
        match self.find(port) {
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
        writes: Vec<(u16, Vec<u8>)>,
    }

    impl PioDevice for Recorder {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u16, data: &[u8]) {
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
            bus.insert(0xffff, 2, d()),
            Err(Error::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert(0x10, 0, d()),
            Err(Error::BadRange { .. })
        ));
        bus.insert(0xffff, 1, d()).unwrap();
        let mut b = [0u8; 4];
        assert!(bus.read(0xffff, &mut b));
    }
}

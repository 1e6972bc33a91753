//! The root bus and its configuration-access mechanisms.

use std::sync::{Arc, Mutex};

use super::config::{PciConfig, PciHeader};
use crate::bus::{lock, BusDevice};

/// Slots (device numbers) on bus 0.
const SLOTS: usize = 32;
/// ECAM bytes per bus: 32 devices × 8 functions × 4 KiB.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;

/// A PCI function: its configuration space and what its memory BARs hold.
pub trait PciFunction: Send {
    fn config(&self) -> &PciConfig;
    fn config_mut(&mut self) -> &mut PciConfig;
    /// Guest read at `offset` inside memory BAR `bar`.
    fn read_bar(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    /// Guest write at `offset` inside memory BAR `bar`.
    fn write_bar(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
    /// Guest write to configuration register `reg` at byte `offset`;
    /// functions that act on config writes (MSI-X enable, BAR moves)
    /// override it.
    fn write_config(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.config_mut().write(reg, offset, data);
    }
}

const COMMAND_MEMORY: u16 = 0x2;

/// The host bridge at 00:00.0.
pub struct HostBridge {
    config: PciConfig,
}

impl HostBridge {
    pub fn new() -> Self {
        HostBridge {
            config: PciConfig::new(&PciHeader {
                vendor_id: 0x8086,
                device_id: 0x0d57,
                class: 0x06,    // bridge
                subclass: 0x00, // host bridge
                prog_if: 0,
                revision: 0,
                subsystem_vendor_id: 0,
                subsystem_id: 0,
            }),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciFunction for HostBridge {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }
}

/// Bus 0: up to 32 functions, by device number.
pub struct PciRoot {
    slots: Vec<Option<Arc<Mutex<dyn PciFunction>>>>,
}

impl PciRoot {
    /// A bus with the host bridge in slot 0.
    pub fn new() -> Self {
        let mut slots: Vec<Option<Arc<Mutex<dyn PciFunction>>>> = vec![None; SLOTS];
        slots[0] = Some(Arc::new(Mutex::new(HostBridge::new())));
        PciRoot { slots }
    }

    /// Puts `f` in the first free slot; returns its device number.
    pub fn add(&mut self, f: Arc<Mutex<dyn PciFunction>>) -> Option<u8> {
        let slot = self.slots.iter().position(Option::is_none)?;
        self.slots[slot] = Some(f);
        u8::try_from(slot).ok()
    }

    fn function(&self, bus: u64, dev: u64, func: u64) -> Option<&Arc<Mutex<dyn PciFunction>>> {
        if bus != 0 || func != 0 {
            return None;
        }
        self.slots.get(usize::try_from(dev).ok()?)?.as_ref()
    }

    /// Reads `data.len()` bytes at byte `offset` of register `reg`.
    fn read(&self, bus: u64, dev: u64, func: u64, reg: usize, offset: usize, data: &mut [u8]) {
        let value = match self.function(bus, dev, func) {
            Some(f) => lock(f).config().read(reg),
            None => 0xffff_ffff,
        };
        let bytes = value.to_le_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            *d = offset
                .checked_add(i)
                .and_then(|at| bytes.get(at))
                .copied()
                .unwrap_or(0xff);
        }
    }

    fn write(&self, bus: u64, dev: u64, func: u64, reg: usize, offset: usize, data: &[u8]) {
        if let Some(f) = self.function(bus, dev, func) {
            lock(f).write_config(reg, offset, data);
        }
    }

    /// Dispatches a guest access at `addr` to the memory BAR that decodes
    /// it now (memory decoding on, BAR containing the whole access).
    /// Returns false when no BAR does.
    fn bar_access(
        &self,
        addr: u64,
        len: usize,
        mut f: impl FnMut(&mut dyn PciFunction, usize, u64),
    ) -> bool {
        for func in self.slots.iter().flatten() {
            let mut func = lock(func);
            if func.config().command() & COMMAND_MEMORY == 0 {
                continue;
            }
            for bar in 0..super::NUM_BARS {
                let size = func.config().bar_size(bar);
                let Some(base) = func.config().bar_address(bar) else {
                    continue;
                };
                if size == 0 || func.config().bar_is_io(bar) {
                    continue;
                }
                let end = addr.checked_add(len as u64);
                if addr >= base && end.is_some_and(|e| e <= base.saturating_add(size)) {
                    f(&mut *func, bar, addr - base);
                    return true;
                }
            }
        }
        false
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

/// Configuration mechanism #1: the address register at 0xCF8 and the data
/// window at 0xCFC–0xCFF. Insert it at port 0xCF8 with length 8.
pub struct PciConfigIo {
    root: Arc<PciRoot>,
    address: u32,
    /// Where a reset through the reset control register (0xCF9) goes.
    reset: Option<Arc<crate::PowerSignal>>,
}

/// Reset control register (0xCF9) bit: reset the CPU.
const RCR_RESET_CPU: u8 = 1 << 2;

impl PciConfigIo {
    pub fn new(root: Arc<PciRoot>) -> Self {
        PciConfigIo {
            root,
            address: 0,
            reset: None,
        }
    }

    /// Also serves the reset control register at 0xCF9 (a byte write with
    /// bit 2 set resets the VM, as SeaBIOS and Linux's `reboot=pci` do).
    pub fn with_reset(mut self, power: Arc<crate::PowerSignal>) -> Self {
        self.reset = Some(power);
        self
    }

    /// (bus, device, function, register) of the current address, if enabled.
    fn target(&self) -> Option<(u64, u64, u64, usize)> {
        let a = self.address;
        if a & 0x8000_0000 == 0 {
            return None;
        }
        Some((
            u64::from((a >> 16) & 0xff),
            u64::from((a >> 11) & 0x1f),
            u64::from((a >> 8) & 0x7),
            ((a >> 2) & 0x3f) as usize,
        ))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0..=3 => {
                let bytes = self.address.to_le_bytes();
                for (i, d) in data.iter_mut().enumerate() {
                    *d = bytes.get(offset as usize + i).copied().unwrap_or(0xff);
                }
            }
            4..=7 => match self.target() {
                Some((b, d, f, r)) => self.root.read(b, d, f, r, (offset - 4) as usize, data),
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            // Only whole-dword writes set the address; a byte write to
            // 0xCF9 is the reset control register.
            0 if data.len() == 4 => {
                let mut b = [0u8; 4];
                b.copy_from_slice(data);
                self.address = u32::from_le_bytes(b);
            }
            1 if data.len() == 1 => {
                if let (Some(p), true) = (&self.reset, data[0] & RCR_RESET_CPU != 0) {
                    p.request(crate::PowerRequest::Reset);
                }
            }
            4..=7 => {
                if let Some((b, d, f, r)) = self.target() {
                    self.root.write(b, d, f, r, (offset - 4) as usize, data);
                }
            }
            _ => {}
        }
    }
}

/// The memory window PCI BARs live in: routes each access to the BAR that
/// decodes it, wherever the guest has placed it. Insert it over the window.
pub struct PciMmioWindow {
    root: Arc<PciRoot>,
    base: u64,
}

impl PciMmioWindow {
    /// A window starting at guest-physical `base`.
    pub fn new(root: Arc<PciRoot>, base: u64) -> Self {
        PciMmioWindow { root, base }
    }
}

impl BusDevice for PciMmioWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let addr = self.base.saturating_add(offset);
        let len = data.len();
        let mut hit = false;
        self.root.bar_access(addr, len, |f, bar, off| {
            hit = true;
            f.read_bar(bar, off, data);
        });
        if !hit {
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let addr = self.base.saturating_add(offset);
        self.root
            .bar_access(addr, data.len(), |f, bar, off| f.write_bar(bar, off, data));
    }
}

/// ECAM (PCI Express enhanced configuration access): one 4 KiB page per
/// function, bus 0 only. Insert it at the MCFG base with [`ECAM_BUS_SIZE`].
pub struct PciConfigMmio {
    root: Arc<PciRoot>,
}

impl PciConfigMmio {
    pub fn new(root: Arc<PciRoot>) -> Self {
        PciConfigMmio { root }
    }

    fn decode(offset: u64) -> (u64, u64, u64, usize, usize) {
        (
            offset >> 20,
            (offset >> 15) & 0x1f,
            (offset >> 12) & 0x7,
            ((offset & 0xfff) >> 2) as usize,
            (offset & 0x3) as usize,
        )
    }
}

impl BusDevice for PciConfigMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let (b, d, f, r, o) = Self::decode(offset);
        self.root.read(b, d, f, r, o, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (b, d, f, r, o) = Self::decode(offset);
        self.root.write(b, d, f, r, o, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cf8(bus: u32, dev: u32, func: u32, reg: u32) -> [u8; 4] {
        (0x8000_0000 | (bus << 16) | (dev << 11) | (func << 8) | (reg << 2)).to_le_bytes()
    }

    #[test]
    fn reset_control_register_resets() {
        let p = Arc::new(crate::PowerSignal::new().unwrap());
        let mut io = PciConfigIo::new(Arc::new(PciRoot::new())).with_reset(p.clone());
        io.write(1, &[0x02]);
        assert_eq!(p.take(), None, "bit 2 clear");
        io.write(1, &[0x02, 0x04]);
        assert_eq!(p.take(), None, "not a byte write");
        io.write(1, &[0x06]);
        assert_eq!(p.take(), Some(crate::PowerRequest::Reset));
    }

    #[test]
    fn host_bridge_through_cf8() {
        let mut io = PciConfigIo::new(Arc::new(PciRoot::new()));
        io.write(0, &cf8(0, 0, 0, 0));
        let mut v = [0u8; 4];
        io.read(4, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x0d57_8086);
        let mut class = [0u8; 2];
        io.write(0, &cf8(0, 0, 0, 2));
        io.read(6, &mut class);
        assert_eq!(u16::from_le_bytes(class), 0x0600);
        // The address register reads back.
        io.read(0, &mut v);
        assert_eq!(v, cf8(0, 0, 0, 2));
    }

    #[test]
    fn empty_slots_functions_and_buses_read_all_ones() {
        let mut io = PciConfigIo::new(Arc::new(PciRoot::new()));
        let mut v = [0u8; 4];
        for (b, d, f) in [(0, 1, 0), (0, 0, 1), (1, 0, 0), (0, 31, 7)] {
            io.write(0, &cf8(b, d, f, 0));
            io.read(4, &mut v);
            assert_eq!(v, [0xff; 4], "{b}:{d}.{f}");
        }
        // Disabled address: all ones, writes ignored.
        io.write(0, &[0, 0, 0, 0]);
        io.read(4, &mut v);
        assert_eq!(v, [0xff; 4]);
    }

    #[test]
    fn ecam_reaches_the_same_space() {
        let root = Arc::new(PciRoot::new());
        let mut ecam = PciConfigMmio::new(root.clone());
        let mut v = [0u8; 4];
        ecam.read(0, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x0d57_8086);
        ecam.write(4, &[0x06, 0]); // command: memory + bus master
        let mut io = PciConfigIo::new(root);
        io.write(0, &cf8(0, 0, 0, 1));
        let mut c = [0u8; 2];
        io.read(4, &mut c);
        assert_eq!(u16::from_le_bytes(c), 0x0006);
        // Another slot, function or bus through ECAM: all ones.
        for off in [1 << 15, 1 << 12, 1 << 20, 0xfff_fffc] {
            ecam.read(off, &mut v);
            assert_eq!(v, [0xff; 4], "{off:#x}");
        }
        // Extended space of the bridge: all ones (a conventional function).
        ecam.read(0x100, &mut v);
        assert_eq!(v, [0xff; 4]);
    }

    struct Scratch {
        config: PciConfig,
        mem: Vec<u8>,
    }

    impl PciFunction for Scratch {
        fn config(&self) -> &PciConfig {
            &self.config
        }
        fn config_mut(&mut self) -> &mut PciConfig {
            &mut self.config
        }
        fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
            assert_eq!(bar, 2);
            let o = offset as usize;
            data.copy_from_slice(&self.mem[o..o + data.len()]);
        }
        fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
            assert_eq!(bar, 2);
            let o = offset as usize;
            self.mem[o..o + data.len()].copy_from_slice(data);
        }
    }

    #[test]
    fn bar_accesses_follow_the_bar_and_the_memory_enable_bit() {
        let mut config = PciConfig::new(&PciHeader {
            vendor_id: 1,
            device_id: 2,
            class: 0xff,
            subclass: 0,
            prog_if: 0,
            revision: 0,
            subsystem_vendor_id: 0,
            subsystem_id: 0,
        });
        config
            .add_bar(2, 0x1000, super::super::BarKind::Mem32)
            .unwrap();
        let f = Arc::new(Mutex::new(Scratch {
            config,
            mem: vec![0; 0x1000],
        }));
        let mut root = PciRoot::new();
        assert_eq!(root.add(f.clone()), Some(1));
        let root = Arc::new(root);
        let mut window = PciMmioWindow::new(root.clone(), 0xc000_0000);
        let mut io = PciConfigIo::new(root);
        // Firmware-style: place BAR 2 at 0xc000_2000, enable memory decoding.
        io.write(0, &cf8(0, 1, 0, 6));
        io.write(4, &0xc000_2000u32.to_le_bytes());
        let mut v = [0u8; 4];
        window.write(0x2010, &[1, 2, 3, 4]);
        window.read(0x2010, &mut v);
        assert_eq!(v, [0xff; 4], "memory decoding is off");
        io.write(0, &cf8(0, 1, 0, 1));
        io.write(4, &[0x2, 0]);
        window.write(0x2010, &[1, 2, 3, 4]);
        window.read(0x2010, &mut v);
        assert_eq!(v, [1, 2, 3, 4]);
        // Straddling the end of the BAR, or outside it: not the BAR's.
        window.read(0x2ffe, &mut v);
        assert_eq!(v, [0xff; 4]);
        window.read(0x3000, &mut v);
        assert_eq!(v, [0xff; 4]);
        // The guest moves the BAR: accesses follow it.
        io.write(0, &cf8(0, 1, 0, 6));
        io.write(4, &0xc010_0000u32.to_le_bytes());
        window.read(0x10_0010, &mut v);
        assert_eq!(v, [1, 2, 3, 4]);
        assert_eq!(lock(&f).mem[0x10], 1);
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let root = Arc::new(PciRoot::new());
        let mut io = PciConfigIo::new(root.clone());
        let mut ecam = PciConfigMmio::new(root);
        io.write(0, &cf8(0, 0, 0, 0));
        for off in [0u64, 1, 3, 4, 5, 7, 8, u64::MAX] {
            for len in [0usize, 1, 2, 3, 4, 8] {
                let mut buf = vec![0u8; len];
                io.read(off, &mut buf);
                io.write(off, &buf);
                ecam.read(off, &mut buf);
                ecam.write(off, &buf);
            }
        }
    }
}

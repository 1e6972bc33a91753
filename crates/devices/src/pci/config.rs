//! A type-0 PCI configuration space: 256 bytes of registers, write masks,
//! BAR sizing and a capability list.
//!
//! All accessors take guest-controlled register numbers, offsets and lengths
//! and never panic on any of them: out-of-range reads return all ones, and
//! out-of-range or oddly sized writes are ignored.

/// Dwords in the standard configuration space.
pub const NUM_REGS: usize = 64;
/// BARs of a type-0 header.
pub const NUM_BARS: usize = 6;

const REG_ID: usize = 0;
const REG_COMMAND: usize = 1;
const REG_CLASS: usize = 2;
const REG_HEADER: usize = 3;
const REG_BAR0: usize = 4;
const REG_SUBSYSTEM: usize = 11;
const REG_CAP_PTR: usize = 13;
const REG_INTERRUPT: usize = 15;

const STATUS_CAP_LIST: u32 = 1 << 4;
/// Command register bits a guest may set: I/O space, memory space, bus
/// master, INTx disable.
const COMMAND_WRITABLE: u32 = 0x1 | 0x2 | 0x4 | 0x400;
const FIRST_CAP: usize = 0x40;

/// Identity of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciHeader {
    pub vendor_id: u16,
    pub device_id: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
    pub subsystem_vendor_id: u16,
    pub subsystem_id: u16,
}

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32,
    /// Takes this BAR and the next.
    Mem64,
}

/// Errors setting up a configuration space (programming errors of the VMM,
/// not guest input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("BAR {0} does not exist or is taken")]
    BarSlot(usize),
    #[error("BAR size {0:#x} is not a power of two of at least 16 (4 for I/O)")]
    BarSize(u64),
    #[error("capability of {0} bytes does not fit in configuration space")]
    CapabilitySpace(usize),
}

#[derive(Debug, Clone, Copy, Default)]
struct Bar {
    size: u64,
    kind: Option<BarKind>,
}

/// One function's configuration space.
#[derive(Debug, Clone)]
pub struct PciConfig {
    regs: [u32; NUM_REGS],
    writable: [u32; NUM_REGS],
    /// Bits that read back as written but are write-1-to-clear in status.
    bars: [Bar; NUM_BARS],
    next_cap: usize,
    last_cap_ptr: usize,
}

impl PciConfig {
    pub fn new(h: &PciHeader) -> Self {
        let mut regs = [0u32; NUM_REGS];
        regs[REG_ID] = u32::from(h.vendor_id) | (u32::from(h.device_id) << 16);
        regs[REG_CLASS] = u32::from(h.revision)
            | (u32::from(h.prog_if) << 8)
            | (u32::from(h.subclass) << 16)
            | (u32::from(h.class) << 24);
        regs[REG_SUBSYSTEM] = u32::from(h.subsystem_vendor_id) | (u32::from(h.subsystem_id) << 16);
        let mut writable = [0u32; NUM_REGS];
        writable[REG_COMMAND] = COMMAND_WRITABLE;
        // Cache line size and latency timer are plain read/write.
        writable[REG_HEADER] = 0x0000_ffff;
        // Interrupt line is read/write; the pin is read-only.
        writable[REG_INTERRUPT] = 0x0000_00ff;
        PciConfig {
            regs,
            writable,
            bars: [Bar::default(); NUM_BARS],
            next_cap: FIRST_CAP,
            last_cap_ptr: REG_CAP_PTR * 4,
        }
    }

    /// Declares BAR `idx` of `size` bytes.
    pub fn add_bar(&mut self, idx: usize, size: u64, kind: BarKind) -> Result<(), Error> {
        let slots = if kind == BarKind::Mem64 { 2 } else { 1 };
        if idx + slots > NUM_BARS || (idx..idx + slots).any(|i| self.bars[i].kind.is_some()) {
            return Err(Error::BarSlot(idx));
        }
        let min = if kind == BarKind::Io { 4 } else { 16 };
        let max = match kind {
            BarKind::Io => 1 << 16,
            BarKind::Mem32 => 1 << 31,
            BarKind::Mem64 => 1 << 62,
        };
        if !size.is_power_of_two() || size < min || size > max {
            return Err(Error::BarSize(size));
        }
        let mask = !(size - 1);
        let (type_bits, low_mask) = match kind {
            BarKind::Io => (0x1, 0xffff_fffc),
            BarKind::Mem32 => (0x0, 0xffff_fff0),
            BarKind::Mem64 => (0x4, 0xffff_fff0),
        };
        self.regs[REG_BAR0 + idx] = type_bits;
        self.writable[REG_BAR0 + idx] = (mask as u32) & low_mask;
        if kind == BarKind::Mem64 {
            self.writable[REG_BAR0 + idx + 1] = (mask >> 32) as u32;
            self.bars[idx + 1].kind = Some(BarKind::Mem64);
        }
        self.bars[idx] = Bar {
            size,
            kind: Some(kind),
        };
        Ok(())
    }

    /// Places a BAR at `addr` (as firmware would); returns false if `addr`
    /// is not aligned to the BAR's size.
    pub fn set_bar_address(&mut self, idx: usize, addr: u64) -> bool {
        let Some(bar) = self.bars.get(idx).copied() else {
            return false;
        };
        if bar.kind.is_none() || bar.size == 0 || !addr.is_multiple_of(bar.size) {
            return false;
        }
        let r = REG_BAR0 + idx;
        self.regs[r] = (self.regs[r] & 0xf) | (addr as u32 & self.writable[r]);
        if bar.kind == Some(BarKind::Mem64) {
            self.regs[r + 1] = (addr >> 32) as u32;
        }
        true
    }

    /// The address BAR `idx` decodes now, if it is a BAR.
    pub fn bar_address(&self, idx: usize) -> Option<u64> {
        let bar = self.bars.get(idx)?;
        let low_mask = match bar.kind? {
            BarKind::Io => 0xffff_fffc,
            _ if bar.size == 0 => return None, // upper half of a 64-bit BAR
            _ => 0xffff_fff0,
        };
        let r = REG_BAR0 + idx;
        let low = u64::from(self.regs[r] & low_mask);
        let high = match bar.kind? {
            BarKind::Mem64 => u64::from(self.regs[r + 1]) << 32,
            _ => 0,
        };
        Some(high | low)
    }

    /// Whether BAR `idx` decodes I/O space.
    pub fn bar_is_io(&self, idx: usize) -> bool {
        self.bars
            .get(idx)
            .is_some_and(|b| b.kind == Some(BarKind::Io))
    }

    /// The size of BAR `idx` (0 when it is not a BAR).
    pub fn bar_size(&self, idx: usize) -> u64 {
        self.bars.get(idx).map_or(0, |b| b.size)
    }

    /// Sets the interrupt pin (1 = INTA#) and line.
    pub fn set_interrupt(&mut self, pin: u8, line: u8) {
        self.regs[REG_INTERRUPT] =
            (self.regs[REG_INTERRUPT] & !0xffff) | u32::from(line) | (u32::from(pin) << 8);
    }

    /// Appends a capability: `body` starts with the capability ID; the
    /// next-pointer byte is filled in here. Returns its offset.
    /// `writable` gives per-byte write masks for the body (same length or shorter).
    pub fn add_capability(&mut self, body: &[u8], writable: &[u8]) -> Result<usize, Error> {
        let len = body.len().max(2);
        let offset = self.next_cap;
        let end = offset + len;
        if end > NUM_REGS * 4 || body.is_empty() {
            return Err(Error::CapabilitySpace(body.len()));
        }
        for (i, b) in body.iter().enumerate() {
            self.set_byte(offset + i, if i == 1 { 0 } else { *b });
        }
        for (i, m) in writable.iter().enumerate().take(len) {
            if i > 1 {
                self.set_mask_byte(offset + i, *m);
            }
        }
        self.set_byte(self.last_cap_ptr, offset as u8);
        self.last_cap_ptr = offset + 1;
        self.next_cap = (end + 3) & !3;
        self.regs[REG_COMMAND] |= STATUS_CAP_LIST << 16;
        Ok(offset)
    }

    fn set_byte(&mut self, at: usize, v: u8) {
        let (r, shift) = (at / 4, (at % 4) * 8);
        self.regs[r] = (self.regs[r] & !(0xff << shift)) | (u32::from(v) << shift);
    }

    fn set_mask_byte(&mut self, at: usize, v: u8) {
        let (r, shift) = (at / 4, (at % 4) * 8);
        self.writable[r] = (self.writable[r] & !(0xff << shift)) | (u32::from(v) << shift);
    }

    /// Reads register `reg` (a dword index); all ones beyond the space.
    pub fn read(&self, reg: usize) -> u32 {
        self.regs.get(reg).copied().unwrap_or(0xffff_ffff)
    }

    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` within register `reg`.
    pub fn write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        if !matches!(data.len(), 1 | 2 | 4)
            || offset.checked_add(data.len()).is_none_or(|end| end > 4)
            || reg >= NUM_REGS
        {
            return;
        }
        let shift = offset * 8;
        let mut value = 0u32;
        for (i, b) in data.iter().enumerate() {
            value |= u32::from(*b) << (i * 8);
        }
        let lane = if data.len() == 4 {
            u32::MAX
        } else {
            ((1u32 << (data.len() * 8)) - 1) << shift
        };
        let mask = self.writable[reg] & lane;
        self.regs[reg] = (self.regs[reg] & !mask) | ((value << shift) & mask);
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.regs[REG_COMMAND] as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> PciHeader {
        PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1042,
            class: 0x01,
            subclass: 0x00,
            prog_if: 0,
            revision: 1,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 2,
        }
    }

    #[test]
    fn ids_and_class_read_back_and_are_read_only() {
        let mut c = PciConfig::new(&header());
        assert_eq!(c.read(0), 0x1042_1af4);
        assert_eq!(c.read(2), 0x0100_0001);
        c.write(0, 0, &[0xff, 0xff, 0xff, 0xff]);
        c.write(2, 0, &[0, 0, 0, 0]);
        assert_eq!(c.read(0), 0x1042_1af4);
        assert_eq!(c.read(2), 0x0100_0001);
    }

    #[test]
    fn bar_sizing_protocol() {
        let mut c = PciConfig::new(&header());
        c.add_bar(0, 0x4000, BarKind::Mem64).unwrap();
        c.add_bar(2, 0x100, BarKind::Io).unwrap();
        // Firmware writes all ones and reads back the size mask.
        for r in 4..7 {
            c.write(r, 0, &[0xff; 4]);
        }
        assert_eq!(c.read(4), 0xffff_c004);
        assert_eq!(c.read(5), 0xffff_ffff);
        assert_eq!(c.read(6), 0xffff_ff01);
        // Then programs addresses.
        c.write(4, 0, &0xe000_0000u32.to_le_bytes());
        c.write(5, 0, &0x1u32.to_le_bytes());
        c.write(6, 0, &0xc000u32.to_le_bytes());
        assert_eq!(c.bar_address(0), Some(0x1_e000_0000));
        assert_eq!(c.bar_address(1), None);
        assert_eq!(c.bar_address(2), Some(0xc000));
        assert_eq!(c.bar_address(3), None);
        assert_eq!(c.bar_size(0), 0x4000);
    }

    #[test]
    fn bad_bars_are_refused() {
        let mut c = PciConfig::new(&header());
        assert_eq!(
            c.add_bar(0, 0x3000, BarKind::Mem32),
            Err(Error::BarSize(0x3000))
        );
        assert_eq!(c.add_bar(5, 0x1000, BarKind::Mem64), Err(Error::BarSlot(5)));
        assert_eq!(c.add_bar(6, 0x1000, BarKind::Mem32), Err(Error::BarSlot(6)));
        c.add_bar(0, 0x1000, BarKind::Mem64).unwrap();
        assert_eq!(c.add_bar(1, 0x1000, BarKind::Mem32), Err(Error::BarSlot(1)));
        assert!(!c.set_bar_address(0, 0x1800));
        assert!(c.set_bar_address(0, 0x2_0000_1000));
        assert_eq!(c.bar_address(0), Some(0x2_0000_1000));
    }

    #[test]
    fn capabilities_are_linked_and_masked() {
        let mut c = PciConfig::new(&header());
        let a = c
            .add_capability(&[0x11, 0, 0xaa, 0xbb], &[0, 0, 0xff, 0])
            .unwrap();
        let b = c.add_capability(&[0x09, 0, 1, 2, 3], &[]).unwrap();
        assert_eq!((a, b), (0x40, 0x44));
        assert_ne!(c.read(1) & (STATUS_CAP_LIST << 16), 0);
        assert_eq!(c.read(13) & 0xff, 0x40);
        assert_eq!(c.read(0x40 / 4), 0xbbaa_4411);
        c.write(0x40 / 4, 2, &[0x55, 0x66]);
        assert_eq!(c.read(0x40 / 4), 0xbb55_4411);
        assert!(c.add_capability(&[0x11; 200], &[]).is_err());
    }

    #[test]
    fn command_register_keeps_only_writable_bits() {
        let mut c = PciConfig::new(&header());
        c.write(1, 0, &[0xff, 0xff]);
        assert_eq!(c.command(), COMMAND_WRITABLE as u16);
    }

    #[test]
    fn hostile_accesses_do_not_panic() {
        let mut c = PciConfig::new(&header());
        for reg in [0, 63, 64, usize::MAX] {
            for off in [0, 1, 3, 4, usize::MAX - 1] {
                for len in [0, 1, 2, 3, 4, 8] {
                    c.write(reg, off, &vec![0xff; len]);
                }
            }
            let _ = c.read(reg);
        }
        assert_eq!(c.read(64), 0xffff_ffff);
        assert!(!c.set_bar_address(99, 0));
        assert_eq!(c.bar_address(usize::MAX), None);
    }
}

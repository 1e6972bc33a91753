//! The CMOS RTC and NVRAM (Motorola MC146818, ports 0x70 index / 0x71 data).
//!
//! The clock is the host's wall clock (UTC) plus an offset the guest sets by
//! writing the time registers. Register B chooses BCD or binary and 12- or
//! 24-hour format, as on the chip; A, C and D read as a chip that is never
//! mid-update and has a valid battery. No interrupts (the ACPI tables declare
//! none, so Linux's `rtc_cmos` polls). The NVRAM holds what PC firmware
//! reads (memory sizes, vCPU count, boot order), as QEMU fills it.
//!
//! The index port's bit 7 is the NMI mask: kept, never acted on.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;

const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const WEEKDAY: u8 = 0x06;
const DAY: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const STATUS_A: u8 = 0x0a;
const STATUS_B: u8 = 0x0b;
const STATUS_C: u8 = 0x0c;
const STATUS_D: u8 = 0x0d;
/// The century byte QEMU and SeaBIOS use (ACPI FADT `century` = 0x32).
const CENTURY: u8 = 0x32;

/// Register B: 24-hour mode.
const B_24H: u8 = 1 << 1;
/// Register B: binary (not BCD) values.
const B_BINARY: u8 = 1 << 2;
/// Register B: SET, updates stopped while the guest writes the time (the
/// writes are collected and take effect together when SET is cleared).
const B_SET: u8 = 1 << 7;
/// Register D: valid RAM and time (battery good).
const D_VRT: u8 = 1 << 7;
/// Register A at power-on: 32.768 kHz time base, 1024 Hz rate.
const A_DEFAULT: u8 = 0x26;

/// What the firmware finds in NVRAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmosConfig {
    /// RAM below the 32-bit MMIO hole, in bytes.
    pub low_memory: u64,
    /// RAM above 4 GiB, in bytes.
    pub high_memory: u64,
    /// Number of vCPUs (1..=255).
    pub cpus: u8,
}

/// The RTC/NVRAM chip.
pub struct Cmos {
    index: u8,
    nmi_masked: bool,
    ram: [u8; 128],
    /// Seconds added to the host clock (the guest's setting).
    offset: i64,
    /// While register B's SET bit is on: the time being written, field by
    /// field, applied at once when SET is cleared (Linux writes year, month
    /// and day one after another: applying each alone would carry Jan 31 +
    /// "month 2" over into March).
    shadow: Option<Tm>,
}

/// Seconds since the epoch, now.
fn host_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tm {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 1 = Sunday .. 7 = Saturday, as the chip counts.
    weekday: u32,
}

fn to_tm(t: i64) -> Tm {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    Tm {
        year,
        month,
        day,
        hour: secs / 3600,
        minute: secs / 60 % 60,
        second: secs % 60,
        // 1970-01-01 was a Thursday (5).
        weekday: ((days + 4).rem_euclid(7) + 1) as u32,
    }
}

fn from_tm(tm: &Tm) -> i64 {
    days_from_civil(tm.year, tm.month, tm.day) * 86_400
        + i64::from(tm.hour) * 3600
        + i64::from(tm.minute) * 60
        + i64::from(tm.second)
}

fn to_bcd(v: u32) -> u8 {
    let v = v % 100;
    (((v / 10) << 4) | (v % 10)) as u8
}

fn from_bcd(v: u8) -> u32 {
    u32::from(v >> 4) * 10 + u32::from(v & 0xf)
}

impl Cmos {
    /// A chip whose NVRAM describes `config`, its clock the host's.
    pub fn new(config: CmosConfig) -> Self {
        let mut ram = [0u8; 128];
        ram[STATUS_A as usize] = A_DEFAULT;
        ram[STATUS_B as usize] = B_24H;
        ram[STATUS_D as usize] = D_VRT;
        let mut put16 = |at: usize, v: u64| {
            let v = v.min(0xffff) as u16;
            ram[at..at + 2].copy_from_slice(&v.to_le_bytes());
        };
        // Base memory: 640 KiB.
        put16(0x15, 640);
        // Extended memory above 1 MiB, in KiB (0x17 and its copy at 0x30).
        let ext_kib = config.low_memory.saturating_sub(1 << 20) >> 10;
        put16(0x17, ext_kib);
        put16(0x30, ext_kib);
        // Memory above 16 MiB in 64 KiB units.
        put16(0x34, config.low_memory.saturating_sub(16 << 20) >> 16);
        // Memory above 4 GiB in 64 KiB units: three bytes.
        let high = (config.high_memory >> 16).min(0xff_ffff);
        ram[0x5b..0x5e].copy_from_slice(&high.to_le_bytes()[..3]);
        // vCPUs minus one (SeaBIOS's CMOS_BIOS_SMP_COUNT).
        ram[0x5f] = config.cpus.saturating_sub(1);
        // Boot order: hard disk first (0x3d low nibble 2), skip the
        // floppy signature check (0x38 bit 0).
        ram[0x3d] = 0x02;
        ram[0x38] = 0x01;
        // Equipment byte: a math coprocessor.
        ram[0x14] = 0x02;
        Cmos {
            index: 0,
            nmi_masked: false,
            ram,
            offset: 0,
            shadow: None,
        }
    }

    /// Whether the guest set the NMI mask bit (index port bit 7).
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    fn binary(&self) -> bool {
        self.ram[STATUS_B as usize] & B_BINARY != 0
    }

    fn encode(&self, v: u32) -> u8 {
        if self.binary() {
            v as u8
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> u32 {
        if self.binary() {
            u32::from(v)
        } else {
            from_bcd(v)
        }
    }

    fn now(&self) -> Tm {
        to_tm(host_now().saturating_add(self.offset))
    }

    fn read_reg(&mut self, reg: u8) -> u8 {
        let tm = self.shadow.unwrap_or_else(|| self.now());
        let b = self.ram[STATUS_B as usize];
        match reg {
            SECONDS => self.encode(tm.second),
            MINUTES => self.encode(tm.minute),
            HOURS if b & B_24H != 0 => self.encode(tm.hour),
            HOURS => {
                let h12 = match tm.hour % 12 {
                    0 => 12,
                    h => h,
                };
                self.encode(h12) | if tm.hour >= 12 { 0x80 } else { 0 }
            }
            WEEKDAY => self.encode(tm.weekday),
            DAY => self.encode(tm.day),
            MONTH => self.encode(tm.month),
            YEAR => self.encode(tm.year.rem_euclid(100) as u32),
            CENTURY => self.encode(tm.year.div_euclid(100).clamp(0, 99) as u32),
            STATUS_C => std::mem::take(&mut self.ram[STATUS_C as usize]),
            r => self.ram.get(usize::from(r)).copied().unwrap_or(0xff),
        }
    }

    fn write_reg(&mut self, reg: u8, v: u8) {
        let mut tm = self.shadow.unwrap_or_else(|| self.now());
        let b = self.ram[STATUS_B as usize];
        let field = |s: &Self| s.decode(v & 0x7f);
        match reg {
            SECONDS => tm.second = field(self).min(59),
            MINUTES => tm.minute = field(self).min(59),
            HOURS if b & B_24H != 0 => tm.hour = field(self).min(23),
            HOURS => {
                let h = field(self).clamp(1, 12) % 12;
                tm.hour = h + if v & 0x80 != 0 { 12 } else { 0 };
            }
            WEEKDAY => return,
            DAY => tm.day = field(self).clamp(1, 31),
            MONTH => tm.month = self.decode(v).clamp(1, 12),
            YEAR => tm.year = tm.year - tm.year.rem_euclid(100) + i64::from(self.decode(v).min(99)),
            CENTURY => tm.year = i64::from(self.decode(v).min(99)) * 100 + tm.year.rem_euclid(100),
            STATUS_A => {
                // Bit 7 (update in progress) is read-only.
                self.ram[STATUS_A as usize] = v & 0x7f;
                return;
            }
            STATUS_B => {
                self.ram[STATUS_B as usize] = v;
                match (v & B_SET != 0, self.shadow) {
                    (true, None) => self.shadow = Some(tm),
                    (false, Some(set)) => {
                        self.shadow = None;
                        self.offset = from_tm(&set).saturating_sub(host_now());
                    }
                    _ => {}
                }
                return;
            }
            STATUS_C | STATUS_D => return,
            r => {
                if let Some(slot) = self.ram.get_mut(usize::from(r)) {
                    *slot = v;
                }
                return;
            }
        }
        if self.shadow.is_some() {
            self.shadow = Some(tm);
        } else {
            self.offset = from_tm(&tm).saturating_sub(host_now());
        }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            0 => 0xff,
            1 => self.read_reg(self.index),
            _ => 0xff,
        };
        data.fill(v);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            0 => {
                self.index = v & 0x7f;
                self.nmi_masked = v & 0x80 != 0;
            }
            1 => self.write_reg(self.index, v),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmos() -> Cmos {
        Cmos::new(CmosConfig {
            low_memory: 3 << 30,
            high_memory: 1 << 30,
            cpus: 4,
        })
    }

    fn reg(c: &mut Cmos, r: u8) -> u8 {
        c.write(0, &[r]);
        let mut b = [0u8];
        c.read(1, &mut b);
        b[0]
    }

    fn set(c: &mut Cmos, r: u8, v: u8) {
        c.write(0, &[r]);
        c.write(1, &[v]);
    }

    #[test]
    fn calendar_round_trips() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        for t in [0i64, 951_782_400, 1_700_000_000, 4_102_444_799] {
            assert_eq!(from_tm(&to_tm(t)), t);
        }
        // 2024-01-01 was a Monday (2).
        assert_eq!(to_tm(19_723 * 86_400).weekday, 2);
    }

    #[test]
    fn memory_and_cpu_bytes() {
        let mut c = cmos();
        let w = |c: &mut Cmos, r| u16::from_le_bytes([reg(c, r), reg(c, r + 1)]);
        assert_eq!(w(&mut c, 0x15), 640);
        assert_eq!(w(&mut c, 0x17), 0xffff, "capped");
        assert_eq!(w(&mut c, 0x30), 0xffff, "capped");
        assert_eq!(
            u32::from(w(&mut c, 0x34)),
            ((3u32 << 30) - (16 << 20)) >> 16
        );
        let high = u32::from_le_bytes([reg(&mut c, 0x5b), reg(&mut c, 0x5c), reg(&mut c, 0x5d), 0]);
        assert_eq!(high, (1 << 30) >> 16);
        assert_eq!(reg(&mut c, 0x5f), 3);
        let small = Cmos::new(CmosConfig {
            low_memory: 8 << 20,
            high_memory: 0,
            cpus: 1,
        });
        assert_eq!(small.ram[0x34..0x36], [0, 0]);
        assert_eq!(
            u16::from_le_bytes([small.ram[0x30], small.ram[0x31]]),
            7 * 1024
        );
    }

    #[test]
    fn time_is_the_host_clock_in_bcd_then_binary() {
        let mut c = cmos();
        let before = to_tm(host_now());
        let year = from_bcd(reg(&mut c, YEAR));
        let century = from_bcd(reg(&mut c, CENTURY));
        let month = from_bcd(reg(&mut c, MONTH));
        assert_eq!(i64::from(century * 100 + year), before.year);
        assert_eq!(month, before.month);
        assert_eq!(reg(&mut c, STATUS_D), D_VRT);
        assert_eq!(reg(&mut c, STATUS_A) & 0x80, 0, "never mid-update");
        set(&mut c, STATUS_B, B_24H | B_BINARY);
        assert_eq!(i64::from(reg(&mut c, YEAR)), before.year % 100);
        assert!(reg(&mut c, HOURS) < 24);
        assert!(reg(&mut c, SECONDS) < 60);
    }

    #[test]
    fn guest_sets_the_clock_and_twelve_hour_mode() {
        let mut c = cmos();
        set(&mut c, STATUS_B, B_SET | B_24H);
        set(&mut c, YEAR, 0x99);
        set(&mut c, CENTURY, 0x19);
        set(&mut c, MONTH, 0x12);
        set(&mut c, DAY, 0x31);
        set(&mut c, HOURS, 0x23);
        set(&mut c, MINUTES, 0x59);
        set(&mut c, STATUS_B, B_24H);
        assert_eq!(reg(&mut c, YEAR), 0x99);
        assert_eq!(reg(&mut c, CENTURY), 0x19);
        assert_eq!(reg(&mut c, MONTH), 0x12);
        assert_eq!(reg(&mut c, DAY), 0x31);
        set(&mut c, STATUS_B, 0);
        // 23h in 12-hour BCD: 11 with the PM bit.
        let h = reg(&mut c, HOURS);
        assert!(h == 0x91 || h == 0x12, "{h:#x}");
    }

    #[test]
    fn a_date_set_field_by_field_under_set_is_taken_whole() {
        let mut c = cmos();
        // Jan 31, then Feb 10 written year, month, day (as Linux does).
        for (month, day) in [(0x01, 0x31), (0x02, 0x10)] {
            set(&mut c, STATUS_B, B_SET | B_24H);
            set(&mut c, YEAR, 0x30);
            set(&mut c, CENTURY, 0x20);
            set(&mut c, MONTH, month);
            set(&mut c, DAY, day);
            set(&mut c, STATUS_B, B_24H);
            assert_eq!((reg(&mut c, MONTH), reg(&mut c, DAY)), (month, day));
        }
    }

    #[test]
    fn index_keeps_nmi_bit_and_hostile_accesses_are_safe() {
        let mut c = cmos();
        c.write(0, &[0x80 | 0x5f]);
        assert!(c.nmi_masked());
        let mut b = [0u8; 4];
        c.read(1, &mut b);
        assert_eq!(b, [3; 4]);
        c.write(1, &[]);
        c.write(7, &[1]);
        c.read(9, &mut b);
        for r in 0..=0xffu8 {
            set(&mut c, r, 0xff);
            let _ = reg(&mut c, r);
        }
        set(&mut c, STATUS_B, 0);
        for r in [SECONDS, MINUTES, HOURS, DAY, MONTH, YEAR, CENTURY] {
            set(&mut c, r, 0xff);
        }
        let _ = reg(&mut c, HOURS);
        // Reading C clears it.
        c.ram[STATUS_C as usize] = 0x40;
        assert_eq!(reg(&mut c, STATUS_C), 0x40);
        assert_eq!(reg(&mut c, STATUS_C), 0);
    }
}

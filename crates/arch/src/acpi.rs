//! ACPI tables: RSDP → XSDT → {FADT → DSDT, MADT}.
//!
//! The platform is "hardware-reduced" ACPI (as in Cloud Hypervisor and QEMU
//! microvm): no PM1 blocks, no SCI. Power-off and reset go through the FADT
//! sleep-control and reset registers, which are I/O ports handled by the
//! VMM's ACPI device (see [`SLEEP_CONTROL_PORT`] and [`RESET_PORT`]).

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{aml, Aml};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{
    ACPI_END, ACPI_START, IOAPIC_ADDR, LAPIC_ADDR, PCI_ECAM_SIZE, PCI_ECAM_START, PCI_MMIO32_END,
    PCI_MMIO32_HIGH_END, PCI_MMIO32_HIGH_START, PCI_MMIO32_START,
};

/// Sleep control register (FADT): the guest writes `SLP_TYP << 2 | SLP_EN`.
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
/// Sleep status register (FADT).
pub const SLEEP_STATUS_PORT: u16 = 0x601;
/// Reset register (FADT) and the value that resets.
pub const RESET_PORT: u16 = 0x602;
pub const RESET_VALUE: u8 = 0x1;
/// The SLP_TYP value of S5 in our DSDT.
pub const S5_SLEEP_TYPE: u8 = 5;
/// SLP_EN bit of the sleep control register.
pub const SLEEP_ENABLE: u8 = 1 << 5;

/// COM1, declared in the DSDT so the guest binds its IRQ.
pub const COM1_PORT: u16 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
/// The ACPI Generic Event Device's interrupt (IOAPIC pin, edge): raised by
/// the VMM to press the power button.
pub const POWER_BUTTON_GSI: u32 = 5;

const OEM_ID: [u8; 6] = *b"VTSYS ";
const OEM_TABLE_ID: [u8; 8] = *b"VTVMM   ";
const OEM_REVISION: u32 = 1;

/// IAPC boot flags: no VGA (the CMOS RTC is there).
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;

/// The CMOS RTC's first I/O port: 0x70, the index (register select);
/// 0x71 is the data port (the MC146818 layout of the PC/AT).
pub const RTC_PORT: u16 = 0x70;
/// How many I/O ports the CMOS RTC takes from [`RTC_PORT`]: 2 (index
/// and data), as its `_CRS` in the DSDT declares.
pub const RTC_PORTS: u16 = 2;

/// Errors writing the tables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ACPI tables do not fit in their area")]
    TooLarge,
    #[error("cannot write ACPI tables to guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

fn bytes_of(table: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

/// PCI configuration ports (mechanism #1).
pub const PCI_CONFIG_PORT: u16 = 0xcf8;
pub const PCI_CONFIG_PORTS: u16 = 8;

/// `\_SB_.PCI0`: the PCI Express root bridge (bus 0), its I/O and 32-bit
/// memory windows; and `\_SB_.MBRD`, the motherboard resource that reserves ECAM.
fn pci_root_aml(sink: &mut dyn acpi_tables::AmlSink) {
    let hid = aml::EISAName::new("PNP0A08");
    let cid = aml::EISAName::new("PNP0A03");
    let zero: u8 = 0;
    let bus = aml::AddressSpace::new_bus_number(0u16, 0u16);
    let cfg_io = aml::IO::new(PCI_CONFIG_PORT, PCI_CONFIG_PORT, 1, PCI_CONFIG_PORTS as u8);
    let io_low = aml::AddressSpace::new_io(0u16, PCI_CONFIG_PORT - 1, None);
    let io_high = aml::AddressSpace::new_io(PCI_CONFIG_PORT + PCI_CONFIG_PORTS, 0xffffu16, None);
    let mem32 = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO32_START as u32,
        (PCI_MMIO32_END - 1) as u32,
        None,
    );
    let mem32_high = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO32_HIGH_START as u32,
        (PCI_MMIO32_HIGH_END - 1) as u32,
        None,
    );
    let crs =
        aml::ResourceTemplate::new(vec![&bus, &cfg_io, &io_low, &io_high, &mem32, &mem32_high]);
    let (hid, cid) = (
        aml::Name::new("_HID".into(), &hid),
        aml::Name::new("_CID".into(), &cid),
    );
    let adr = aml::Name::new("_ADR".into(), &zero);
    let seg = aml::Name::new("_SEG".into(), &zero);
    let uid = aml::Name::new("_UID".into(), &zero);
    let bbn = aml::Name::new("_BBN".into(), &zero);
    let crs = aml::Name::new("_CRS".into(), &crs);
    aml::Device::new(
        "_SB_.PCI0".into(),
        vec![&hid, &cid, &adr, &seg, &uid, &bbn, &crs],
    )
    .to_aml_bytes(sink);

    let mbrd_hid = aml::EISAName::new("PNP0C02");
    let ecam = aml::Memory32Fixed::new(false, PCI_ECAM_START as u32, PCI_ECAM_SIZE as u32);
    let ecam = aml::ResourceTemplate::new(vec![&ecam]);
    let mbrd_hid = aml::Name::new("_HID".into(), &mbrd_hid);
    let mbrd_uid = aml::Name::new("_UID".into(), &zero);
    let mbrd_crs = aml::Name::new("_CRS".into(), &ecam);
    aml::Device::new("_SB_.MBRD".into(), vec![&mbrd_hid, &mbrd_uid, &mbrd_crs]).to_aml_bytes(sink);
}

/// The MCFG: ECAM for segment 0, bus 0.
pub fn mcfg() -> Vec<u8> {
    let mut m = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    m.add_ecam(PCI_ECAM_START, 0, 0, 0);
    bytes_of(&m)
}

/// The power button of a hardware-reduced platform: a `PNP0C0C` button and
/// a Generic Event Device (`ACPI0013`) whose interrupt makes `_EVT` notify
/// it (0x80: pressed). Linux's `button` driver turns that into KEY_POWER.
fn power_button_aml(sink: &mut dyn acpi_tables::AmlSink) {
    let zero: u8 = 0;
    let hid = aml::EISAName::new("PNP0C0C");
    let hid = aml::Name::new("_HID".into(), &hid);
    let uid = aml::Name::new("_UID".into(), &zero);
    aml::Device::new("_SB_.PWRB".into(), vec![&hid, &uid]).to_aml_bytes(sink);

    let ged_hid = aml::Name::new("_HID".into(), &"ACPI0013");
    let irq = aml::Interrupt::new(true, true, false, false, POWER_BUTTON_GSI);
    let crs = aml::ResourceTemplate::new(vec![&irq]);
    let crs = aml::Name::new("_CRS".into(), &crs);
    let pwrb = aml::Path::new("\\_SB_.PWRB");
    let pressed: u8 = 0x80;
    let notify = aml::Notify::new(&pwrb, &pressed);
    let gsi = POWER_BUTTON_GSI;
    let is_ours = aml::Equal::new(&aml::Arg(0), &gsi);
    let when = aml::If::new(&is_ours, vec![&notify]);
    let evt = aml::Method::new("_EVT".into(), 1, true, vec![&when]);
    aml::Device::new("_SB_.GED0".into(), vec![&ged_hid, &uid, &crs, &evt]).to_aml_bytes(sink);
}

/// The CMOS RTC (`PNP0B00`), ports only: without an interrupt, Linux's
/// `rtc_cmos` reads it by polling (we raise no RTC interrupts).
fn rtc_aml(sink: &mut dyn acpi_tables::AmlSink) {
    let io = aml::IO::new(RTC_PORT, RTC_PORT, 1, RTC_PORTS as u8);
    let crs = aml::ResourceTemplate::new(vec![&io]);
    let hid = aml::EISAName::new("PNP0B00");
    let uid: u8 = 0;
    let hid = aml::Name::new("_HID".into(), &hid);
    let uid = aml::Name::new("_UID".into(), &uid);
    let crs = aml::Name::new("_CRS".into(), &crs);
    aml::Device::new("_SB_.RTC_".into(), vec![&hid, &uid, &crs]).to_aml_bytes(sink);
}

/// The DSDT: COM1, the RTC, the PCI root bridge, the power button and the `_S5`
/// sleep state.
pub fn dsdt() -> Vec<u8> {
    let mut sdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    pci_root_aml(&mut sdt);
    let io = aml::IO::new(COM1_PORT, COM1_PORT, 1, 8);
    let irq = aml::Interrupt::new(true, true, false, false, COM1_IRQ);
    let crs = aml::ResourceTemplate::new(vec![&io, &irq]);
    let hid = aml::EISAName::new("PNP0501");
    let uid: u8 = 0;
    let hid = aml::Name::new("_HID".into(), &hid);
    let uid = aml::Name::new("_UID".into(), &uid);
    let crs = aml::Name::new("_CRS".into(), &crs);
    let com1 = aml::Device::new("_SB_.COM1".into(), vec![&hid, &uid, &crs]);
    com1.to_aml_bytes(&mut sdt);
    rtc_aml(&mut sdt);
    power_button_aml(&mut sdt);
    let s5_type = S5_SLEEP_TYPE;
    let s5 = aml::Name::new("_S5_".into(), &aml::Package::new(vec![&s5_type]));
    s5.to_aml_bytes(&mut sdt);
    sdt.update_checksum();
    sdt.as_slice().to_vec()
}

/// The FADT, pointing at the DSDT.
pub fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .dsdt_64(dsdt_addr);
    f.iapc_boot_arch = IAPC_VGA_NOT_PRESENT.into();
    let port = |p: u16| {
        GAS::new(
            AddressSpace::SystemIo,
            8,
            0,
            AccessSize::ByteAccess,
            p.into(),
        )
    };
    f.sleep_control_reg = port(SLEEP_CONTROL_PORT);
    f.sleep_status_reg = port(SLEEP_STATUS_PORT);
    f.reset_reg = port(RESET_PORT);
    f.reset_value = RESET_VALUE;
    f.hypervisor_vendor_identity = u64::from_le_bytes(*b"VTSYSTEM").into();
    bytes_of(&f.finalize())
}

/// The MADT: one local APIC per vCPU (APIC ID = index) and the IOAPIC.
pub fn madt(cpus: u8) -> Vec<u8> {
    let mut m = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR as u32),
    );
    for id in 0..cpus {
        m.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    m.add_structure(IoApic::new(0, IOAPIC_ADDR as u32, 0));
    bytes_of(&m)
}

/// Writes all tables from [`ACPI_START`]; returns the RSDP address.
pub fn write_tables(mem: &GuestMemoryMmap, cpus: u8) -> Result<GuestAddress, Error> {
    let rsdp_addr = ACPI_START;
    let rsdp = place_tables(mem, cpus, align8(rsdp_addr + Rsdp::len() as u64), ACPI_END)?;
    mem.write_slice(&rsdp, GuestAddress(rsdp_addr))
        .map_err(Error::Write)?;
    Ok(GuestAddress(rsdp_addr))
}

/// Writes the tables other than the RSDP in `[start, end)` of guest memory;
/// returns the RSDP (36 bytes, checksums set) pointing at them, for the
/// caller to place (below 1 MiB, or through the firmware's table-loader).
pub fn place_tables(
    mem: &GuestMemoryMmap,
    cpus: u8,
    start: u64,
    end: u64,
) -> Result<Vec<u8>, Error> {
    let limit = end;
    let mut next = align8(start);
    let mut place = |table: &[u8]| -> Result<u64, Error> {
        let addr = next;
        let end = addr + table.len() as u64;
        if end > limit {
            return Err(Error::TooLarge);
        }
        mem.write_slice(table, GuestAddress(addr))
            .map_err(Error::Write)?;
        next = align8(end);
        Ok(addr)
    };
    let dsdt_addr = place(&dsdt())?;
    let fadt_addr = place(&fadt(dsdt_addr))?;
    let madt_addr = place(&madt(cpus))?;
    let mcfg_addr = place(&mcfg())?;
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    xsdt.add_entry(mcfg_addr);
    let xsdt_addr = place(&bytes_of(&xsdt))?;
    Ok(bytes_of(&Rsdp::new(OEM_ID, xsdt_addr)))
}

fn align8(x: u64) -> u64 {
    (x + 7) & !7
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(t: &[u8]) -> bool {
        t.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    fn read_u32(t: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(t[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn tables_have_valid_checksums_and_lengths() {
        for t in [dsdt(), fadt(0x1234), madt(4), mcfg()] {
            assert!(checksum_ok(&t), "{:?}", &t[0..4]);
            assert_eq!(read_u32(&t, 4) as usize, t.len());
        }
    }

    #[test]
    fn dsdt_declares_s5_and_com1() {
        let d = dsdt();
        let has = |needle: &[u8]| d.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"_S5_"));
        assert!(has(b"COM1"));
        assert!(has(b"PCI0"));
        assert!(has(b"MBRD"));
        assert!(has(b"RTC_"));
        for name in [&b"PWRB"[..], b"GED0", b"ACPI0013\0", b"_EVT"] {
            assert!(has(name), "{}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn fadt_is_hw_reduced_with_our_ports() {
        let f = fadt(0xdead_beef);
        let flags = read_u32(&f, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        // reset_reg GAS at 116: space id 1 (I/O), address at +4.
        assert_eq!(f[116], 1);
        assert_eq!(
            u64::from_le_bytes(f[120..128].try_into().unwrap()),
            RESET_PORT as u64
        );
        assert_eq!(f[128], RESET_VALUE);
        // X_DSDT at 140.
        assert_eq!(
            u64::from_le_bytes(f[140..148].try_into().unwrap()),
            0xdead_beef
        );
        // sleep control register at 244.
        assert_eq!(
            u64::from_le_bytes(f[248..256].try_into().unwrap()),
            SLEEP_CONTROL_PORT as u64
        );
    }

    #[test]
    fn mcfg_points_at_ecam_for_bus_0() {
        let m = mcfg();
        assert_eq!(&m[0..4], b"MCFG");
        // One allocation structure after the 44-byte header.
        assert_eq!(m.len(), 44 + 16);
        assert_eq!(
            u64::from_le_bytes(m[44..52].try_into().unwrap()),
            PCI_ECAM_START
        );
        assert_eq!((m[54], m[55]), (0, 0), "start and end bus");
    }

    #[test]
    fn madt_lists_every_cpu() {
        for n in [1u8, 2, 254] {
            let m = madt(n);
            // Walk the structures.
            let mut off = 44;
            let mut lapics = 0;
            let mut ioapics = 0;
            while off < m.len() {
                match m[off] {
                    0 => lapics += 1,
                    1 => ioapics += 1,
                    t => panic!("unexpected MADT type {t}"),
                }
                off += m[off + 1] as usize;
            }
            assert_eq!((lapics, ioapics), (n as usize, 1));
        }
    }

    #[test]
    fn rsdp_points_to_xsdt_listing_fadt_and_madt() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let rsdp = write_tables(&mem, 254).unwrap();
        let mut r = [0u8; 36];
        mem.read_slice(&mut r, rsdp).unwrap();
        assert_eq!(&r[0..8], b"RSD PTR ");
        assert!(checksum_ok(&r[0..20]) && checksum_ok(&r));
        let xsdt_addr = u64::from_le_bytes(r[24..32].try_into().unwrap());
        let mut hdr = [0u8; 36];
        mem.read_slice(&mut hdr, GuestAddress(xsdt_addr)).unwrap();
        assert_eq!(&hdr[0..4], b"XSDT");
        let len = read_u32(&hdr, 4) as usize;
        let mut x = vec![0u8; len];
        mem.read_slice(&mut x, GuestAddress(xsdt_addr)).unwrap();
        assert!(checksum_ok(&x));
        let sigs: Vec<[u8; 4]> = x[36..]
            .chunks(8)
            .map(|c| {
                let a = u64::from_le_bytes(c.try_into().unwrap());
                let mut s = [0u8; 4];
                mem.read_slice(&mut s, GuestAddress(a)).unwrap();
                s
            })
            .collect();
        assert_eq!(sigs, vec![*b"FACP", *b"APIC", *b"MCFG"]);
    }
}

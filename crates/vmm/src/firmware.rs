//! Booting through firmware (SeaBIOS): the image mapped to end at 4 GiB
//! with its last 256 KiB copied below 1 MiB, and what the
//! firmware reads over fw_cfg.
//!
//! ```text
//! 4 GiB - size .. 4 GiB     the firmware image (its own KVM memory slot)
//! 0xC0000 .. 0x100000       its last 256 KiB, in guest RAM (writable: what
//!                           SeaBIOS's shadowing copies there; our host bridge
//!                           has no PAM registers)
//! low RAM end - 64 KiB ..   our ACPI tables (reserved in etc/e820); the RSDP
//!                           goes to the F-segment through etc/table-loader
//! ```
//!
//! vCPU 0 starts at the reset vector (KVM's reset state: real mode, CS base
//! 0xFFFF0000, IP 0xFFF0); the other vCPUs wait for the firmware's INIT-SIPI
//! in KVM's in-kernel LAPIC.

use std::os::unix::fs::FileExt;
use std::path::Path;

use api::VmConfig;
use arch::layout::{
    self, FIRMWARE_ACPI_SIZE, FIRMWARE_ALIGN, FIRMWARE_MAX_SIZE, LEGACY_BIOS_SIZE,
    LEGACY_BIOS_START, MMIO_HOLE_END,
};
use devices::firmware::fw_cfg::keys;
use devices::firmware::table_loader::{self, Zone};
use devices::firmware::FwCfg;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::Error;

/// Serial port SeaBIOS mirrors its screen to (`etc/sercon-port`): COM1.
const SERCON_PORT: u16 = 0x3f8;
/// Milliseconds SeaBIOS waits after "No bootable device" before it resets
/// the VM (through 0xCF9: with `--on-reboot exit` the VMM then ends).
pub const BOOT_FAIL_WAIT_MS: u32 = 3000;

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Firmware {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Checks an image's size: whole 64 KiB units, 64 KiB to 16 MiB.
pub fn check_size(len: u64) -> Result<(), String> {
    if len == 0 {
        return Err("the file is empty".into());
    }
    if len > FIRMWARE_MAX_SIZE {
        return Err(format!(
            "{len} bytes is larger than the {} MiB a firmware may be",
            FIRMWARE_MAX_SIZE >> 20
        ));
    }
    if !len.is_multiple_of(FIRMWARE_ALIGN) {
        return Err(format!(
            "{len} bytes is not a whole number of 64 KiB (not a firmware image)"
        ));
    }
    Ok(())
}

/// Reads and checks the firmware image at `path` (or `/dev/fd/N`).
pub fn load(path: &Path) -> Result<Vec<u8>, Error> {
    let file = devices::files::open(path, false, 0).map_err(|source| Error::Open {
        what: "firmware",
        path: path.display().to_string(),
        source,
    })?;
    let meta = file
        .metadata()
        .map_err(|e| bad(path, format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(bad(path, "not a regular file"));
    }
    check_size(meta.len()).map_err(|r| bad(path, r))?;
    let mut image = vec![0u8; meta.len() as usize];
    file.read_exact_at(&mut image, 0)
        .map_err(|e| bad(path, format!("cannot read: {e}")))?;
    if image.get(40..44) == Some(b"_FVH") {
        return Err(bad(
            path,
            "a UEFI firmware volume (OVMF): UEFI boot is not supported yet (it needs a \
             flash device for its variable store); use SeaBIOS (bios-256k.bin)",
        ));
    }
    // The instruction at the reset vector, 16 bytes before the end:
    // SeaBIOS has a far jump (0xEA); others a near or short jump or a NOP.
    match image.len().checked_sub(16).and_then(|i| image.get(i)) {
        Some(0xea | 0xe9 | 0xeb | 0x90) => Ok(image),
        _ => Err(bad(
            path,
            "no jump at the reset vector (16 bytes before the end): not an x86 BIOS image",
        )),
    }
}

/// Maps `image` to end at 4 GiB (a memory slot of its own, returned: keep
/// it as long as the VM) and copies its last 256 KiB to end at 1 MiB.
pub fn install(
    vm: &mut hv::Vm,
    mem: &GuestMemoryMmap,
    image: &[u8],
) -> Result<GuestMemoryMmap, Error> {
    let size = image.len() as u64;
    let start = MMIO_HOLE_END - size;
    let rom = GuestMemoryMmap::from_ranges(&[(GuestAddress(start), image.len())])
        .map_err(|e| Error::MapMemory(size >> 20, std::io::Error::other(e.to_string())))?;
    rom.write_slice(image, GuestAddress(start))
        .map_err(Error::GuestMemory)?;
    crate::memory::register(vm, &rom)?;
    let legacy = &image[image.len().saturating_sub(LEGACY_BIOS_SIZE as usize)..];
    let at = LEGACY_BIOS_START + LEGACY_BIOS_SIZE - legacy.len() as u64;
    mem.write_slice(legacy, GuestAddress(at))
        .map_err(Error::GuestMemory)?;
    Ok(rom)
}

/// The e820 map for the firmware (`etc/e820`, QEMU's layout: 8-byte
/// address, 8-byte length, 4-byte type, little-endian): RAM, with our ACPI
/// tables and ECAM reserved. SeaBIOS manages the first MiB itself.
fn e820(mem_bytes: u64) -> Vec<u8> {
    let low_end = layout::low_ram_end(mem_bytes);
    let mut entries = vec![
        (0, low_end, layout::E820_RAM),
        (
            low_end - FIRMWARE_ACPI_SIZE,
            FIRMWARE_ACPI_SIZE,
            layout::E820_RESERVED,
        ),
        (
            layout::PCI_ECAM_START,
            layout::PCI_ECAM_SIZE,
            layout::E820_RESERVED,
        ),
    ];
    if mem_bytes > layout::MMIO_HOLE_START {
        entries.push((
            MMIO_HOLE_END,
            mem_bytes - layout::MMIO_HOLE_START,
            layout::E820_RAM,
        ));
    }
    let mut out = Vec::with_capacity(entries.len() * 20);
    for (start, len, kind) in entries {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
    }
    out
}

/// SeaBIOS's boot order: disk `i` is PCI slot `i + 1` (disks come first),
/// in QEMU's device-path spelling for virtio-blk.
fn bootorder(disks: usize) -> Vec<u8> {
    (1..=disks)
        .map(|slot| format!("/pci@i0cf8/scsi@{slot:x}/disk@0,0\n"))
        .collect::<String>()
        .into_bytes()
}

/// Writes our ACPI tables in the reserved area at the top of low RAM and
/// builds the fw_cfg device describing the VM to the firmware.
pub fn fw_cfg(config: &VmConfig, mem: &GuestMemoryMmap, cpus: u8) -> Result<FwCfg, Error> {
    let mem_bytes = config.memory_bytes();
    let low_end = layout::low_ram_end(mem_bytes);
    let rsdp = arch::acpi::place_tables(mem, cpus, low_end - FIRMWARE_ACPI_SIZE, low_end)?;
    let mut f = FwCfg::new(mem.clone());
    f.add_item(keys::UUID, vec![0; 16])?;
    f.add_item(keys::RAM_SIZE, mem_bytes.to_le_bytes().to_vec())?;
    f.add_item(keys::NOGRAPHIC, 1u16.to_le_bytes().to_vec())?;
    f.add_item(keys::NB_CPUS, u16::from(cpus).to_le_bytes().to_vec())?;
    f.add_item(keys::MAX_CPUS, u16::from(cpus).to_le_bytes().to_vec())?;
    f.add_item(keys::NUMA, 0u64.to_le_bytes().to_vec())?;
    f.add_item(keys::BOOT_MENU, 0u16.to_le_bytes().to_vec())?;
    f.add_item(keys::ACPI_TABLES, 0u16.to_le_bytes().to_vec())?;
    f.add_item(keys::SMBIOS_ENTRIES, 0u16.to_le_bytes().to_vec())?;
    f.add_file("etc/e820", e820(mem_bytes))?;
    f.add_file("bootorder", bootorder(config.disks.len()))?;
    f.add_file(
        "etc/boot-fail-wait",
        BOOT_FAIL_WAIT_MS.to_le_bytes().to_vec(),
    )?;
    f.add_file("etc/sercon-port", SERCON_PORT.to_le_bytes().to_vec())?;
    f.add_file("etc/acpi/rsdp", rsdp)?;
    let loader = table_loader::allocate("etc/acpi/rsdp", 16, Zone::FSeg).ok_or_else(|| {
        Error::FwCfg(devices::firmware::fw_cfg::Error::BadName(
            "etc/acpi/rsdp".into(),
        ))
    })?;
    f.add_file("etc/table-loader", loader.to_vec())?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert!(check_size(0).unwrap_err().contains("empty"));
        assert!(check_size(256 << 10).is_ok());
        assert!(check_size(100_000).unwrap_err().contains("64 KiB"));
        assert!(check_size(32 << 20).unwrap_err().contains("16 MiB"));
        assert!(check_size(16 << 20).is_ok());
    }

    #[test]
    fn e820_reserves_acpi_and_ecam() {
        let m = e820(5 << 30);
        assert_eq!(m.len(), 4 * 20);
        let entry = |i: usize| {
            let e = &m[i * 20..i * 20 + 20];
            (
                u64::from_le_bytes(e[0..8].try_into().unwrap()),
                u64::from_le_bytes(e[8..16].try_into().unwrap()),
                u32::from_le_bytes(e[16..20].try_into().unwrap()),
            )
        };
        assert_eq!(entry(0), (0, 3 << 30, 1));
        assert_eq!(entry(1), ((3 << 30) - (64 << 10), 64 << 10, 2));
        assert_eq!(entry(3), (4 << 30, 2 << 30, 1));
        assert_eq!(e820(256 << 20).len(), 3 * 20);
    }

    #[test]
    fn bootorder_names_disk_slots() {
        assert_eq!(
            String::from_utf8(bootorder(2)).unwrap(),
            "/pci@i0cf8/scsi@1/disk@0,0\n/pci@i0cf8/scsi@2/disk@0,0\n"
        );
    }

    #[test]
    fn fw_cfg_carries_tables_in_reserved_ram() {
        let mut c = VmConfig::new("");
        c.firmware = Some("/fw".into());
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 256 << 20)]).unwrap();
        fw_cfg(&c, &mem, 2).unwrap();
        let mut sig = [0u8; 4];
        let base = (256 << 20) - FIRMWARE_ACPI_SIZE;
        mem.read_slice(&mut sig, GuestAddress(base)).unwrap();
        assert_eq!(&sig, b"DSDT");
    }
}

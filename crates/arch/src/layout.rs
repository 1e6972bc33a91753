//! The guest-physical memory map.
//!
//! ```text
//! 0x0000_0500  GDT                      0x0000_7000  zero page (Linux boot)
//! 0x0000_6000  PVH start info + memmap  0x0000_8ff0  boot stack top
//! 0x0000_9000  PML4, PDPT, 4 PDs (identity map of the first 4 GiB)
//! 0x0002_0000  kernel command line      0x0009_fc00  EBDA (reserved) ..
//! 0x000e_0000  ACPI tables (RSDP first) .. 0x0010_0000  1 MiB: kernel
//! RAM up to 3 GiB, then the 32-bit MMIO hole (PCI BARs, ECAM, IOAPIC, LAPIC),
//! RAM above 4 GiB for the rest.
//! ```

use vm_memory::GuestAddress;

pub const GDT_START: u64 = 0x500;
pub const PVH_INFO_START: u64 = 0x6000;
/// Up to 8 memmap entries follow the PVH start info.
pub const PVH_MEMMAP_START: u64 = 0x6040;
/// The PVH module (initramfs) list entry.
pub const PVH_MODLIST_START: u64 = 0x6200;
pub const ZERO_PAGE_START: u64 = 0x7000;
pub const BOOT_STACK_TOP: u64 = 0x8ff0;
pub const PML4_START: u64 = 0x9000;
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we write (Linux's COMMAND_LINE_SIZE on x86 is 2048).
pub const CMDLINE_MAX: usize = 2048;
pub const EBDA_START: u64 = 0x9fc00;
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_END: u64 = 0x100000;
pub const HIMEM_START: u64 = 0x100000;
/// Where a reset CPU starts (F000:FFF0); holds a stub that asks the VMM for a reset.
pub const RESET_VECTOR: u64 = 0xffff0;
/// Start of the 32-bit MMIO hole; RAM beyond this moves above 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End (exclusive) of the 32-bit MMIO hole: 4 GiB, where RAM resumes.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// Start of the 32-bit PCI BAR window (the start of the MMIO hole).
pub const PCI_MMIO32_START: u64 = MMIO_HOLE_START;
/// End (exclusive) of the 32-bit PCI BAR window: where ECAM starts.
pub const PCI_MMIO32_END: u64 = 0xe000_0000;
/// The second 32-bit PCI window, from the end of ECAM to the IOAPIC:
/// where SeaBIOS puts the BARs it assigns (top-down from 0xFEC0_0000, as on
/// a machine that is neither i440FX nor Q35). Direct boot does not use it.
pub const PCI_MMIO32_HIGH_START: u64 = PCI_ECAM_START + PCI_ECAM_SIZE;
/// End (exclusive) of the second 32-bit PCI window: the IOAPIC's address,
/// 0xFEC0_0000.
pub const PCI_MMIO32_HIGH_END: u64 = IOAPIC_ADDR;
/// PCI Express ECAM for bus 0 (1 MiB), declared in the MCFG.
pub const PCI_ECAM_START: u64 = 0xe000_0000;
pub const PCI_ECAM_SIZE: u64 = 1 << 20;
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;

/// The largest firmware image: it is mapped to end at 4 GiB, above the
/// LAPIC and KVM's TSS pages (see `hv::KVM_TSS_ADDRESS`).
pub const FIRMWARE_MAX_SIZE: u64 = 16 << 20;
/// Firmware images are whole multiples of this (flash sectors).
pub const FIRMWARE_ALIGN: u64 = 64 << 10;
/// The firmware's last 256 KiB are also copied to end at 1 MiB
/// (0xC0000..0x100000: what SeaBIOS's shadowing through an i440FX's PAM
/// registers copies there). Plain RAM, so SeaBIOS can write its data.
pub const LEGACY_BIOS_START: u64 = 0xc0000;
/// Bytes of the firmware copied below 1 MiB: its last 256 KiB, filling
/// [`LEGACY_BIOS_START`]..0x100000 (less for a smaller image).
pub const LEGACY_BIOS_SIZE: u64 = 256 << 10;
/// With firmware, our ACPI tables sit in the last 64 KiB of RAM below
/// 4 GiB, marked reserved in the e820 map fw_cfg gives the firmware.
pub const FIRMWARE_ACPI_SIZE: u64 = 64 << 10;

/// Smallest guest we accept (room for the boot structures and a kernel).
pub const MIN_MEMORY: u64 = 8 << 20;
/// Largest guest the layout describes (1 TiB).
pub const MAX_MEMORY: u64 = 1 << 40;

/// e820 entry types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// One range of the guest's physical memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRange {
    pub start: u64,
    pub size: u64,
    pub kind: u32,
}

/// The RAM regions backing `mem_size` bytes of guest memory.
pub fn ram_regions(mem_size: u64) -> Vec<(GuestAddress, u64)> {
    if mem_size <= MMIO_HOLE_START {
        vec![(GuestAddress(0), mem_size)]
    } else {
        vec![
            (GuestAddress(0), MMIO_HOLE_START),
            (GuestAddress(MMIO_HOLE_END), mem_size - MMIO_HOLE_START),
        ]
    }
}

/// The end of RAM below 4 GiB (exclusive).
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_HOLE_START)
}

/// The e820 map the guest is told about.
pub fn e820_map(mem_size: u64) -> Vec<MemoryRange> {
    let mut map = vec![
        MemoryRange {
            start: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        MemoryRange {
            start: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    let low_end = low_ram_end(mem_size);
    if low_end > HIMEM_START {
        map.push(MemoryRange {
            start: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820_RAM,
        });
    }
    map.push(MemoryRange {
        start: PCI_ECAM_START,
        size: PCI_ECAM_SIZE,
        kind: E820_RESERVED,
    });
    if mem_size > MMIO_HOLE_START {
        map.push(MemoryRange {
            start: MMIO_HOLE_END,
            size: mem_size - MMIO_HOLE_START,
            kind: E820_RAM,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_region() {
        assert_eq!(ram_regions(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
    }

    #[test]
    fn large_guest_splits_around_the_hole() {
        let r = ram_regions(4 << 30);
        assert_eq!(r[0], (GuestAddress(0), MMIO_HOLE_START));
        assert_eq!(
            r[1],
            (GuestAddress(MMIO_HOLE_END), (4 << 30) - MMIO_HOLE_START)
        );
    }

    #[test]
    fn e820_covers_all_ram_exactly_once() {
        for mem in [MIN_MEMORY, 256 << 20, 1 << 30, 3 << 30, 5 << 30] {
            let map = e820_map(mem);
            let ram: u64 = map
                .iter()
                .filter(|r| r.kind == E820_RAM)
                .map(|r| r.size)
                .sum();
            let reserved_low = HIMEM_START - EBDA_START;
            assert!(map.contains(&MemoryRange {
                start: PCI_ECAM_START,
                size: PCI_ECAM_SIZE,
                kind: E820_RESERVED
            }));
            assert_eq!(ram + reserved_low, mem, "mem {mem:#x}");
            for w in map.windows(2) {
                assert!(w[0].start + w[0].size <= w[1].start, "sorted, no overlap");
            }
        }
    }

    #[test]
    fn boot_structures_sit_below_the_ebda() {
        const { assert!(PML4_START + 6 * 0x1000 <= CMDLINE_START) };
        const { assert!(CMDLINE_START + CMDLINE_MAX as u64 <= EBDA_START) };
        const { assert!(PVH_MODLIST_START < ZERO_PAGE_START) };
    }
}

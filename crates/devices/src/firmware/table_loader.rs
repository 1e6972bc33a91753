//! QEMU's ACPI table-loader script (`etc/table-loader`), the commands
//! SeaBIOS and OVMF run to place fw_cfg files in guest memory: 128-byte
//! little-endian entries (QEMU `hw/acpi/bios-linker-loader.c`). Only
//! ALLOCATE is written here: our tables sit at fixed addresses, so no
//! pointer needs patching and every checksum is already right.

/// Size of one command.
pub const ENTRY_SIZE: usize = 128;
/// Longest file name in a command (with its NUL).
const FILE_SIZE: usize = 56;
const COMMAND_ALLOCATE: u32 = 1;

/// Where ALLOCATE places a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Zone {
    /// Anywhere in RAM below 4 GiB.
    High = 1,
    /// The BIOS F-segment (0xF0000-0xFFFFF), where the guest scans for the RSDP.
    FSeg = 2,
}

/// An ALLOCATE command: copy fw_cfg file `file` to memory of `zone`
/// aligned to `align` bytes. `None` when the name does not fit.
pub fn allocate(file: &str, align: u32, zone: Zone) -> Option<[u8; ENTRY_SIZE]> {
    if file.is_empty() || file.len() >= FILE_SIZE {
        return None;
    }
    let mut e = [0u8; ENTRY_SIZE];
    e[0..4].copy_from_slice(&COMMAND_ALLOCATE.to_le_bytes());
    e[4..4 + file.len()].copy_from_slice(file.as_bytes());
    e[4 + FILE_SIZE..8 + FILE_SIZE].copy_from_slice(&align.to_le_bytes());
    e[8 + FILE_SIZE] = zone as u8;
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_layout() {
        let e = allocate("etc/acpi/rsdp", 16, Zone::FSeg).unwrap();
        assert_eq!(&e[0..4], &[1, 0, 0, 0]);
        assert_eq!(&e[4..18], b"etc/acpi/rsdp\0");
        assert_eq!(&e[60..64], &16u32.to_le_bytes());
        assert_eq!(e[64], 2);
        assert!(e[65..].iter().all(|&b| b == 0));
        assert!(allocate(&"x".repeat(56), 16, Zone::High).is_none());
        assert!(allocate("", 16, Zone::High).is_none());
    }
}

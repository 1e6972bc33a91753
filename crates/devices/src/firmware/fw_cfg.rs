//! QEMU's firmware configuration device (fw_cfg), on x86 I/O ports, as
//! QEMU's `docs/specs/fw_cfg.rst` describes it:
//!
//! - port 0x510 (16-bit write): the selector, a 16-bit item key; selecting
//!   rewinds the item;
//! - port 0x511 (8-bit read): the next byte of the selected item (0 past
//!   its end);
//! - ports 0x514..0x51b: the DMA address, a 64-bit big-endian guest address
//!   written as two 32-bit halves (high at 0x514, low at 0x518); writing the
//!   low half starts the transfer of the `FWCfgDmaAccess` it points at
//!   (big-endian `control`, `length`, `address`). The device clears
//!   `control` when done, or leaves the error bit (0x1) in it. Reading
//!   0x514 gives the signature `"QEMU CFG"`.
//!
//! Items are read-only: DMA writes and data-port writes are refused (error
//! bit) or ignored. Named items ("files") are listed in the directory at
//! key 0x19 (big-endian count, then 64-byte entries: size, key, name).
//!
//! Every value the guest gives (keys, offsets, lengths, addresses) is
//! checked; a bad one gives the error bit, never a panic.

use std::collections::HashMap;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::bus::BusDevice;

/// The first I/O port of the device: the selector (0x510).
pub const FW_CFG_PORT: u16 = 0x510;
/// How many I/O ports the device takes from [`FW_CFG_PORT`]: 12, i.e.
/// 0x510..=0x51b (selector 0x510, data 0x511, 0x512..0x513 unused, DMA
/// address 0x514..=0x51b), as `fw_cfg.rst` places them on x86.
pub const FW_CFG_PORTS: u16 = 12;

/// Well-known item keys (selector values), from QEMU's `docs/specs/fw_cfg.rst`
/// and the `FW_CFG_*` keys of `fw_cfg_keys.h`. Multi-byte values in numbered
/// items are little-endian; the file directory is big-endian.
pub mod keys {
    /// The signature: the 4 bytes `"QEMU"`.
    pub const SIGNATURE: u16 = 0x00;
    /// The revision / feature bitmap: a 32-bit little-endian value, bit 0
    /// the traditional (port) interface, bit 1 the DMA interface.
    pub const ID: u16 = 0x01;
    /// The VM's UUID: 16 bytes.
    pub const UUID: u16 = 0x02;
    /// The guest's RAM size in bytes: 64-bit little-endian.
    pub const RAM_SIZE: u16 = 0x03;
    /// Whether the VM has no graphical display: 16-bit little-endian,
    /// 1 for none.
    pub const NOGRAPHIC: u16 = 0x04;
    /// The number of vCPUs present at boot: 16-bit little-endian.
    pub const NB_CPUS: u16 = 0x05;
    /// The NUMA description: a 64-bit little-endian node count, then per-
    /// CPU and per-node entries; a zero count means no NUMA.
    pub const NUMA: u16 = 0x0d;
    /// Whether the firmware offers a boot menu: 16-bit little-endian,
    /// 0 for no.
    pub const BOOT_MENU: u16 = 0x0e;
    /// The most vCPUs the VM can have: 16-bit little-endian.
    pub const MAX_CPUS: u16 = 0x0f;
    /// The file directory: a 32-bit big-endian count, then one 64-byte
    /// entry per file (32-bit size, 16-bit key, 16 reserved bits, 56-byte
    /// NUL-padded name), all big-endian.
    pub const FILE_DIR: u16 = 0x19;
    /// The first key given to a named item.
    pub const FILE_FIRST: u16 = 0x20;
    /// The x86 legacy ACPI table list (a zero count: tables come as files).
    pub const ACPI_TABLES: u16 = 0x8000;
    /// The x86 legacy SMBIOS entry list (a zero count).
    pub const SMBIOS_ENTRIES: u16 = 0x8001;
}

/// ID bits: the traditional interface and the DMA interface.
const ID_TRADITIONAL: u32 = 1;
const ID_DMA: u32 = 1 << 1;
/// Selector bit asking for a write (refused: items are read-only).
const SELECT_WRITE: u16 = 0x4000;
/// Longest file name, without the NUL the directory entry adds.
pub const MAX_NAME: usize = 55;

/// DMA control bits.
const DMA_ERROR: u32 = 1 << 0;
const DMA_READ: u32 = 1 << 1;
const DMA_SKIP: u32 = 1 << 2;
const DMA_SELECT: u32 = 1 << 3;
const DMA_WRITE: u32 = 1 << 4;
/// What a DMA read reads back as from the signature port.
const DMA_SIGNATURE: &[u8; 8] = b"QEMU CFG";

/// Errors building the item list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A file name that is empty, longer than [`MAX_NAME`] bytes or holds
    /// a NUL.
    #[error("fw_cfg file name '{0}' is empty or longer than 55 bytes")]
    BadName(String),
    /// A file name already in the directory.
    #[error("fw_cfg file '{0}' is given twice")]
    Duplicate(String),
    /// No key left for another file (keys stop below the write bit, 0x4000).
    #[error("fw_cfg has no free key for file '{0}'")]
    Full(String),
    /// An item larger than a 32-bit size can describe (its length in bytes).
    #[error("fw_cfg item of {0} bytes is larger than 4 GiB")]
    TooLarge(usize),
}

/// The device: its items, the selected one and the read position in it.
pub struct FwCfg {
    items: HashMap<u16, Vec<u8>>,
    /// Named items in the order they were added: (name, key).
    files: Vec<(String, u16)>,
    selected: u16,
    offset: usize,
    dma_high: u32,
    mem: GuestMemoryMmap,
}

impl FwCfg {
    /// A device with the signature and ID (DMA supported) items, an empty
    /// file directory, reading and writing guest memory `mem` for DMA.
    pub fn new(mem: GuestMemoryMmap) -> Self {
        let mut items = HashMap::new();
        items.insert(keys::SIGNATURE, b"QEMU".to_vec());
        items.insert(keys::ID, (ID_TRADITIONAL | ID_DMA).to_le_bytes().to_vec());
        let mut f = FwCfg {
            items,
            files: Vec::new(),
            selected: 0,
            offset: 0,
            dma_high: 0,
            mem,
        };
        f.rebuild_dir();
        f
    }

    /// Sets item `key` (a well-known, numbered item) to `data`.
    pub fn add_item(&mut self, key: u16, data: Vec<u8>) -> Result<(), Error> {
        u32::try_from(data.len()).map_err(|_| Error::TooLarge(data.len()))?;
        self.items.insert(key, data);
        Ok(())
    }

    /// Adds the named item `name` with `data`; returns its key.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16, Error> {
        if name.is_empty() || name.len() > MAX_NAME || name.contains('\0') {
            return Err(Error::BadName(name.into()));
        }
        if self.files.iter().any(|(n, _)| n == name) {
            return Err(Error::Duplicate(name.into()));
        }
        let key = u16::try_from(self.files.len())
            .ok()
            .and_then(|n| keys::FILE_FIRST.checked_add(n))
            .filter(|k| k & SELECT_WRITE == 0)
            .ok_or_else(|| Error::Full(name.into()))?;
        self.add_item(key, data)?;
        self.files.push((name.into(), key));
        self.rebuild_dir();
        Ok(key)
    }

    fn rebuild_dir(&mut self) {
        let mut dir = (self.files.len() as u32).to_be_bytes().to_vec();
        for (name, key) in &self.files {
            let size = self.items.get(key).map_or(0, Vec::len) as u32;
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&key.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut n = [0u8; 56];
            n[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&n);
        }
        self.items.insert(keys::FILE_DIR, dir);
    }

    fn select(&mut self, key: u16) {
        self.selected = key;
        self.offset = 0;
    }

    /// The selected item's bytes from the read position (empty past its
    /// end, or for an unknown key).
    fn remaining(&self) -> &[u8] {
        self.items
            .get(&self.selected)
            .and_then(|d| d.get(self.offset..))
            .unwrap_or(&[])
    }

    fn read_byte(&mut self) -> u8 {
        let b = self.remaining().first().copied().unwrap_or(0);
        self.offset = self.offset.saturating_add(1);
        b
    }

    /// Runs the DMA access at guest address `at`. An access structure that
    /// cannot be read is dropped (there is nowhere to report the error).
    fn dma(&mut self, at: u64) {
        let mut raw = [0u8; 16];
        let Ok(()) = self.mem.read_slice(&mut raw, GuestAddress(at)) else {
            return;
        };
        let word = |i: usize| u32::from_be_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        let control = word(0);
        let length = word(4) as usize;
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&raw[8..16]);
        let address = u64::from_be_bytes(addr);
        if control & DMA_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let ok = if control & DMA_WRITE != 0 {
            false
        } else if control & DMA_READ != 0 {
            self.dma_read(address, length)
        } else if control & DMA_SKIP != 0 {
            self.offset = self.offset.saturating_add(length);
            true
        } else {
            true
        };
        let status: u32 = if ok { 0 } else { DMA_ERROR };
        // Nowhere to report a failure to write the status either.
        let _ = self
            .mem
            .write_slice(&status.to_be_bytes(), GuestAddress(at));
    }

    /// Copies `length` bytes of the item to `address`, zeros past its end.
    fn dma_read(&mut self, address: u64, length: usize) -> bool {
        let data = self.remaining();
        let n = data.len().min(length);
        if self
            .mem
            .write_slice(&data[..n], GuestAddress(address))
            .is_err()
        {
            return false;
        }
        let mut done = n;
        let zeros = [0u8; 4096];
        while done < length {
            let chunk = (length - done).min(zeros.len());
            let Some(to) = address.checked_add(done as u64) else {
                return false;
            };
            if self
                .mem
                .write_slice(&zeros[..chunk], GuestAddress(to))
                .is_err()
            {
                return false;
            }
            done += chunk;
        }
        self.offset = self.offset.saturating_add(length);
        true
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            1 => {
                for b in data.iter_mut() {
                    *b = self.read_byte();
                }
            }
            4..=11 => {
                let start = (offset - 4) as usize;
                for (i, b) in data.iter_mut().enumerate() {
                    *b = DMA_SIGNATURE.get(start + i).copied().unwrap_or(0);
                }
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 2) => self.select(u16::from_le_bytes([data[0], data[1]])),
            (0, 1) => self.select(u16::from(data[0])),
            (4, 4) => self.dma_high = u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
            (8, 4) => {
                let low = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                let at = (u64::from(self.dma_high) << 32) | u64::from(low);
                self.dma_high = 0;
                self.dma(at);
            }
            // Data-port writes (deprecated in QEMU) and odd sizes: ignored.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: usize = 1 << 20;

    fn dev() -> FwCfg {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
        FwCfg::new(mem)
    }

    fn read_item(f: &mut FwCfg, key: u16, n: usize) -> Vec<u8> {
        f.write(0, &key.to_le_bytes());
        let mut out = vec![0u8; n];
        for b in out.iter_mut() {
            let mut x = [0u8];
            f.read(1, &mut x);
            *b = x[0];
        }
        out
    }

    /// Writes an access structure at `at` and starts it; returns control.
    fn dma(f: &mut FwCfg, at: u64, control: u32, length: u32, address: u64) -> u32 {
        let mut s = control.to_be_bytes().to_vec();
        s.extend_from_slice(&length.to_be_bytes());
        s.extend_from_slice(&address.to_be_bytes());
        f.mem.write_slice(&s, GuestAddress(at)).unwrap();
        f.write(4, &((at >> 32) as u32).to_be_bytes());
        f.write(8, &(at as u32).to_be_bytes());
        let mut c = [0u8; 4];
        f.mem.read_slice(&mut c, GuestAddress(at)).unwrap();
        u32::from_be_bytes(c)
    }

    #[test]
    fn signature_id_and_dma_signature() {
        let mut f = dev();
        assert_eq!(read_item(&mut f, keys::SIGNATURE, 4), b"QEMU");
        assert_eq!(
            read_item(&mut f, keys::SIGNATURE, 6),
            b"QEMU\0\0",
            "zeros past the end"
        );
        let id = read_item(&mut f, keys::ID, 4);
        assert_eq!(u32::from_le_bytes(id.try_into().unwrap()) & ID_DMA, ID_DMA);
        let mut sig = [0u8; 4];
        f.read(4, &mut sig);
        assert_eq!(&sig, b"QEMU");
        f.read(8, &mut sig);
        assert_eq!(&sig, b" CFG");
        assert_eq!(
            read_item(&mut f, 0x1234, 2),
            [0, 0],
            "unknown key reads zeros"
        );
    }

    #[test]
    fn directory_lists_files_with_keys_and_sizes() {
        let mut f = dev();
        let k1 = f.add_file("etc/e820", vec![1; 40]).unwrap();
        let k2 = f.add_file("bootorder", b"/x\n".to_vec()).unwrap();
        assert_eq!((k1, k2), (keys::FILE_FIRST, keys::FILE_FIRST + 1));
        let dir = read_item(&mut f, keys::FILE_DIR, 4 + 2 * 64);
        assert_eq!(u32::from_be_bytes(dir[0..4].try_into().unwrap()), 2);
        let e = &dir[4..68];
        assert_eq!(u32::from_be_bytes(e[0..4].try_into().unwrap()), 40);
        assert_eq!(u16::from_be_bytes(e[4..6].try_into().unwrap()), k1);
        assert_eq!(&e[8..17], b"etc/e820\0");
        assert_eq!(&dir[68 + 8..68 + 18], b"bootorder\0");
        assert_eq!(read_item(&mut f, k2, 3), b"/x\n");
        assert_eq!(
            f.add_file("bootorder", vec![]),
            Err(Error::Duplicate("bootorder".into()))
        );
        assert!(f.add_file("", vec![]).is_err());
        assert!(f.add_file(&"n".repeat(56), vec![]).is_err());
        f.add_file(&"n".repeat(55), vec![]).unwrap();
    }

    #[test]
    fn dma_select_read_and_skip() {
        let mut f = dev();
        let key = f
            .add_file("etc/boot-fail-wait", 7u32.to_le_bytes().to_vec())
            .unwrap();
        let ctl = (u32::from(key) << 16) | DMA_SELECT | DMA_READ;
        assert_eq!(dma(&mut f, 0x1000, ctl, 8, 0x2000), 0, "done, no error");
        let mut out = [0xaau8; 8];
        f.mem.read_slice(&mut out, GuestAddress(0x2000)).unwrap();
        assert_eq!(out, [7, 0, 0, 0, 0, 0, 0, 0], "zero-filled past the end");
        // Skip then read on the signature.
        let ctl = DMA_SELECT | DMA_SKIP;
        assert_eq!(dma(&mut f, 0x1000, ctl, 2, 0), 0);
        assert_eq!(dma(&mut f, 0x1000, DMA_READ, 2, 0x3000), 0);
        let mut out = [0u8; 2];
        f.mem.read_slice(&mut out, GuestAddress(0x3000)).unwrap();
        assert_eq!(&out, b"MU");
    }

    #[test]
    fn hostile_dma_sets_the_error_bit() {
        let mut f = dev();
        let sel = DMA_SELECT | DMA_READ;
        // Destination outside guest memory.
        assert_eq!(
            dma(&mut f, 0x1000, sel, 4, RAM as u64 - 2) & DMA_ERROR,
            DMA_ERROR
        );
        assert_eq!(
            dma(&mut f, 0x1000, sel, 4, u64::MAX - 1) & DMA_ERROR,
            DMA_ERROR
        );
        // A huge length runs off the end of memory: error, no panic.
        assert_eq!(
            dma(&mut f, 0x1000, sel, u32::MAX, 0x8000) & DMA_ERROR,
            DMA_ERROR
        );
        // Writes are refused.
        assert_eq!(
            dma(&mut f, 0x1000, DMA_WRITE, 4, 0x2000) & DMA_ERROR,
            DMA_ERROR
        );
        // An access structure outside memory is dropped.
        f.write(4, &0xffff_ffffu32.to_be_bytes());
        f.write(8, &0xffff_fff0u32.to_be_bytes());
        // Odd port accesses.
        f.write(0, &[]);
        f.write(1, &[1, 2, 3]);
        f.write(8, &[1, 2]);
        f.write(99, &[1]);
        let mut b = [0u8; 16];
        f.read(11, &mut b);
        f.read(99, &mut b);
        f.read(1, &mut []);
        // Skipping far then reading gives zeros, not a panic.
        f.write(0, &keys::SIGNATURE.to_le_bytes());
        assert_eq!(dma(&mut f, 0x1000, DMA_SKIP, u32::MAX, 0), 0);
        assert_eq!(read_item(&mut f, 0xffff, 1), [0]);
    }
}

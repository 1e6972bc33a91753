//! The qcow2 header (QEMU's `docs/interop/qcow2.txt`, "Header" and
//! "Header extensions"), parsed by us with every field bounds-checked.
//!
//! Read before the image is handed to the qcow2 engine, to refuse what it
//! must not open with a clear message (encryption, external data files,
//! the corrupt bit, a dirty image, zstd, extended L2 entries), to find the
//! backing file and its format (in v2 images too), and for `vt image info`.
//! All integers are big-endian.

use std::fs::File;
use std::io;

/// `QFI\xfb`.
pub const MAGIC: u32 = 0x5146_49fb;
/// Smallest and largest cluster sizes, as log2 (512 B – 2 MiB).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// See [`MIN_CLUSTER_BITS`].
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Longest backing file name QEMU accepts.
pub const MAX_BACKING_NAME: u32 = 1023;

/// Incompatible feature bits.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// The image is known to be corrupt.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// The compression type field is set (zstd).
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Extended L2 entries (subclusters).
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Compatible feature bit: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_DATA_FILE: u32 = 0x4441_5441;
const EXT_CRYPTO: u32 = 0x0537_be77;

/// Why a qcow2 header cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("cannot read the qcow2 header")]
    Read(#[source] io::Error),
    #[error("not a qcow2 image (bad magic)")]
    Magic,
    #[error("qcow2 version {0} is not supported (2 and 3 are)")]
    Version(u32),
    #[error("qcow2 header is truncated or malformed: {0}")]
    Malformed(&'static str),
    #[error("cluster size 2^{0} is outside 512 B - 2 MiB")]
    ClusterSize(u32),
    #[error("encrypted qcow2 images are not supported")]
    Encrypted,
    #[error("qcow2 images with an external data file are not supported")]
    DataFile,
    #[error("zstd-compressed qcow2 images are not supported")]
    Zstd,
    #[error("qcow2 images with extended L2 entries (subclusters) are not supported")]
    ExtendedL2,
    #[error("qcow2 image has unknown incompatible features {0:#x}")]
    Unknown(u64),
    #[error("qcow2 image is marked corrupt; repair it with `qemu-img check -r all` first")]
    Corrupt,
    #[error("qcow2 image is dirty (not closed cleanly with lazy refcounts); open it writable once, or repair it with `vt image check -r all`")]
    Dirty,
}

/// A parsed qcow2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// The backing file name as stored (relative to the image's directory
    /// unless absolute).
    pub backing_file: Option<String>,
    /// The backing format from the header extension (`"raw"`, `"qcow2"`).
    pub backing_format: Option<String>,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// 0 none, 1 AES, 2 LUKS.
    pub crypt_method: u32,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// Host offset of the L1 table.
    pub l1_table_offset: u64,
    /// Host offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters the refcount table occupies.
    pub refcount_table_clusters: u32,
    /// Internal snapshots.
    pub nb_snapshots: u32,
    /// Host offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits (v3; 0 in v2).
    pub incompatible: u64,
    /// Compatible feature bits (v3; 0 in v2).
    pub compatible: u64,
    /// log2 of the refcount width in bits (4 in v2: 16 bits).
    pub refcount_order: u32,
    /// Whether an encryption header extension is present.
    pub crypto_ext: bool,
    /// Whether an external data file name extension is present.
    pub data_file_ext: bool,
}

fn be32(b: &[u8], at: usize) -> Result<u32, HeaderError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or(HeaderError::Malformed("short header"))
}

fn be64(b: &[u8], at: usize) -> Result<u64, HeaderError> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(HeaderError::Malformed("short header"))
}

impl Header {
    /// Parses the header from the image's first bytes (`b` should hold
    /// the first cluster, or all of the file if it is shorter).
    pub fn parse(b: &[u8]) -> Result<Header, HeaderError> {
        if be32(b, 0).map_err(|_| HeaderError::Magic)? != MAGIC {
            return Err(HeaderError::Magic);
        }
        let version = be32(b, 4)?;
        if !(2..=3).contains(&version) {
            return Err(HeaderError::Version(version));
        }
        let cluster_bits = be32(b, 20)?;
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(HeaderError::ClusterSize(cluster_bits));
        }
        let cluster = 1usize << cluster_bits;
        let (incompatible, compatible, refcount_order, header_length) = if version == 3 {
            let len = be32(b, 100)?;
            if len < 104 || len as usize > cluster || !len.is_multiple_of(8) {
                return Err(HeaderError::Malformed("header_length"));
            }
            (be64(b, 72)?, be64(b, 80)?, be32(b, 96)?, len as usize)
        } else {
            (0, 0, 4, 72)
        };
        if refcount_order > 6 {
            return Err(HeaderError::Malformed("refcount_order"));
        }
        let mut h = Header {
            version,
            backing_file: None,
            backing_format: None,
            cluster_bits,
            size: be64(b, 24)?,
            crypt_method: be32(b, 32)?,
            l1_size: be32(b, 36)?,
            l1_table_offset: be64(b, 40)?,
            refcount_table_offset: be64(b, 48)?,
            refcount_table_clusters: be32(b, 56)?,
            nb_snapshots: be32(b, 60)?,
            snapshots_offset: be64(b, 64)?,
            incompatible,
            compatible,
            refcount_order,
            crypto_ext: false,
            data_file_ext: false,
        };
        let backing_offset = be64(b, 8)?;
        let backing_len = be32(b, 16)?;
        if backing_offset != 0 {
            if backing_len > MAX_BACKING_NAME {
                return Err(HeaderError::Malformed("backing file name too long"));
            }
            let end = backing_offset
                .checked_add(u64::from(backing_len))
                .filter(|e| *e <= cluster as u64)
                .ok_or(HeaderError::Malformed(
                    "backing file name outside the first cluster",
                ))?;
            let name = b
                .get(backing_offset as usize..end as usize)
                .ok_or(HeaderError::Malformed("short header"))?;
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| HeaderError::Malformed("backing file name is not UTF-8"))?;
            h.backing_file = Some(name);
        }
        // Extensions end at the backing file name when it follows them.
        let end = match backing_offset {
            0 => cluster,
            o => (o as usize).min(cluster),
        };
        h.parse_extensions(b, header_length, end)?;
        Ok(h)
    }

    /// Header extensions from `start` up to `end` (v2 images have them too,
    /// up to the backing name). Running into `end` ends the list, as in
    /// QEMU.
    fn parse_extensions(&mut self, b: &[u8], start: usize, end: usize) -> Result<(), HeaderError> {
        let mut at = start;
        loop {
            if at + 8 > end {
                return Ok(());
            }
            let kind = be32(b, at)?;
            let len = be32(b, at + 4)? as usize;
            at += 8;
            if kind == EXT_END {
                return Ok(());
            }
            let data = b
                .get(at..at.saturating_add(len))
                .filter(|_| at + len <= end)
                .ok_or(HeaderError::Malformed(
                    "header extension exceeds the first cluster",
                ))?;
            match kind {
                EXT_BACKING_FORMAT => {
                    let f = String::from_utf8(data.to_vec())
                        .map_err(|_| HeaderError::Malformed("backing format is not UTF-8"))?;
                    self.backing_format = Some(f);
                }
                EXT_DATA_FILE => self.data_file_ext = true,
                EXT_CRYPTO => self.crypto_ext = true,
                _ => {}
            }
            at += len.next_multiple_of(8);
        }
    }

    /// Reads and parses the header of `file` (its first cluster; 2 MiB at
    /// most).
    pub fn read(file: &File) -> Result<Header, HeaderError> {
        let mut b = vec![0u8; 1 << MAX_CLUSTER_BITS];
        let got = crate::read_prefix(file, &mut b).map_err(HeaderError::Read)?;
        b.truncate(got);
        Header::parse(&b)
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Refcount width in bits.
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }

    /// The dirty bit (refcounts may be stale: lazy refcounts, unclean close).
    pub fn dirty(&self) -> bool {
        self.incompatible & INCOMPAT_DIRTY != 0
    }

    /// The corrupt bit.
    pub fn corrupt(&self) -> bool {
        self.incompatible & INCOMPAT_CORRUPT != 0
    }

    /// The lazy refcounts compatible bit.
    pub fn lazy_refcounts(&self) -> bool {
        self.compatible & COMPAT_LAZY_REFCOUNTS != 0
    }

    /// `"0.10"` (v2) or `"1.1"` (v3), as QEMU names them.
    pub fn compat(&self) -> &'static str {
        if self.version == 2 {
            "0.10"
        } else {
            "1.1"
        }
    }

    /// Refuses what we cannot open: encryption, an external data file,
    /// zstd, extended L2, unknown incompatible bits always; the corrupt
    /// bit and the dirty bit always too (the engine would need to rebuild
    /// refcounts first; QEMU opens a corrupt image read-only only).
    pub fn check_usable(&self) -> Result<(), HeaderError> {
        if self.crypt_method != 0 || self.crypto_ext {
            return Err(HeaderError::Encrypted);
        }
        if self.incompatible & INCOMPAT_DATA_FILE != 0 || self.data_file_ext {
            return Err(HeaderError::DataFile);
        }
        if self.incompatible & INCOMPAT_COMPRESSION != 0 {
            return Err(HeaderError::Zstd);
        }
        if self.incompatible & INCOMPAT_EXTL2 != 0 {
            return Err(HeaderError::ExtendedL2);
        }
        let known = INCOMPAT_DIRTY | INCOMPAT_CORRUPT;
        if self.incompatible & !known != 0 {
            return Err(HeaderError::Unknown(self.incompatible & !known));
        }
        if self.corrupt() {
            return Err(HeaderError::Corrupt);
        }
        if self.dirty() {
            return Err(HeaderError::Dirty);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid v3 header in a 64 KiB first cluster (1 GiB disk).
    pub(crate) fn v3() -> Vec<u8> {
        let mut b = vec![0u8; 65536];
        b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[20..24].copy_from_slice(&16u32.to_be_bytes());
        b[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        b[96..100].copy_from_slice(&4u32.to_be_bytes());
        b[100..104].copy_from_slice(&112u32.to_be_bytes());
        b
    }

    #[test]
    fn parses_and_refuses() {
        let h = Header::parse(&v3()).unwrap();
        assert_eq!((h.version, h.size, h.cluster_size()), (3, 1 << 30, 65536));
        h.check_usable().unwrap();
        let mut b = v3();
        b[20..24].copy_from_slice(&30u32.to_be_bytes());
        assert!(matches!(
            Header::parse(&b),
            Err(HeaderError::ClusterSize(30))
        ));
        let mut b = v3();
        b[32..36].copy_from_slice(&1u32.to_be_bytes());
        let e = Header::parse(&b).unwrap().check_usable().unwrap_err();
        assert_eq!(e.to_string(), "encrypted qcow2 images are not supported");
        for (bit, want) in [
            (1u64, "dirty"),
            (2, "corrupt"),
            (4, "external data file"),
            (8, "zstd"),
        ] {
            let mut b = v3();
            b[72..80].copy_from_slice(&bit.to_be_bytes());
            let e = Header::parse(&b).unwrap().check_usable().unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn hostile_headers_are_errors() {
        // Truncated at every length: an error, never a panic.
        let full = v3();
        for n in 0..120 {
            let _ = Header::parse(&full[..n]);
        }
        // Backing name pointing past the first cluster.
        let mut b = v3();
        b[8..16].copy_from_slice(&65530u64.to_be_bytes());
        b[16..20].copy_from_slice(&100u32.to_be_bytes());
        assert!(matches!(Header::parse(&b), Err(HeaderError::Malformed(_))));
        // An extension with an absurd length.
        let mut b = v3();
        b[112..116].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        b[116..120].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Header::parse(&b), Err(HeaderError::Malformed(_))));
        // header_length beyond the cluster.
        let mut b = v3();
        b[100..104].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Header::parse(&b), Err(HeaderError::Malformed(_))));
    }
}

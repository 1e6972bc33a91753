//! Rewriting the backing file reference of a qcow2 header (the name after
//! the header extensions and the backing format extension), as `qemu-img
//! rebase -u` does: the first cluster is rebuilt in memory (the fixed
//! header, every other extension kept byte for byte, the new backing
//! format extension, the end marker, the name) and written in one
//! `pwrite`, then synced.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::header::{Header, HeaderError, MAX_BACKING_NAME};

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;

/// Why the header could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum BackingError {
    #[error("cannot rewrite the image header")]
    Io(#[source] io::Error),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("backing file name longer than {MAX_BACKING_NAME} bytes")]
    NameTooLong,
    #[error("the header extensions and backing file name do not fit in the first cluster")]
    NoRoom,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The first cluster of an image, with its extensions located.
struct FirstCluster {
    bytes: Vec<u8>,
    header_len: usize,
    /// Each extension: its type and its bytes as stored (padded).
    exts: Vec<(u32, Vec<u8>)>,
    /// Where the end marker is (or the extensions stop).
    exts_end: usize,
    /// The backing name's offset (0: none).
    backing_off: usize,
}

impl FirstCluster {
    fn read(file: &File, h: &Header) -> Result<FirstCluster, BackingError> {
        let cs = h.cluster_size() as usize;
        let mut bytes = vec![0u8; cs];
        let got = crate::read_prefix(file, &mut bytes).map_err(BackingError::Io)?;
        bytes.truncate(got);
        let header_len = if h.version == 3 {
            be32(&bytes, 100).ok_or(HeaderError::Malformed("short header"))? as usize
        } else {
            72
        };
        let backing_off = bytes
            .get(8..16)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u64::from_be_bytes) as usize;
        let end = if backing_off == 0 {
            bytes.len()
        } else {
            backing_off.min(bytes.len())
        };
        let mut exts = Vec::new();
        let mut at = header_len;
        while at + 8 <= end {
            let (Some(kind), Some(len)) = (be32(&bytes, at), be32(&bytes, at + 4)) else {
                break;
            };
            if kind == EXT_END {
                break;
            }
            let total = 8 + (len as usize).next_multiple_of(8);
            let Some(raw) = bytes.get(at..at + total).filter(|_| at + total <= end) else {
                return Err(
                    HeaderError::Malformed("header extension exceeds the first cluster").into(),
                );
            };
            exts.push((kind, raw.to_vec()));
            at += total;
        }
        Ok(FirstCluster {
            bytes,
            header_len,
            exts,
            exts_end: at,
            backing_off,
        })
    }
}

/// Turns a freshly created version 3 image (16-bit refcounts, no lazy
/// refcounts, no data written) into version 2 (`compat=0.10`): the
/// header loses its v3 fields (extensions follow at byte 72), and L2
/// entries with the v3-only zero flag on an allocated cluster (metadata
/// preallocation) become plain allocated clusters, which read as zeros in
/// a new file.
pub(crate) fn downgrade_to_v2(file: &File) -> Result<(), BackingError> {
    let h = Header::read(file)?;
    if h.version != 3 || h.refcount_order != 4 || h.incompatible != 0 || h.compatible != 0 {
        return Err(HeaderError::Malformed("not a plain new version 3 image").into());
    }
    let cs = h.cluster_size();
    let mut l1 = vec![0u8; h.l1_size as usize * 8];
    file.read_exact_at(&mut l1, h.l1_table_offset)
        .map_err(BackingError::Io)?;
    let mut l2 = vec![0u8; cs as usize];
    for e in l1.chunks_exact(8) {
        let off =
            u64::from_be_bytes(e.try_into().unwrap_or_default()) & crate::refcount::OFFSET_MASK;
        if off == 0 {
            continue;
        }
        file.read_exact_at(&mut l2, off).map_err(BackingError::Io)?;
        let mut changed = false;
        for x in l2.chunks_exact_mut(8) {
            let v = u64::from_be_bytes((&*x).try_into().unwrap_or_default());
            if v & 1 != 0 {
                if v & crate::refcount::OFFSET_MASK == 0 {
                    return Err(
                        HeaderError::Malformed("unallocated zero cluster in a new image").into(),
                    );
                }
                x.copy_from_slice(&(v & !1).to_be_bytes());
                changed = true;
            }
        }
        if changed {
            file.write_all_at(&l2, off).map_err(BackingError::Io)?;
        }
    }
    let first = FirstCluster::read(file, &h)?;
    let mut new = first.bytes[..72.min(first.bytes.len())].to_vec();
    new[4..8].copy_from_slice(&2u32.to_be_bytes());
    for (_, raw) in &first.exts {
        new.extend_from_slice(raw);
    }
    new.extend([0u8; 8]);
    let name = h.backing_file.as_deref().unwrap_or("");
    let offset = if name.is_empty() { 0 } else { new.len() as u64 };
    new.extend(name.as_bytes());
    new[8..16].copy_from_slice(&offset.to_be_bytes());
    let used = first.exts_end + 8 + name.len();
    new.resize(new.len().max(used).min(cs as usize), 0);
    file.write_all_at(&new, 0).map_err(BackingError::Io)?;
    file.sync_all().map_err(BackingError::Io)?;
    Ok(())
}

/// Points the qcow2 image in `file` (open for writing, locked) at
/// `backing` (stored as given) in `format`, or at nothing with `None`.
pub fn set_backing(file: &File, backing: Option<(&str, &str)>) -> Result<(), BackingError> {
    let h = Header::read(file)?;
    if let Some((name, _)) = backing {
        if name.len() > MAX_BACKING_NAME as usize {
            return Err(BackingError::NameTooLong);
        }
    }
    let first = FirstCluster::read(file, &h)?;
    let mut exts = Vec::new();
    for (kind, raw) in &first.exts {
        if *kind != EXT_BACKING_FORMAT {
            exts.extend_from_slice(raw);
        }
    }
    let (old, at, header_len, backing_off, cs) = (
        first.bytes,
        first.exts_end,
        first.header_len,
        first.backing_off,
        h.cluster_size() as usize,
    );
    let mut new = old
        .get(..header_len)
        .ok_or(HeaderError::Malformed("short header"))?
        .to_vec();
    if let Some((_, format)) = backing {
        new.extend(EXT_BACKING_FORMAT.to_be_bytes());
        new.extend((format.len() as u32).to_be_bytes());
        new.extend(format.as_bytes());
        new.resize(new.len().next_multiple_of(8), 0);
    }
    new.extend(exts);
    new.extend([0u8; 8]); // end of extensions
    let (offset, len) = match backing {
        Some((name, _)) => {
            let o = new.len() as u64;
            new.extend(name.as_bytes());
            (o, name.len() as u32)
        }
        None => (0, 0),
    };
    if new.len() > cs {
        return Err(BackingError::NoRoom);
    }
    new[8..16].copy_from_slice(&offset.to_be_bytes());
    new[16..20].copy_from_slice(&len.to_be_bytes());
    // Clear what the old extensions and name used past the new end.
    let old_used = (at + 8).max(backing_off + h.backing_file.as_ref().map_or(0, |n| n.len()));
    new.resize(new.len().max(old_used.min(cs)), 0);
    file.write_all_at(&new, 0).map_err(BackingError::Io)?;
    file.sync_data().map_err(BackingError::Io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header tests' image plus an unknown extension that must survive.
    fn v3() -> Vec<u8> {
        let mut b = crate::header::tests::v3();
        b[112..116].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        b[116..120].copy_from_slice(&3u32.to_be_bytes());
        b[120..123].copy_from_slice(b"abc");
        b
    }

    fn file(bytes: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!(
            "vt-backing-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, bytes).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn sets_and_clears_the_backing_file() {
        let f = file(&v3());
        set_backing(&f, Some(("../base.raw", "raw"))).unwrap();
        let h = Header::read(&f).unwrap();
        assert_eq!(h.backing_file.as_deref(), Some("../base.raw"));
        assert_eq!(h.backing_format.as_deref(), Some("raw"));
        let mut ext = [0u8; 3];
        let mut at = 112;
        // The unknown extension is still there, after the format.
        while ext != *b"abc" && at < 200 {
            f.read_exact_at(&mut ext, at).unwrap();
            at += 1;
        }
        assert_eq!(&ext, b"abc");
        set_backing(&f, Some(("b.qcow2", "qcow2"))).unwrap();
        let h = Header::read(&f).unwrap();
        assert_eq!(h.backing_file.as_deref(), Some("b.qcow2"));
        assert_eq!(h.backing_format.as_deref(), Some("qcow2"));
        set_backing(&f, None).unwrap();
        let h = Header::read(&f).unwrap();
        assert_eq!((h.backing_file, h.backing_format), (None, None));
    }

    #[test]
    fn hostile_headers_are_errors() {
        let long = "x".repeat(2000);
        assert!(matches!(
            set_backing(&file(&v3()), Some((&long, "raw"))),
            Err(BackingError::NameTooLong)
        ));
        let mut b = v3();
        b[116..120].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(set_backing(&file(&b), Some(("a", "raw"))).is_err());
        // A small cluster filled with extensions: no room for a name.
        let mut b = v3()[..512].to_vec();
        b[20..24].copy_from_slice(&9u32.to_be_bytes());
        b[116..120].copy_from_slice(&384u32.to_be_bytes());
        assert!(matches!(
            set_backing(&file(&b), Some(("a-name", "qcow2"))),
            Err(BackingError::NoRoom)
        ));
        for n in 0..130 {
            let _ = set_backing(&file(&v3()[..n]), Some(("a", "raw")));
        }
    }
}

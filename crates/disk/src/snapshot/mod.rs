//! Internal snapshots of a qcow2 image, read from its snapshot table
//! (`docs/interop/qcow2.txt`, "Snapshots"), for `vt image snapshot -l` and
//! `vt image info`; creating, applying and deleting them is [`edit`].

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::header::{Header, HeaderError};

pub mod edit;

/// One internal snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The unique ID string (`"1"`, `"2"`...).
    pub id: String,
    /// The name (tag).
    pub name: String,
    /// Creation time: seconds and nanoseconds since the epoch.
    pub date_sec: u32,
    /// See `date_sec`.
    pub date_nsec: u32,
    /// The guest's clock at the snapshot, in nanoseconds.
    pub vm_clock_nsec: u64,
    /// Bytes of saved VM state (0 for a disk-only snapshot).
    pub vm_state_size: u64,
    /// Instructions executed (record/replay), when stored.
    pub icount: Option<u64>,
}

/// Why the snapshot table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read {0}")]
    Io(String, #[source] io::Error),
    #[error("{0}")]
    Header(String, #[source] HeaderError),
    #[error("{0}: the snapshot table is truncated or malformed")]
    Table(String),
}

/// Most snapshots QEMU allows in one image.
const MAX_SNAPSHOTS: u32 = 65536;

fn be<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

/// Reads the snapshot table of the open qcow2 `file` whose header is `h`.
pub fn read_table(file: &File, h: &Header) -> Option<Vec<Snapshot>> {
    if h.nb_snapshots > MAX_SNAPSHOTS {
        return None;
    }
    let mut out = Vec::new();
    let mut at = h.snapshots_offset;
    for _ in 0..h.nb_snapshots {
        let mut fixed = [0u8; 40];
        file.read_exact_at(&mut fixed, at).ok()?;
        let id_len = usize::from(u16::from_be_bytes(be(&fixed, 12)?));
        let name_len = usize::from(u16::from_be_bytes(be(&fixed, 14)?));
        let extra_len = u32::from_be_bytes(be(&fixed, 36)?) as usize;
        if extra_len > 1024 {
            return None;
        }
        let mut rest = vec![0u8; extra_len + id_len + name_len];
        file.read_exact_at(&mut rest, at + 40).ok()?;
        let extra = &rest[..extra_len];
        let large_state = be::<8>(extra, 0).map(u64::from_be_bytes);
        let icount = be::<8>(extra, 16)
            .map(u64::from_be_bytes)
            .filter(|v| *v != u64::MAX);
        let text = |r: std::ops::Range<usize>| String::from_utf8_lossy(&rest[r]).into_owned();
        out.push(Snapshot {
            id: text(extra_len..extra_len + id_len),
            name: text(extra_len + id_len..rest.len()),
            date_sec: u32::from_be_bytes(be(&fixed, 16)?),
            date_nsec: u32::from_be_bytes(be(&fixed, 20)?),
            vm_clock_nsec: u64::from_be_bytes(be(&fixed, 24)?),
            vm_state_size: large_state.unwrap_or(u64::from(u32::from_be_bytes(be(&fixed, 32)?))),
            icount,
        });
        at = (at + 40 + rest.len() as u64).next_multiple_of(8);
    }
    Some(out)
}

/// The internal snapshots of the qcow2 image at `path`.
pub fn list(path: &Path) -> Result<Vec<Snapshot>, SnapshotError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| SnapshotError::Io(name.clone(), e))?;
    let h = Header::read(&file).map_err(|e| SnapshotError::Header(name.clone(), e))?;
    read_table(&file, &h).ok_or(SnapshotError::Table(name))
}

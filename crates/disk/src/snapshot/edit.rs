//! Creating, applying and deleting internal snapshots of a stopped qcow2
//! image, with `qemu-img snapshot -c|-a|-d`'s meanings
//! (`docs/interop/qcow2.txt`, "Snapshots"; QEMU's `block/qcow2-snapshot.c`):
//!
//! - create: the active L1 table is copied to new clusters and every
//!   cluster it references (L2 tables, data) gains a reference, so that
//!   later guest writes copy instead of overwriting; the new entry goes
//!   into a rewritten snapshot table, which the header then points at;
//! - apply: the snapshot's L1 table becomes the active one (its clusters
//!   gain a reference, the old active ones lose one);
//! - delete: the entry leaves the table, then its clusters lose their
//!   reference and its L1 copy is freed.
//!
//! Every step raises refcounts (flushed) before metadata points at the
//! clusters and lowers them only after it no longer does: a crash leaves
//! leaked clusters at worst (`vt image check -r leaks`). COPIED flags of
//! the active tables are recomputed at the end of each edit.
//!
//! The image must be consistent (`vt image check` finds no corruption)
//! and not dirty; it is locked exclusively throughout.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::check::{self, Repair};
use crate::header::Header;
use crate::refcount::{
    be64_at, l1_bytes, open_for_edit, read_l1, EditError, OpenEditError, Refcounts,
};

/// Most snapshots in one image and most bytes of snapshot table (QEMU's
/// limits).
const MAX_SNAPSHOTS: u32 = 65536;
const MAX_TABLE: u64 = 64 << 20;
/// Most extra data bytes per entry (QEMU's limit).
const MAX_EXTRA: u32 = 1024;

/// Why a snapshot edit failed.
#[derive(Debug, thiserror::Error)]
pub enum EditSnapshotError {
    #[error(transparent)]
    Open(#[from] OpenEditError),
    #[error("{0}")]
    Check(String, #[source] check::CheckError),
    #[error("{0} has {1} corruptions; repair it first (`vt image check -r all`)")]
    Corrupt(String, u64),
    #[error("{0}: {1}")]
    Edit(String, #[source] EditError),
    #[error("{0}: the snapshot table is truncated or malformed")]
    Table(String),
    #[error("{0}: no snapshot with ID or name '{1}'")]
    NotFound(String, String),
    #[error("{0}: a snapshot named '{1}' exists already")]
    Exists(String, String),
    #[error("{0}: snapshot names are 1 to 65535 bytes")]
    Name(String),
    #[error("{0}: snapshot '{1}' was taken at another virtual size or holds VM state; applying it is not supported here")]
    Unsupported(String, String),
    #[error("{0}: too many snapshots")]
    TooMany(String),
}

/// One entry of the snapshot table, as stored.
struct Entry {
    raw: Vec<u8>,
    l1_off: u64,
    l1_size: u32,
    id: String,
    name: String,
    vm_state: bool,
    disk_size: Option<u64>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn be16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_be_bytes)
}

/// Reads the table: its entries and its length in bytes.
fn read_table(file: &File, h: &Header) -> Option<(Vec<Entry>, u64)> {
    if h.nb_snapshots > MAX_SNAPSHOTS {
        return None;
    }
    let mut out = Vec::new();
    let mut at = h.snapshots_offset;
    let mut total = 0u64;
    for _ in 0..h.nb_snapshots {
        let mut fixed = [0u8; 40];
        file.read_exact_at(&mut fixed, at).ok()?;
        let id_len = usize::from(be16(&fixed, 12));
        let name_len = usize::from(be16(&fixed, 14));
        let extra_len = be32(&fixed, 36);
        if extra_len > MAX_EXTRA {
            return None;
        }
        let len = (40 + extra_len as usize + id_len + name_len).next_multiple_of(8);
        total += len as u64;
        if total > MAX_TABLE {
            return None;
        }
        let mut raw = vec![0u8; len];
        // The padding of the last entry may lie past the file's end.
        let body = 40 + extra_len as usize + id_len + name_len;
        file.read_exact_at(&mut raw[..body], at).ok()?;
        let extra = raw.get(40..40 + extra_len as usize)?;
        let large_state = (extra.len() >= 8).then(|| be64_at(extra, 0));
        let disk_size = (extra.len() >= 16).then(|| be64_at(extra, 1));
        let text = |from: usize, n: usize| {
            raw.get(from..from + n)
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let id_at = 40 + extra_len as usize;
        out.push(Entry {
            l1_off: be64_at(&fixed, 0),
            l1_size: be32(&fixed, 8),
            id: text(id_at, id_len)?,
            name: text(id_at + id_len, name_len)?,
            vm_state: be32(&fixed, 32) != 0 || large_state.is_some_and(|s| s != 0),
            disk_size,
            raw,
        });
        at += len as u64;
    }
    Some((out, total))
}

/// A new table entry: a disk-only snapshot of the active L1 at `l1_off`.
fn new_entry(l1_off: u64, l1_size: u32, id: &str, name: &str, disk_size: u64) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut e = Vec::new();
    e.extend(l1_off.to_be_bytes());
    e.extend(l1_size.to_be_bytes());
    e.extend((id.len() as u16).to_be_bytes());
    e.extend((name.len() as u16).to_be_bytes());
    e.extend((now.as_secs() as u32).to_be_bytes());
    e.extend(now.subsec_nanos().to_be_bytes());
    e.extend(0u64.to_be_bytes()); // vm_clock_nsec
    e.extend(0u32.to_be_bytes()); // vm_state_size
    e.extend(24u32.to_be_bytes()); // extra data: large vm state, disk size, icount
    e.extend(0u64.to_be_bytes());
    e.extend(disk_size.to_be_bytes());
    e.extend(u64::MAX.to_be_bytes()); // icount: not recorded
    e.extend(id.as_bytes());
    e.extend(name.as_bytes());
    e.resize(e.len().next_multiple_of(8), 0);
    e
}

/// An image opened for a snapshot edit: checked, locked, refcounts loaded.
struct Open {
    name: String,
    file: File,
    h: Header,
    entries: Vec<Entry>,
    table_len: u64,
}

fn open(path: &Path) -> Result<Open, EditSnapshotError> {
    let (file, h, name) = open_for_edit(path)?;
    let report = check::check_file(&file, &name, Repair::None)
        .map_err(|e| EditSnapshotError::Check(name.clone(), e))?;
    if report.corruptions > 0 {
        return Err(EditSnapshotError::Corrupt(name, report.corruptions));
    }
    let (entries, table_len) =
        read_table(&file, &h).ok_or_else(|| EditSnapshotError::Table(name.clone()))?;
    Ok(Open {
        name,
        file,
        h,
        entries,
        table_len,
    })
}

impl Open {
    fn err(&self) -> impl Fn(EditError) -> EditSnapshotError + '_ {
        |e| EditSnapshotError::Edit(self.name.clone(), e)
    }

    /// The entry whose ID, else whose name, is `what` (as QEMU finds it).
    fn find(&self, what: &str) -> Result<usize, EditSnapshotError> {
        self.entries
            .iter()
            .position(|e| e.id == what)
            .or_else(|| self.entries.iter().position(|e| e.name == what))
            .ok_or_else(|| EditSnapshotError::NotFound(self.name.clone(), what.to_string()))
    }

    /// Writes `entries` as the new snapshot table (new clusters), points
    /// the header at it, then frees the old table.
    fn replace_table(&self, r: &mut Refcounts, entries: &[&[u8]]) -> Result<(), EditError> {
        let bytes: Vec<u8> = entries.concat();
        let off = if bytes.is_empty() {
            0
        } else {
            let off = r.alloc(bytes.len() as u64)?;
            r.flush()?;
            self.file.write_all_at(&bytes, off)?;
            self.file.sync_data()?;
            off
        };
        let mut hdr = Vec::with_capacity(12);
        hdr.extend((entries.len() as u32).to_be_bytes());
        hdr.extend(off.to_be_bytes());
        self.file.write_all_at(&hdr, 60)?;
        self.file.sync_data()?;
        if self.h.nb_snapshots > 0 && self.table_len > 0 {
            r.free(self.h.snapshots_offset, self.table_len)?;
            r.flush()?;
        }
        Ok(())
    }

    /// Recomputes COPIED in the active L1 and its L2 tables.
    fn fix_active_flags(&self, r: &mut Refcounts) -> Result<(), EditError> {
        let mut l1 = read_l1(r, self.h.l1_table_offset, self.h.l1_size)?;
        let before = l1.clone();
        r.update_l1(&mut l1, self.h.cluster_bits, 0, true)?;
        if l1 != before {
            self.file
                .write_all_at(&l1_bytes(&l1), self.h.l1_table_offset)?;
            self.file.sync_data()?;
        }
        Ok(())
    }
}

/// `qemu-img snapshot -c NAME`: a disk-only internal snapshot of the
/// image's current content.
pub fn create(path: &Path, name: &str) -> Result<(), EditSnapshotError> {
    let o = open(path)?;
    if name.is_empty() || name.len() > usize::from(u16::MAX) {
        return Err(EditSnapshotError::Name(o.name));
    }
    if o.entries.iter().any(|e| e.name == name) {
        return Err(EditSnapshotError::Exists(o.name, name.to_string()));
    }
    if o.h.nb_snapshots >= MAX_SNAPSHOTS {
        return Err(EditSnapshotError::TooMany(o.name));
    }
    // IDs are the image's numbers: a table holding u64::MAX has no next one.
    let id = o
        .entries
        .iter()
        .filter_map(|e| e.id.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or_else(|| EditSnapshotError::TooMany(o.name.clone()))?;
    let err = o.err();
    let mut r = Refcounts::load(&o.file, &o.h).map_err(&err)?;
    let step = |r: &mut Refcounts| -> Result<(), EditError> {
        let mut l1 = read_l1(r, o.h.l1_table_offset, o.h.l1_size)?;
        // Every cluster the active L1 reaches gains a reference, and the
        // active tables lose COPIED where a cluster is now shared.
        r.update_l1(&mut l1, o.h.cluster_bits, 1, true)?;
        o.file.write_all_at(&l1_bytes(&l1), o.h.l1_table_offset)?;
        let copy = r.alloc(u64::from(o.h.l1_size) * 8)?;
        r.flush()?;
        o.file.write_all_at(&l1_bytes(&l1), copy)?;
        o.file.sync_data()?;
        let entry = new_entry(copy, o.h.l1_size, &id.to_string(), name, o.h.size);
        let mut all: Vec<&[u8]> = o.entries.iter().map(|e| e.raw.as_slice()).collect();
        all.push(&entry);
        o.replace_table(r, &all)
    };
    step(&mut r).map_err(&err)
}

/// `qemu-img snapshot -a SNAPSHOT` (ID or name): the image's content
/// becomes the snapshot's.
pub fn apply(path: &Path, what: &str) -> Result<(), EditSnapshotError> {
    let o = open(path)?;
    let i = o.find(what)?;
    let sn = &o.entries[i];
    if sn.vm_state || sn.disk_size.is_some_and(|s| s != o.h.size) || sn.l1_size > o.h.l1_size {
        return Err(EditSnapshotError::Unsupported(o.name.clone(), what.into()));
    }
    let err = o.err();
    let mut r = Refcounts::load(&o.file, &o.h).map_err(&err)?;
    let step = |r: &mut Refcounts| -> Result<(), EditError> {
        let mut new = read_l1(r, sn.l1_off, sn.l1_size)?;
        let mut old = read_l1(r, o.h.l1_table_offset, o.h.l1_size)?;
        r.update_l1(&mut new, o.h.cluster_bits, 1, false)?;
        new.resize(o.h.l1_size as usize, 0);
        let new: Vec<u64> = new.iter().map(|e| e & !crate::refcount::COPIED).collect();
        o.file.write_all_at(&l1_bytes(&new), o.h.l1_table_offset)?;
        o.file.sync_data()?;
        r.update_l1(&mut old, o.h.cluster_bits, -1, false)?;
        o.fix_active_flags(r)
    };
    step(&mut r).map_err(&err)
}

/// `qemu-img snapshot -d SNAPSHOT` (ID or name): the snapshot is gone
/// and the clusters only it used are free.
pub fn delete(path: &Path, what: &str) -> Result<(), EditSnapshotError> {
    let o = open(path)?;
    let i = o.find(what)?;
    let sn = &o.entries[i];
    let err = o.err();
    let mut r = Refcounts::load(&o.file, &o.h).map_err(&err)?;
    let step = |r: &mut Refcounts| -> Result<(), EditError> {
        let mut l1 = read_l1(r, sn.l1_off, sn.l1_size)?;
        let rest: Vec<&[u8]> = o
            .entries
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, e)| e.raw.as_slice())
            .collect();
        o.replace_table(r, &rest)?;
        r.update_l1(&mut l1, o.h.cluster_bits, -1, false)?;
        r.free(sn.l1_off, u64::from(sn.l1_size) * 8)?;
        r.flush()?;
        o.fix_active_flags(r)
    };
    step(&mut r).map_err(&err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_entries_parse_back() {
        let e = new_entry(0x30000, 2, "7", "before-upgrade", 1 << 30);
        assert_eq!(e.len() % 8, 0);
        assert_eq!(be64_at(&e, 0), 0x30000);
        assert_eq!(be32(&e, 8), 2);
        assert_eq!(be16(&e, 12), 1);
        assert_eq!(be16(&e, 14), 14);
        assert_eq!(be32(&e, 36), 24);
        assert_eq!(&e[64..65], b"7");
        assert_eq!(&e[65..79], b"before-upgrade");
    }
}

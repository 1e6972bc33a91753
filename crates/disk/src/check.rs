//! `vt image check`: a qcow2 consistency check, as `qemu-img check` does
//! it, with its repairs and exit-code meanings.
//!
//! Every cluster the metadata references (header, L1 tables of the active
//! image and of internal snapshots, L2 tables, data clusters, compressed
//! data, the refcount table and its blocks, the snapshot table) is
//! counted; the counts are compared with the refcounts stored on disk. A
//! stored refcount below the real one is a corruption (a write could
//! reuse a cluster still in use); above it, a leak (space wasted only).
//! References outside the file or unaligned are corruptions. Active L1/L2
//! entries must carry the COPIED flag exactly when the refcount is 1.
//!
//! Repairs (`-r leaks`, `-r all`) rewrite stored refcounts to the counted
//! ones where a refcount block exists; `-r all` also fixes lower counts
//! and then clears the dirty bit.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::header::{Header, HeaderError, INCOMPAT_DIRTY};
use crate::lock::{self, LockError, LockMode};

/// Which problems to repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Repair {
    /// Check only.
    #[default]
    None,
    /// Leaked clusters.
    Leaks,
    /// Leaks and refcounts that are too low.
    All,
}

/// The outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Corruptions left after repairs.
    pub corruptions: u64,
    /// Leaked clusters left after repairs.
    pub leaks: u64,
    /// Corruptions repaired.
    pub corruptions_fixed: u64,
    /// Leaks repaired.
    pub leaks_fixed: u64,
    /// One line per problem, in qemu-img's words.
    pub messages: Vec<String>,
    /// Guest clusters mapped in the active image / clusters the virtual
    /// disk has.
    pub allocated_clusters: u64,
    /// See `allocated_clusters`.
    pub total_clusters: u64,
    /// Compressed data clusters.
    pub compressed_clusters: u64,
    /// Data clusters not right after the previous one in the file.
    pub fragmented_clusters: u64,
    /// First byte after the last cluster in use.
    pub image_end_offset: u64,
}

/// Why the check could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot open {0}")]
    Io(String, #[source] io::Error),
    #[error("{0}")]
    Header(String, #[source] HeaderError),
    #[error("{0}: refcount width {1} is not supported by check (8, 16, 32, 64 are)")]
    RefcountWidth(String, u32),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{0}")]
    Size(String, #[source] crate::raw::RawError),
    #[error("{0}: {1} clusters are more than check counts")]
    TooLarge(String, u64),
}

/// Most host clusters a check counts (1 GiB of counters): a 64 TiB file
/// at 64 KiB clusters; a (sparse) file beyond it is refused.
const MAX_CLUSTERS: u64 = 1 << 29;

const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;

struct Checker {
    file: File,
    h: Header,
    cs: u64,
    file_len: u64,
    /// Counted references per host cluster (saturating: 2 bytes a
    /// cluster, 32 MiB for a 1 TiB file at 64 KiB clusters).
    refs: Vec<u16>,
    /// Active L1/L2 entries as (host offset they point to, COPIED flag).
    copied: Vec<(u64, bool)>,
    /// The previous active data cluster (fragmentation).
    last_data: Option<u64>,
    r: Report,
}

fn be64(b: &[u8], i: usize) -> u64 {
    b.get(i * 8..i * 8 + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

impl Checker {
    fn corrupt(&mut self, msg: String) {
        self.r.corruptions += 1;
        self.r.messages.push(format!("ERROR {msg}"));
    }

    /// Counts a reference to the host bytes `off..off+len`.
    fn refer(&mut self, what: &str, off: u64, len: u64) -> bool {
        let Some(end) = off
            .checked_add(len)
            .filter(|e| *e <= self.file_len.next_multiple_of(self.cs))
        else {
            self.corrupt(format!("{what} at {off:#x} is outside the image file"));
            return false;
        };
        let (first, last) = (off / self.cs, end.saturating_sub(1) / self.cs);
        for c in first..=last {
            if let Some(n) = self.refs.get_mut(c as usize) {
                *n = n.saturating_add(1);
            }
        }
        true
    }

    fn read(&self, off: u64, len: u64) -> Option<Vec<u8>> {
        let len = usize::try_from(len).ok()?;
        if off.checked_add(len as u64)? > self.file_len {
            return None;
        }
        let mut b = vec![0u8; len];
        self.file.read_exact_at(&mut b, off).ok()?;
        Some(b)
    }

    /// Walks one L1 table and everything below it.
    fn walk_l1(&mut self, l1_off: u64, l1_size: u32, active: bool) {
        let len = u64::from(l1_size) * 8;
        if !l1_off.is_multiple_of(self.cs) {
            self.corrupt(format!(
                "L1 table offset {l1_off:#x} is not cluster aligned"
            ));
            return;
        }
        // QEMU's QCOW_MAX_L1_SIZE (block/qcow2.h): a larger table is not
        // read (an image must not make the checker allocate for it).
        if len > 32 << 20 {
            self.corrupt(format!(
                "L1 table at {l1_off:#x} has {l1_size} entries, more than QEMU's limit of {}",
                (32u64 << 20) / 8
            ));
            return;
        }
        if !self.refer("L1 table", l1_off, len) {
            return;
        }
        let Some(l1) = self.read(l1_off, len) else {
            return;
        };
        let entries = self.cs / 8;
        for i in 0..l1_size as usize {
            let e = be64(&l1, i);
            let l2 = e & OFFSET_MASK;
            if l2 == 0 {
                continue;
            }
            if !l2.is_multiple_of(self.cs) {
                self.corrupt(format!("L2 table offset {l2:#x} is not cluster aligned"));
                continue;
            }
            if !self.refer("L2 table", l2, self.cs) {
                continue;
            }
            if active {
                self.copied.push((l2, e & COPIED != 0));
            }
            let Some(table) = self.read(l2, self.cs) else {
                continue;
            };
            for j in 0..entries as usize {
                self.l2_entry(be64(&table, j), active);
            }
        }
    }

    fn l2_entry(&mut self, e: u64, active: bool) {
        if e & COMPRESSED != 0 {
            let x = 62 - (self.h.cluster_bits - 8);
            let off = e & ((1u64 << x) - 1);
            let sectors = ((e >> x) & ((1u64 << (self.h.cluster_bits - 8)) - 1)) + 1;
            let len = (sectors * 512).saturating_sub(off & 511);
            if active {
                self.r.compressed_clusters += 1;
                self.r.allocated_clusters += 1;
            }
            self.refer("compressed cluster", off, len.max(1));
            return;
        }
        let off = e & OFFSET_MASK;
        if off == 0 {
            return;
        }
        if !off.is_multiple_of(self.cs) {
            self.corrupt(format!(
                "data cluster offset {off:#x} is not cluster aligned"
            ));
            return;
        }
        if self.refer("data cluster", off, self.cs) && active {
            self.copied.push((off, e & COPIED != 0));
            self.r.allocated_clusters += 1;
            if self.last_data.is_some_and(|l| l + self.cs != off) {
                self.r.fragmented_clusters += 1;
            }
            self.last_data = Some(off);
        }
    }

    fn snapshots(&mut self) {
        let mut at = self.h.snapshots_offset;
        let start = at;
        for _ in 0..self.h.nb_snapshots {
            let Some(fixed) = self.read(at, 40) else {
                self.corrupt("snapshot table is outside the image file".into());
                return;
            };
            let l1_off = be64(&fixed, 0);
            let l1_size = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
            let id = u64::from(u16::from_be_bytes([fixed[12], fixed[13]]));
            let name = u64::from(u16::from_be_bytes([fixed[14], fixed[15]]));
            let extra = u64::from(u32::from_be_bytes([
                fixed[36], fixed[37], fixed[38], fixed[39],
            ]));
            at = (at + 40 + extra + id + name).next_multiple_of(8);
            self.walk_l1(l1_off, l1_size, false);
        }
        if self.h.nb_snapshots > 0 {
            self.refer("snapshot table", start, at - start);
        }
    }

    /// The stored refcount of every cluster and where it lives: (value,
    /// byte offset of the entry, if a block exists).
    fn stored(&self, cluster: u64, rt: &[u8]) -> (u64, Option<u64>) {
        let bits = u64::from(self.h.refcount_bits());
        let per_block = self.cs * 8 / bits;
        let block = be64(rt, (cluster / per_block) as usize) & OFFSET_MASK;
        if block == 0 {
            return (0, None);
        }
        let at = block + (cluster % per_block) * bits / 8;
        let n = (bits / 8) as usize;
        match self.read(at, n as u64) {
            Some(b) => (
                b.iter().fold(0u64, |v, x| (v << 8) | u64::from(*x)),
                Some(at),
            ),
            None => (0, None),
        }
    }
}

/// Checks (and with `repair`, repairs) the qcow2 image at `path`.
pub fn check(path: &Path, repair: Repair) -> Result<Report, CheckError> {
    let name = path.display().to_string();
    let writable = repair != Repair::None;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .map_err(|e| CheckError::Io(name.clone(), e))?;
    let mode = if writable {
        LockMode::Exclusive
    } else {
        LockMode::Shared
    };
    lock::lock(&file, &name, mode)?;
    check_file(&file, &name, repair)
}

/// [`check`] on an open (and locked) file, shown as `name`; writable
/// when repairing.
pub fn check_file(file: &File, name: &str, repair: Repair) -> Result<Report, CheckError> {
    let name = name.to_string();
    let writable = repair != Repair::None;
    let file = file
        .try_clone()
        .map_err(|e| CheckError::Io(name.clone(), e))?;
    let h = Header::read(&file).map_err(|e| CheckError::Header(name.clone(), e))?;
    if h.refcount_bits() < 8 {
        return Err(CheckError::RefcountWidth(name, h.refcount_bits()));
    }
    // A block device's metadata says 0: its size is where it ends.
    let file_len = crate::raw::file_size(&file).map_err(|e| CheckError::Size(name.clone(), e))?;
    let cs = h.cluster_size();
    let nclusters = file_len.div_ceil(cs);
    if nclusters > MAX_CLUSTERS {
        return Err(CheckError::TooLarge(name, nclusters));
    }
    let mut c = Checker {
        file,
        cs,
        file_len,
        refs: vec![0; nclusters as usize],
        copied: Vec::new(),
        last_data: None,
        r: Report::default(),
        h,
    };
    c.refer("header", 0, cs);
    c.walk_l1(c.h.l1_table_offset, c.h.l1_size, true);
    c.snapshots();
    let rt_off = c.h.refcount_table_offset;
    let rt_len = u64::from(c.h.refcount_table_clusters) * cs;
    let rt = if rt_off.is_multiple_of(cs) && c.refer("refcount table", rt_off, rt_len) {
        c.read(rt_off, rt_len).unwrap_or_default()
    } else {
        Vec::new()
    };
    for i in 0..rt.len() / 8 {
        let b = be64(&rt, i) & OFFSET_MASK;
        if b != 0 && (!b.is_multiple_of(cs) || !c.refer("refcount block", b, cs)) {
            c.corrupt(format!("refcount block {i} at {b:#x} is invalid"));
        }
    }
    let mut fixes = Vec::new();
    for i in 0..nclusters {
        let want = u64::from(c.refs[i as usize]);
        let (have, at) = c.stored(i, &rt);
        if want > 0 {
            c.r.image_end_offset = (i + 1) * cs;
        }
        if have == want {
            continue;
        }
        let fixable =
            at.filter(|_| repair == Repair::All || (repair == Repair::Leaks && have > want));
        match (have > want, fixable) {
            (true, Some(at)) => {
                c.r.leaks_fixed += 1;
                fixes.push((at, want));
            }
            (true, None) => {
                c.r.leaks += 1;
                c.r.messages.push(format!(
                    "Leaked cluster {i} refcount={have} reference={want}"
                ));
            }
            (false, Some(at)) => {
                c.r.corruptions_fixed += 1;
                fixes.push((at, want));
            }
            (false, None) => c.corrupt(format!("cluster {i} refcount={have} reference={want}")),
        }
    }
    // COPIED must be set exactly on clusters referenced once.
    for (off, flag) in std::mem::take(&mut c.copied) {
        let refs = c.refs.get((off / cs) as usize).copied().unwrap_or(0);
        if flag != (refs == 1) {
            c.corrupt(format!("OFLAG_COPIED cluster {off:#x}: refcount={refs}"));
        }
    }
    c.r.total_clusters = c.h.size.div_ceil(cs);
    if writable {
        let bytes = (c.h.refcount_bits() / 8) as usize;
        for (at, v) in fixes {
            let be = v.to_be_bytes();
            c.file
                .write_all_at(&be[8 - bytes..], at)
                .map_err(|e| CheckError::Io(name.clone(), e))?;
        }
        if c.h.dirty() && c.r.corruptions == 0 && repair == Repair::All {
            let v = (c.h.incompatible & !INCOMPAT_DIRTY).to_be_bytes();
            c.file
                .write_all_at(&v, 72)
                .map_err(|e| CheckError::Io(name.clone(), e))?;
        }
        c.file
            .sync_all()
            .map_err(|e| CheckError::Io(name.clone(), e))?;
    }
    Ok(c.r)
}

impl Report {
    /// qemu-img's exit status: 0 clean, 2 corruptions, 3 leaks only.
    pub fn exit_code(&self) -> u8 {
        if self.corruptions > 0 {
            2
        } else if self.leaks > 0 {
            3
        } else {
            0
        }
    }

    /// The report in qemu-img's words.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for m in &self.messages {
            s.push_str(m);
            s.push('\n');
        }
        if self.leaks_fixed + self.corruptions_fixed > 0 {
            s.push_str(&format!(
                "The following inconsistencies were found and repaired:\n\n    {} leaked clusters\n    {} corruptions\n\n",
                self.leaks_fixed, self.corruptions_fixed
            ));
        }
        if self.corruptions > 0 {
            s.push_str(&format!(
                "\n{} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n",
                self.corruptions
            ));
        }
        if self.leaks > 0 {
            s.push_str(&format!(
                "\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n",
                self.leaks
            ));
        }
        if self.corruptions == 0 && self.leaks == 0 {
            s.push_str("No errors were found on the image.\n");
        }
        let total = self.total_clusters.max(1);
        let pct = |n: u64| n as f64 * 100.0 / total as f64;
        let frag = self.fragmented_clusters as f64 * 100.0 / self.allocated_clusters.max(1) as f64;
        s.push_str(&format!(
            "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters\nImage end offset: {}\n",
            self.allocated_clusters,
            self.total_clusters,
            pct(self.allocated_clusters),
            frag,
            pct(self.compressed_clusters),
            self.image_end_offset
        ));
        s
    }
}

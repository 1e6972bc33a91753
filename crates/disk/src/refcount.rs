//! Offline edits of a qcow2 image's refcounts (`docs/interop/qcow2.txt`,
//! "Host cluster management"), for the verbs that change metadata on a
//! stopped image (internal snapshots): read and update refcounts, allocate
//! and free clusters, and add or drop every reference one L1 table makes,
//! as QEMU's `qcow2_update_snapshot_refcount` does.
//!
//! Refcount blocks are cached and written back by [`Refcounts::flush`]
//! (then `fdatasync`): callers flush after raising refcounts and before
//! writing the metadata that uses the clusters, and drop references only
//! after the metadata no longer points at them, so that a crash in between
//! leaves leaked clusters, never a refcount below its real count.
//!
//! The image is untrusted: every offset is checked against the file, every
//! table read is bounded; a bad one is an [`EditError`], never a panic.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::header::{Header, HeaderError};
use crate::lock::{self, LockError, LockMode};

/// Host offset bits of an L1 or standard L2 entry.
pub(crate) const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// "Refcount is exactly 1" flag of L1 and standard L2 entries.
pub(crate) const COPIED: u64 = 1 << 63;
/// Compressed-cluster flag of L2 entries.
pub(crate) const COMPRESSED: u64 = 1 << 62;

/// Why an offline metadata edit failed.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("I/O error on the image")]
    Io(#[source] io::Error),
    #[error("image metadata is inconsistent: {0} (run `vt image check`)")]
    Corrupt(String),
    #[error("refcount width {0} bits is not supported here (8, 16, 32, 64 are)")]
    RefcountWidth(u32),
    #[error("the refcount table is full (it would have to grow); not supported here")]
    TableFull,
}

impl From<io::Error> for EditError {
    fn from(e: io::Error) -> Self {
        EditError::Io(e)
    }
}

fn corrupt(msg: impl Into<String>) -> EditError {
    EditError::Corrupt(msg.into())
}

/// Why an image could not be opened for an offline edit.
#[derive(Debug, thiserror::Error)]
pub enum OpenEditError {
    #[error("cannot open {0}")]
    Io(String, #[source] io::Error),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{0}")]
    Header(String, #[source] HeaderError),
}

/// Opens the qcow2 image at `path` for an offline edit: read-write,
/// locked exclusively (a running VMM or QEMU holding it is refused), its
/// header parsed and usable (not dirty, corrupt, encrypted...). Returns the
/// file, the header and the name errors use.
pub fn open_for_edit(path: &std::path::Path) -> Result<(File, Header, String), OpenEditError> {
    let name = path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| OpenEditError::Io(name.clone(), e))?;
    lock::lock(&file, &name, LockMode::Exclusive)?;
    let h = Header::read(&file).map_err(|e| OpenEditError::Header(name.clone(), e))?;
    h.check_usable()
        .map_err(|e| OpenEditError::Header(name.clone(), e))?;
    Ok((file, h, name))
}

/// Big-endian u64 number `i` of `b` (0 past its end).
pub(crate) fn be64_at(b: &[u8], i: usize) -> u64 {
    b.get(i * 8..i * 8 + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The refcounts of one open, exclusively locked, writable qcow2 image.
pub struct Refcounts<'a> {
    file: &'a File,
    cs: u64,
    bits: u64,
    table_off: u64,
    /// Refcount table entries (block offsets, 0 = none).
    table: Vec<u64>,
    /// Loaded refcount blocks by table index, and whether changed.
    blocks: BTreeMap<u64, (Vec<u8>, bool)>,
    /// End of the file, in bytes (grows as clusters are appended).
    end: u64,
}

impl<'a> Refcounts<'a> {
    /// Reads the refcount table of `file`, whose header is `h`.
    pub fn load(file: &'a File, h: &Header) -> Result<Refcounts<'a>, EditError> {
        let bits = u64::from(h.refcount_bits());
        if bits < 8 {
            return Err(EditError::RefcountWidth(h.refcount_bits()));
        }
        let cs = h.cluster_size();
        let end = crate::raw::file_size(file).map_err(|e| EditError::Io(io::Error::other(e)))?;
        let len = u64::from(h.refcount_table_clusters) * cs;
        if !h.refcount_table_offset.is_multiple_of(cs)
            || len > 64 << 20
            || h.refcount_table_offset.saturating_add(len) > end
        {
            return Err(corrupt("refcount table outside the file"));
        }
        let mut raw = vec![0u8; len as usize];
        file.read_exact_at(&mut raw, h.refcount_table_offset)?;
        let table = (0..raw.len() / 8).map(|i| be64_at(&raw, i)).collect();
        Ok(Refcounts {
            file,
            cs,
            bits,
            table_off: h.refcount_table_offset,
            table,
            blocks: BTreeMap::new(),
            end: end.next_multiple_of(cs),
        })
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.cs
    }

    fn per_block(&self) -> u64 {
        self.cs * 8 / self.bits
    }

    /// The cached block holding cluster `c`'s refcount (`None`: no block).
    fn block(&mut self, c: u64) -> Result<Option<&mut (Vec<u8>, bool)>, EditError> {
        let bi = c / self.per_block();
        let Some(&entry) = self.table.get(bi as usize) else {
            return Ok(None);
        };
        let off = entry & OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        if !self.blocks.contains_key(&bi) {
            if !off.is_multiple_of(self.cs) || off.saturating_add(self.cs) > self.end {
                return Err(corrupt(format!("refcount block {bi} at {off:#x}")));
            }
            let mut b = vec![0u8; self.cs as usize];
            self.file.read_exact_at(&mut b, off)?;
            self.blocks.insert(bi, (b, false));
        }
        Ok(self.blocks.get_mut(&bi))
    }

    fn slot(&self, c: u64) -> std::ops::Range<usize> {
        let n = (self.bits / 8) as usize;
        let at = (c % self.per_block()) as usize * n;
        at..at + n
    }

    /// The refcount of host cluster `c` (0 where no block exists).
    pub fn get(&mut self, c: u64) -> Result<u64, EditError> {
        let r = self.slot(c);
        Ok(match self.block(c)? {
            Some((b, _)) => b
                .get(r)
                .map_or(0, |s| s.iter().fold(0, |v, x| (v << 8) | u64::from(*x))),
            None => 0,
        })
    }

    fn set(&mut self, c: u64, v: u64) -> Result<(), EditError> {
        let r = self.slot(c);
        let n = r.len();
        let Some((b, dirty)) = self.block(c)? else {
            return Err(corrupt(format!("cluster {c} has no refcount block")));
        };
        if let Some(s) = b.get_mut(r) {
            s.copy_from_slice(&v.to_be_bytes()[8 - n..]);
            *dirty = true;
        }
        Ok(())
    }

    /// Adds `addend` to cluster `c`'s refcount; returns the new value.
    pub fn add(&mut self, c: u64, addend: i64) -> Result<u64, EditError> {
        let old = self.get(c)?;
        let max = if self.bits == 64 {
            u64::MAX
        } else {
            (1 << self.bits) - 1
        };
        let new = old
            .checked_add_signed(addend)
            .filter(|n| *n <= max)
            .ok_or_else(|| corrupt(format!("refcount of cluster {c} would leave 0..={max}")))?;
        if new != old {
            self.set(c, new)?;
        }
        Ok(new)
    }

    /// Adds `addend` to every cluster the host bytes `off..off+len` touch.
    pub fn add_range(&mut self, off: u64, len: u64, addend: i64) -> Result<(), EditError> {
        let end = off
            .checked_add(len.max(1))
            .filter(|e| *e <= self.end)
            .ok_or_else(|| corrupt(format!("reference at {off:#x} is outside the file")))?;
        for c in off / self.cs..=(end - 1) / self.cs {
            self.add(c, addend)?;
        }
        Ok(())
    }

    /// Allocates `len` bytes (whole clusters, contiguous, refcount 1):
    /// the first free run in the file, else appended at its end (with a
    /// new refcount block where one is missing). Returns the host offset.
    pub fn alloc(&mut self, len: u64) -> Result<u64, EditError> {
        let n = len.div_ceil(self.cs).max(1);
        let mut start = 1; // cluster 0 is the header
        let mut c = start;
        while c - start < n {
            let free = match self.block(c)? {
                Some(_) => self.get(c)? == 0,
                // Past the file's end a missing block is made (there, at
                // `c`); inside it, a cluster without one is not usable.
                None => {
                    if c * self.cs >= self.end {
                        self.new_block(c)?;
                    }
                    false
                }
            };
            c += 1;
            if !free {
                start = c;
            }
        }
        for c in start..start + n {
            self.add(c, 1)?;
        }
        self.end = self.end.max((start + n) * self.cs);
        Ok(start * self.cs)
    }

    /// Makes a refcount block at cluster `c` (past the file's end) for the
    /// range of clusters holding `c`, counting itself.
    fn new_block(&mut self, c: u64) -> Result<(), EditError> {
        let bi = c / self.per_block();
        if bi as usize >= self.table.len() {
            return Err(EditError::TableFull);
        }
        let off = c * self.cs;
        let zeros = vec![0u8; self.cs as usize];
        self.file.write_all_at(&zeros, off)?;
        self.end = self.end.max(off + self.cs);
        self.blocks.insert(bi, (zeros, true));
        if let Some(t) = self.table.get_mut(bi as usize) {
            *t = off;
        }
        self.set(c, 1)?;
        // The block reaches the disk before the table points at it.
        self.flush()?;
        self.file
            .write_all_at(&off.to_be_bytes(), self.table_off + bi * 8)?;
        self.file.sync_data()?;
        Ok(())
    }

    /// Drops one reference to each cluster of `off..off+len`.
    pub fn free(&mut self, off: u64, len: u64) -> Result<(), EditError> {
        self.add_range(off, len, -1)
    }

    /// Writes changed refcount blocks and syncs the file.
    pub fn flush(&mut self) -> Result<(), EditError> {
        for (bi, (b, dirty)) in self.blocks.iter_mut() {
            if *dirty {
                let off = self.table.get(*bi as usize).copied().unwrap_or(0) & OFFSET_MASK;
                self.file.write_all_at(b, off)?;
                *dirty = false;
            }
        }
        self.file.sync_data()?;
        Ok(())
    }

    /// Reads `len` bytes at `off`, which must lie inside the file.
    pub fn read(&self, off: u64, len: u64) -> Result<Vec<u8>, EditError> {
        if off.checked_add(len).is_none_or(|e| e > self.end) || len > 1 << 30 {
            return Err(corrupt(format!("table at {off:#x} is outside the file")));
        }
        let mut b = vec![0u8; len as usize];
        self.file.read_exact_at(&mut b, off)?;
        Ok(b)
    }

    /// Adds `addend` (+1, -1, or 0 to only recount) to the refcount of every
    /// L2 table and data cluster the L1 table `l1` (its entries) points at.
    /// With `flags`, sets COPIED in `l1` and in those L2 tables exactly on
    /// entries whose cluster's refcount is then 1 (the active L1), writing
    /// changed L2 tables; the caller writes `l1` back.
    ///
    /// Refcounts are flushed before any L2 table is rewritten.
    pub fn update_l1(
        &mut self,
        l1: &mut [u64],
        cluster_bits: u32,
        addend: i64,
        flags: bool,
    ) -> Result<(), EditError> {
        let mut rewrites = Vec::new();
        for e in l1.iter_mut() {
            let l2 = *e & OFFSET_MASK;
            if l2 == 0 {
                continue;
            }
            if !l2.is_multiple_of(self.cs) {
                return Err(corrupt(format!("L2 table at {l2:#x} is not aligned")));
            }
            let mut table = self.read(l2, self.cs)?;
            let mut changed = false;
            for j in 0..(self.cs / 8) as usize {
                let old = be64_at(&table, j);
                let mut new = old & !COPIED;
                let refcount = if old & COMPRESSED != 0 {
                    if addend != 0 {
                        let (off, len) = compressed_range(old, cluster_bits);
                        self.add_range(off, len, addend)?;
                    }
                    2 // compressed clusters never carry COPIED
                } else {
                    let off = old & OFFSET_MASK;
                    if off == 0 {
                        0
                    } else if !off.is_multiple_of(self.cs) {
                        return Err(corrupt(format!("data cluster at {off:#x} is not aligned")));
                    } else if off >= self.end {
                        return Err(corrupt(format!(
                            "data cluster at {off:#x} is outside the file"
                        )));
                    } else {
                        self.add(off / self.cs, addend)?
                    }
                };
                if refcount == 1 {
                    new |= COPIED;
                }
                if flags && new != old {
                    table[j * 8..j * 8 + 8].copy_from_slice(&new.to_be_bytes());
                    changed = true;
                }
            }
            let refcount = self.add(l2 / self.cs, addend)?;
            if flags {
                *e = if refcount == 1 { l2 | COPIED } else { l2 };
                if changed {
                    rewrites.push((l2, table));
                }
            }
        }
        self.flush()?;
        for (off, table) in rewrites {
            self.file.write_all_at(&table, off)?;
        }
        self.file.sync_data()?;
        Ok(())
    }
}

/// Host bytes a compressed L2 entry covers: (offset, length).
pub(crate) fn compressed_range(e: u64, cluster_bits: u32) -> (u64, u64) {
    let x = 62 - (cluster_bits - 8);
    let off = e & ((1u64 << x) - 1);
    let sectors = ((e >> x) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
    (off, (sectors * 512).saturating_sub(off & 511).max(1))
}

/// QEMU's limit on an L1 table (`QCOW_MAX_L1_SIZE` in block/qcow2.h): 32 MiB.
const MAX_L1_BYTES: u64 = 32 << 20;

/// Reads an L1 table of `size` entries at `off` (at most 32 MiB, as QEMU
/// allows: an image cannot make us allocate more for it).
pub(crate) fn read_l1(r: &Refcounts, off: u64, size: u32) -> Result<Vec<u64>, EditError> {
    if !off.is_multiple_of(r.cluster_size()) {
        return Err(corrupt(format!("L1 table at {off:#x} is not aligned")));
    }
    if u64::from(size) * 8 > MAX_L1_BYTES {
        return Err(corrupt(format!(
            "L1 table at {off:#x} has {size} entries, more than QEMU's limit of {}",
            MAX_L1_BYTES / 8
        )));
    }
    let b = r.read(off, u64::from(size) * 8)?;
    Ok((0..size as usize).map(|i| be64_at(&b, i)).collect())
}

/// The bytes of an L1 table.
pub(crate) fn l1_bytes(l1: &[u64]) -> Vec<u8> {
    l1.iter().flat_map(|e| e.to_be_bytes()).collect()
}

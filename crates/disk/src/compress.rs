//! Writing a new qcow2 image with compressed clusters (`vt image convert
//! -c`), as `qemu-img convert -c` does: every cluster that is not all zeros
//! is deflated (raw deflate with a 4 KiB window, the stream QEMU's
//! `qcow2_zlib_compress` makes and its decompressor expects) and stored
//! packed at byte granularity; a cluster that does not shrink is stored
//! plainly. Zero clusters stay unallocated.
//!
//! The writer takes an image [`crate::create`] has just made (empty, no
//! backing file, 16-bit refcounts) and gets its writes in ascending order
//! (a streaming copy). Data is appended; L2 tables stay in memory and are
//! appended at the end; then a new refcount table and blocks, covering
//! every cluster including themselves, are appended, and finally the
//! header is pointed at them (one write). The original refcount
//! structures are then unreferenced, free clusters.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use flate2::{Compress, Compression, FlushCompress, Status};
use vm_memory::{Bytes, VolatileSlice};

use crate::header::Header;
use crate::refcount::{open_for_edit, OpenEditError, COMPRESSED, COPIED};
use crate::DiskBackend;

/// Why the writer could not start.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("cannot open {0}")]
    Io(String, #[source] io::Error),
    #[error(transparent)]
    Open(#[from] OpenEditError),
    #[error("{0}: compressed output needs a new, empty qcow2 image without a backing file and with 16-bit refcounts")]
    NotFresh(String),
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("the compressed-image writer cannot {what}"),
    )
}

/// A new qcow2 image being filled with compressed clusters, front to back.
pub struct CompressedWriter {
    file: File,
    h: Header,
    cs: u64,
    /// The cluster being filled: its index and bytes.
    current: Option<(u64, Vec<u8>)>,
    /// L2 tables by L1 index.
    l2: BTreeMap<u64, Vec<u64>>,
    /// Next free byte in the file.
    pos: u64,
    /// References per host cluster (data, compressed data, metadata).
    refs: Vec<u16>,
    deflate: Compress,
    out: Vec<u8>,
    done: bool,
}

impl CompressedWriter {
    /// Opens the new image at `path` (locked exclusively).
    pub fn open(path: &Path) -> Result<CompressedWriter, CompressError> {
        let (file, h, name) = open_for_edit(path)?;
        let len = file
            .metadata()
            .map_err(|e| CompressError::Io(name.clone(), e))?
            .len();
        if h.l1_size > 1 << 25 {
            return Err(CompressError::NotFresh(name));
        }
        let cs = h.cluster_size();
        let mut l1 = vec![0u8; h.l1_size as usize * 8];
        file.read_exact_at(&mut l1, h.l1_table_offset)
            .map_err(|e| CompressError::Io(name.clone(), e))?;
        if h.backing_file.is_some()
            || h.refcount_order != 4
            || h.nb_snapshots != 0
            || l1.iter().any(|b| *b != 0)
        {
            return Err(CompressError::NotFresh(name));
        }
        let pos = len.next_multiple_of(cs);
        let mut refs = vec![0u16; (pos / cs) as usize];
        // What create() made: header, L1 table (the refcount structures
        // are replaced at the end).
        refs[0] = 1;
        let l1_clusters = (u64::from(h.l1_size) * 8).div_ceil(cs).max(1);
        for c in 0..l1_clusters {
            if let Some(r) = refs.get_mut((h.l1_table_offset / cs + c) as usize) {
                *r = 1;
            }
        }
        Ok(CompressedWriter {
            file,
            cs,
            current: None,
            l2: BTreeMap::new(),
            pos,
            refs,
            deflate: Compress::new_with_window_bits(Compression::default(), false, 12),
            out: vec![0u8; (cs + cs / 2 + 1024) as usize],
            done: false,
            h,
        })
    }

    fn refer(&mut self, off: u64, len: u64) {
        let (first, last) = (off / self.cs, (off + len.max(1) - 1) / self.cs);
        if self.refs.len() <= last as usize {
            self.refs.resize(last as usize + 1, 0);
        }
        for c in first..=last {
            self.refs[c as usize] = self.refs[c as usize].saturating_add(1);
        }
    }

    fn set_l2(&mut self, cluster: u64, entry: u64) {
        let per = self.cs / 8;
        let table = self
            .l2
            .entry(cluster / per)
            .or_insert_with(|| vec![0; per as usize]);
        table[(cluster % per) as usize] = entry;
    }

    /// Compresses and stores guest cluster `index` (`data`: a full cluster).
    fn emit(&mut self, index: u64, data: &[u8]) -> io::Result<()> {
        if data.iter().all(|b| *b == 0) {
            return Ok(());
        }
        self.deflate.reset();
        // The output buffer holds deflate's worst case (zlib-rs panics when
        // a stored block does not fit); what does not shrink below a
        // cluster is stored plainly, as QEMU does.
        let st = self
            .deflate
            .compress(data, &mut self.out, FlushCompress::Finish)
            .map_err(io::Error::other)?;
        let n = self.deflate.total_out() as usize;
        if st == Status::StreamEnd && n < data.len() {
            let off = self.pos;
            self.file.write_all_at(&self.out[..n], off)?;
            self.pos += n as u64;
            self.refer(off, n as u64);
            let x = 62 - (self.h.cluster_bits - 8);
            let extra = (off + n as u64 - 1) / 512 - off / 512;
            self.set_l2(index, COMPRESSED | (extra << x) | off);
        } else {
            let off = self.pos.next_multiple_of(self.cs);
            self.file.write_all_at(data, off)?;
            self.pos = off + self.cs;
            self.refer(off, self.cs);
            self.set_l2(index, COPIED | off);
        }
        Ok(())
    }

    fn finish_current(&mut self) -> io::Result<()> {
        if let Some((index, data)) = self.current.take() {
            self.emit(index, &data)?;
        }
        Ok(())
    }

    /// Writes the L2 tables, the L1 table, new refcount structures and
    /// the header.
    fn finish(&mut self) -> io::Result<()> {
        self.finish_current()?;
        // Compressed data ends in whole sectors, and clusters.
        self.pos = self.pos.next_multiple_of(self.cs);
        let mut l1 = vec![0u64; self.h.l1_size as usize];
        let tables = std::mem::take(&mut self.l2);
        for (i, table) in tables {
            let off = self.pos;
            let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.file.write_all_at(&bytes, off)?;
            self.pos += self.cs;
            self.refer(off, self.cs);
            let slot = l1
                .get_mut(i as usize)
                .ok_or_else(|| io::Error::other("write past the end of the image"))?;
            *slot = COPIED | off;
        }
        let l1_bytes: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.file.write_all_at(&l1_bytes, self.h.l1_table_offset)?;
        // A refcount table and blocks covering everything, themselves too.
        let per_block = self.cs / 2;
        let used = self.pos / self.cs;
        let (mut blocks, mut table) = (1u64, 1u64);
        loop {
            let total = used + blocks + table;
            let (b, t) = (
                total.div_ceil(per_block),
                (total.div_ceil(per_block) * 8).div_ceil(self.cs),
            );
            if (b, t) == (blocks, table) {
                break;
            }
            (blocks, table) = (b.max(blocks), t.max(table));
        }
        // Small enough for the structures create() made: rewritten in
        // place; else new ones appended (the old ones left free).
        let mut first_block = [0u8; 8];
        self.file
            .read_exact_at(&mut first_block, self.h.refcount_table_offset)?;
        let first_block = u64::from_be_bytes(first_block) & crate::refcount::OFFSET_MASK;
        let in_place = blocks == 1
            && table <= u64::from(self.h.refcount_table_clusters)
            && first_block != 0
            && first_block.is_multiple_of(self.cs)
            && first_block < self.pos;
        let (table_off, blocks_off) = if in_place {
            table = u64::from(self.h.refcount_table_clusters);
            (self.h.refcount_table_offset, first_block)
        } else {
            (self.pos, self.pos + table * self.cs)
        };
        self.refer(table_off, table * self.cs);
        self.refer(blocks_off, blocks * self.cs);
        let mut rt = vec![0u8; (table * self.cs) as usize];
        for b in 0..blocks {
            let at = (b * 8) as usize;
            rt[at..at + 8].copy_from_slice(&(blocks_off + b * self.cs).to_be_bytes());
        }
        let mut rb = vec![0u8; (blocks * self.cs) as usize];
        for (slot, r) in rb.chunks_exact_mut(2).zip(&self.refs) {
            slot.copy_from_slice(&r.to_be_bytes());
        }
        self.file.write_all_at(&rt, table_off)?;
        self.file.write_all_at(&rb, blocks_off)?;
        self.file.sync_data()?;
        let mut hdr = [0u8; 12];
        hdr[..8].copy_from_slice(&table_off.to_be_bytes());
        hdr[8..].copy_from_slice(&(table as u32).to_be_bytes());
        if !in_place {
            self.file.write_all_at(&hdr, 48)?;
        }
        self.file.sync_all()?;
        Ok(())
    }
}

impl DiskBackend for CompressedWriter {
    fn size(&self) -> u64 {
        self.h.size
    }

    fn read_at(&mut self, _: u64, _: &[VolatileSlice]) -> io::Result<()> {
        Err(unsupported("read"))
    }

    /// Writes must come in ascending order of clusters.
    fn write_at(&mut self, offset: u64, bufs: &[VolatileSlice]) -> io::Result<()> {
        if self.done {
            return Err(unsupported("write after the final flush"));
        }
        let mut at = offset;
        for b in bufs {
            let mut done = 0;
            while done < b.len() {
                let index = at / self.cs;
                if at >= self.h.size {
                    return Err(unsupported("write past the end of the image"));
                }
                match &self.current {
                    Some((i, _)) if *i == index => {}
                    Some((i, _)) if *i > index => {
                        return Err(unsupported("write backwards"));
                    }
                    _ => {
                        self.finish_current()?;
                        self.current = Some((index, vec![0u8; self.cs as usize]));
                    }
                }
                let within = (at % self.cs) as usize;
                let n = (self.cs as usize - within).min(b.len() - done);
                if let Some((_, data)) = &mut self.current {
                    b.read_slice(&mut data[within..within + n], done)
                        .map_err(io::Error::other)?;
                }
                done += n;
                at += n as u64;
            }
        }
        Ok(())
    }

    /// The first flush completes the image; nothing can be written after.
    fn flush(&mut self) -> io::Result<()> {
        if !self.done {
            self.done = true;
            self.finish()?;
        }
        Ok(())
    }

    fn discard(&mut self, _: u64, _: u64) -> io::Result<()> {
        Err(unsupported("discard"))
    }

    fn write_zeroes(&mut self, _: u64, _: u64) -> io::Result<()> {
        Err(unsupported("write zeroes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::{create, CreateOptions};
    use crate::DiskFormat;

    fn new_image(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("vt-compress-{}-{name}", std::process::id()));
        let o = CreateOptions {
            format: Some(DiskFormat::Qcow2),
            size: Some(1 << 20),
            ..Default::default()
        };
        create(&p, &o).unwrap();
        p
    }

    #[test]
    fn writes_in_order_only_and_only_into_a_new_image() {
        let p = new_image("order");
        let mut w = CompressedWriter::open(&p).unwrap();
        let mut buf = vec![7u8; 4096];
        fn s(b: &mut [u8]) -> VolatileSlice<'_> {
            VolatileSlice::from(b)
        }
        w.write_at(128 << 10, &[s(&mut buf)]).unwrap();
        assert!(w.write_at(0, &[s(&mut buf)]).is_err());
        assert!(w.write_at(1 << 20, &[s(&mut buf)]).is_err());
        assert!(w.read_at(0, &[s(&mut buf)]).is_err());
        w.flush().unwrap();
        assert!(w.write_at(256 << 10, &[s(&mut buf)]).is_err());
        drop(w);
        // Now it holds data: not a new image any more.
        let e = CompressedWriter::open(&p).err().unwrap();
        assert!(matches!(e, CompressError::NotFresh(_)), "{e}");
        let r = crate::check::check(&p, crate::check::Repair::None).unwrap();
        assert_eq!((r.corruptions, r.leaks, r.compressed_clusters), (0, 0, 1));
        std::fs::remove_file(&p).unwrap();
    }
}

//! `vt image convert`: reads the source through its backend (raw, or
//! qcow2 with its backing chain), creates the destination and writes only
//! the 64 KiB blocks that are not all zeros, so the copy stays sparse
//! (unallocated in qcow2, holes in raw). `-p` shows a progress bar when
//! stderr is a terminal, and nothing otherwise.

use std::path::Path;

use anyhow::Context;
use disk::create::CreateOptions;
use disk::{DiskBackend, DiskFormat, OpenOptions};
use vm_memory::VolatileSlice;

/// Bytes read per source request.
const CHUNK: usize = 2 << 20;
/// Chunks read ahead of the writer.
const DEPTH: usize = 4;

/// A chunk read from the source: `n` bytes of `buf` from guest offset `at`.
struct Chunk {
    at: u64,
    n: usize,
    buf: Vec<u8>,
}
/// The granularity of zero detection.
const BLOCK: usize = 64 << 10;

/// One conversion.
pub struct Convert<'a> {
    /// The image to read.
    pub source: &'a Path,
    /// Its format; probed (read-only) when `None`.
    pub source_format: Option<DiskFormat>,
    /// The image to create (overwritten if it exists, as qemu-img does).
    pub dest: &'a Path,
    /// Format and options of the destination (its size is the source's).
    pub create: CreateOptions,
    /// Draw a progress bar (only when stderr is a terminal).
    pub progress: bool,
    /// Write compressed clusters (`-c`; qcow2 output only).
    pub compress: bool,
}

impl Convert<'_> {
    /// Creates the destination and copies every non-zero block into it,
    /// then flushes it.
    pub fn run(mut self) -> anyhow::Result<()> {
        let src_opts = OpenOptions {
            readonly: true,
            format: self.source_format,
            ..Default::default()
        };
        let mut src = disk::open_path(self.source, &src_opts)?;
        let size = src.size();
        self.create.size = Some(size);
        disk::create::create(self.dest, &self.create)?;
        let dst_opts = OpenOptions {
            format: self.create.format,
            ..Default::default()
        };
        let mut dst: Box<dyn DiskBackend> = if self.compress {
            Box::new(disk::compress::CompressedWriter::open(self.dest)?)
        } else {
            disk::open_path(self.dest, &dst_opts)?
        };
        let bar = super::progress::bar(self.progress, size);
        // Reading and writing overlap: a reader thread fills buffers
        // (at most DEPTH in flight) while this one writes the last ones, as
        // qemu-img keeps several requests in flight.
        let ranges = self.ranges(size);
        let source = self.source;
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Chunk>(DEPTH);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        for _ in 0..DEPTH + 1 {
            let _ = empty_tx.send(vec![0u8; CHUNK]);
        }
        let mut done = 0u64;
        std::thread::scope(|s| -> anyhow::Result<()> {
            // Owned here, so an early return (a write error) drops it and a
            // reader waiting for a buffer stops instead of waiting forever.
            let empty_tx = empty_tx;
            let reader = s.spawn(move || -> anyhow::Result<()> {
                for (start, len) in ranges {
                    let mut at = start;
                    while at < start + len {
                        let n = (start + len - at).min(CHUNK as u64) as usize;
                        // The writer gave up (an error): stop quietly.
                        let Ok(mut buf) = empty_rx.recv() else {
                            return Ok(());
                        };
                        src.read_at(at, &[VolatileSlice::from(&mut buf[..n])])
                            .with_context(|| format!("cannot read {} at {at}", source.display()))?;
                        if full_tx.send(Chunk { at, n, buf }).is_err() {
                            return Ok(());
                        }
                        at += n as u64;
                    }
                }
                Ok(())
            });
            for Chunk { at, n, mut buf } in full_rx {
                copy_nonzero(dst.as_mut(), at, &mut buf[..n])
                    .with_context(|| format!("cannot write {} at {at}", self.dest.display()))?;
                done += n as u64;
                if let Some(b) = &bar {
                    b.set_position(done);
                }
                let _ = empty_tx.send(buf);
            }
            reader
                .join()
                .map_err(|_| anyhow::anyhow!("the reading thread failed"))?
        })?;
        dst.flush()
            .with_context(|| format!("cannot flush {}", self.dest.display()))?;
        if let Some(b) = bar {
            b.finish();
        }
        Ok(())
    }
}

impl Convert<'_> {
    /// The guest ranges worth reading: all but those the source's map says
    /// read as zeros (holes of a raw file, unallocated or zero clusters down
    /// a qcow2 chain). The whole disk when the map is not to be trusted
    /// (it cannot be read, or the file was forced to another format than
    /// its header says).
    fn ranges(&self, size: u64) -> Vec<(u64, u64)> {
        let whole = vec![(0, size)];
        let probed = disk::info::info(self.source, None).map(|i| i.format).ok();
        if self.source_format.is_some() && self.source_format != probed {
            return whole;
        }
        match disk::map::map(self.source) {
            Ok(extents) => extents
                .iter()
                .filter(|e| !e.zero && e.start < size)
                .map(|e| (e.start, e.length.min(size - e.start)))
                .collect(),
            Err(_) => whole,
        }
    }
}

/// Writes the runs of `buf` (at disk offset `at`) whose [`BLOCK`]s hold
/// anything but zeros.
fn copy_nonzero(dst: &mut dyn DiskBackend, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let mut i = 0;
    while i < buf.len() {
        let end = |j: usize| (j + BLOCK).min(buf.len());
        if buf[i..end(i)].iter().all(|b| *b == 0) {
            i = end(i);
            continue;
        }
        let mut j = end(i);
        while j < buf.len() && buf[j..end(j)].iter().any(|b| *b != 0) {
            j = end(j);
        }
        dst.write_at(at + i as u64, &[VolatileSlice::from(&mut buf[i..j])])?;
        i = j;
    }
    Ok(())
}

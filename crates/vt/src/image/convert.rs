//! `vt image convert`: reads the source through its backend (raw, or
//! qcow2 with its backing chain), creates the destination and writes only
//! the 64 KiB blocks that are not all zeros, so the copy stays sparse
//! (unallocated in qcow2, holes in raw). `-p` shows a progress bar when
//! stderr is a terminal, and nothing otherwise.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;
use disk::create::CreateOptions;
use disk::{DiskBackend, DiskFormat, OpenOptions};
use vm_memory::VolatileSlice;

/// Bytes read per source request.
const CHUNK: usize = 1 << 20;
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
        let mut dst = disk::open_path(self.dest, &dst_opts)?;
        let bar = (self.progress && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(size);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {percent:>3}% {bytes}/{total_bytes} {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        let mut buf = vec![0u8; CHUNK];
        let mut at = 0u64;
        while at < size {
            let n = (size - at).min(CHUNK as u64) as usize;
            src.read_at(at, &[VolatileSlice::from(&mut buf[..n])])
                .with_context(|| format!("cannot read {} at {at}", self.source.display()))?;
            copy_nonzero(dst.as_mut(), at, &mut buf[..n])
                .with_context(|| format!("cannot write {} at {at}", self.dest.display()))?;
            at += n as u64;
            if let Some(b) = &bar {
                b.set_position(at);
            }
        }
        dst.flush()
            .with_context(|| format!("cannot flush {}", self.dest.display()))?;
        if let Some(b) = bar {
            b.finish();
        }
        Ok(())
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

//! `vt image map`: where each guest range of a qcow2 image lives, as
//! `qemu-img map` reports it: runs of clusters with the same status
//! (`present`, `zero`, `data`, the chain `depth` they come from) and, for
//! data stored in a file, its host offset, merged while contiguous.
//!
//! Walks the L1/L2 tables with our header parser, every read bounded by
//! the file; unallocated ranges of an image with a backing file are looked
//! up in the backing chain (qcow2 layers walked the same way; a raw layer
//! is reported as data at the same offset, without hole detection).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::header::{Header, HeaderError};
use crate::open::{BackingOpener, ImageFile, PathOpener, MAX_CHAIN_DEPTH};
use crate::probe::{self, Probed};
use crate::raw;

/// One run of guest bytes with one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// Guest offset.
    pub start: u64,
    /// Bytes.
    pub length: u64,
    /// 0 for the image itself, 1 for its backing file, and so on.
    pub depth: usize,
    /// Some layer defines these bytes (false: they read as zeros because
    /// no layer has them).
    pub present: bool,
    /// They read as zeros.
    pub zero: bool,
    /// They are stored as data.
    pub data: bool,
    /// Host offset in the layer's file, when stored plainly there.
    pub offset: Option<u64>,
    /// The file of the layer they come from.
    pub file: String,
}

/// Why an image could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("cannot read {0}")]
    Io(String, #[source] io::Error),
    #[error("{0}")]
    Header(String, #[source] HeaderError),
    #[error("{0}: backing chain deeper than {MAX_CHAIN_DEPTH}")]
    Depth(String),
    #[error("{0}: its L1 or L2 tables lie outside the file")]
    Table(String),
}

const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;

/// One layer of the chain, opened for reading.
struct Layer {
    file: File,
    name: String,
    /// `None` for raw.
    header: Option<Header>,
    l1: Vec<u64>,
    below: Option<Box<Layer>>,
}

fn read_at(file: &File, off: u64, len: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; len];
    file.read_exact_at(&mut b, off).ok()?;
    Some(b)
}

impl Layer {
    fn open(image: ImageFile, depth: usize) -> Result<Layer, MapError> {
        let ImageFile { file, name, dir } = image;
        let io_err = |e| MapError::Io(name.clone(), e);
        if depth > MAX_CHAIN_DEPTH {
            return Err(MapError::Depth(name));
        }
        if probe::probe(&file).map_err(io_err)? != Probed::Qcow2 {
            return Ok(Layer {
                file,
                name,
                header: None,
                l1: Vec::new(),
                below: None,
            });
        }
        let h = Header::read(&file).map_err(|e| MapError::Header(name.clone(), e))?;
        let file_len = raw::file_size(&file).unwrap_or(0);
        if u64::from(h.l1_size) * 8 > file_len {
            return Err(MapError::Table(name));
        }
        let l1 = read_at(&file, h.l1_table_offset, h.l1_size as usize * 8)
            .ok_or_else(|| MapError::Table(name.clone()))?
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        // Backing files without a format are not followed (nor probed).
        let below = match (&h.backing_file, &h.backing_format) {
            (Some(b), Some(_)) => {
                let mut image = PathOpener.open_backing(b, &dir).map_err(io_err)?;
                // Named as qemu-img names it (relative to this image's name).
                image.name = crate::info::path_combine(&name, b);
                Some(Box::new(Layer::open(image, depth + 1)?))
            }
            _ => None,
        };
        Ok(Layer {
            file,
            name,
            header: Some(h),
            l1,
            below,
        })
    }

    /// Size in bytes as a guest sees this layer.
    fn size(&self) -> u64 {
        match &self.header {
            Some(h) => h.size,
            None => raw::file_size(&self.file).unwrap_or(0),
        }
    }

    /// Appends the extents of `start..end` (guest bytes) to `out`.
    fn map(
        &self,
        start: u64,
        end: u64,
        depth: usize,
        out: &mut Vec<Extent>,
    ) -> Result<(), MapError> {
        let Some(h) = &self.header else {
            return self.map_raw(start, end, depth, out);
        };
        let cs = h.cluster_size();
        let per_l2 = cs / 8;
        let mut at = start;
        let mut l2: Option<(u64, Vec<u8>)> = None;
        while at < end {
            let cluster = at / cs;
            let len = ((cluster + 1) * cs).min(end) - at;
            let l1e = self
                .l1
                .get((cluster / per_l2) as usize)
                .copied()
                .unwrap_or(0)
                & OFFSET_MASK;
            let entry = if l1e == 0 {
                0
            } else {
                if l2.as_ref().map(|(o, _)| *o) != Some(l1e) {
                    let t = read_at(&self.file, l1e, cs as usize)
                        .ok_or_else(|| MapError::Table(self.name.clone()))?;
                    l2 = Some((l1e, t));
                }
                let i = ((cluster % per_l2) * 8) as usize;
                l2.as_ref()
                    .and_then(|(_, t)| t.get(i..i + 8))
                    .map_or(0, |b| {
                        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
                    })
            };
            let host = entry & OFFSET_MASK;
            let zero_flag = h.version >= 3 && entry & 1 != 0;
            if entry & COMPRESSED != 0 {
                self.push(out, at, len, depth, (true, false, true), None);
            } else if zero_flag {
                let off = (host != 0).then_some(host + at % cs);
                self.push(out, at, len, depth, (true, true, false), off);
            } else if host != 0 {
                self.push(
                    out,
                    at,
                    len,
                    depth,
                    (true, false, true),
                    Some(host + at % cs),
                );
            } else if let Some(below) = &self.below {
                below.map(at, at + len, depth + 1, out)?;
            } else {
                self.push(out, at, len, depth, (false, true, false), None);
            }
            at += len;
        }
        Ok(())
    }

    /// A raw layer: data and holes as the file system reports them
    /// (`SEEK_DATA`/`SEEK_HOLE`), zeros past its end.
    fn map_raw(
        &self,
        start: u64,
        end: u64,
        depth: usize,
        out: &mut Vec<Extent>,
    ) -> Result<(), MapError> {
        let end_here = end.min(self.size());
        let mut at = start;
        while at < end_here {
            let data = seek(&self.file, at, libc::SEEK_DATA)
                .unwrap_or(end_here)
                .min(end_here);
            if data > at {
                self.push(out, at, data - at, depth, (true, true, false), Some(at));
            }
            if data >= end_here {
                break;
            }
            let hole = seek(&self.file, data, libc::SEEK_HOLE)
                .unwrap_or(end_here)
                .min(end_here);
            self.push(
                out,
                data,
                hole - data,
                depth,
                (true, false, true),
                Some(data),
            );
            at = hole;
        }
        if end_here < end {
            let from = end_here.max(start);
            self.push(out, from, end - from, depth, (false, true, false), None);
        }
        Ok(())
    }

    /// Adds an extent, merged into the previous one when it continues it.
    fn push(
        &self,
        out: &mut Vec<Extent>,
        start: u64,
        length: u64,
        depth: usize,
        (present, zero, data): (bool, bool, bool),
        offset: Option<u64>,
    ) {
        if let Some(last) = out.last_mut() {
            let continues = last.depth == depth
                && (last.present, last.zero, last.data) == (present, zero, data)
                && last.file == self.name
                && match (last.offset, offset) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a + last.length == b,
                    _ => false,
                };
            if continues && last.start + last.length == start {
                last.length += length;
                return;
            }
        }
        out.push(Extent {
            start,
            length,
            depth,
            present,
            zero,
            data,
            offset,
            file: self.name.clone(),
        });
    }
}

/// `lseek(fd, at, whence)`; `None` past the last data (ENXIO) or on error.
fn seek(file: &File, at: u64, whence: libc::c_int) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let at = libc::off_t::try_from(at).ok()?;
    // SAFETY: lseek on our own fd with integer arguments; it touches no memory.
    let r = unsafe { libc::lseek(file.as_raw_fd(), at, whence) };
    u64::try_from(r).ok()
}

/// The extents of the file at `path` read as a raw image (`-f raw`: never
/// probed, so a qcow2 file is mapped as its bytes), in guest order.
pub fn map_raw(path: &Path) -> Result<Vec<Extent>, MapError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| MapError::Io(name.clone(), e))?;
    let top = Layer {
        file,
        name,
        header: None,
        l1: Vec::new(),
        below: None,
    };
    let mut out = Vec::new();
    top.map(0, top.size(), 0, &mut out)?;
    Ok(out)
}

/// The extents of the qcow2 image at `path` and its backing chain (a file
/// that is not qcow2 is mapped as raw).
pub fn map(path: &Path) -> Result<Vec<Extent>, MapError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| MapError::Io(name.clone(), e))?;
    let dir = crate::open::parent(path);
    let top = Layer::open(ImageFile { file, name, dir }, 0)?;
    let mut out = Vec::new();
    top.map(0, top.size(), 0, &mut out)?;
    Ok(out)
}

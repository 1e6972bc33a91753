//! `qemu-img commit`: write what a qcow2 image holds over its backing file
//! into that backing file (or, with `-b`, into a deeper one: then whatever
//! the layers above it define), so that the base reads as the image did;
//! then empty the image (unless `-d`), so that it reads through to the
//! base again. As with qemu-img, layers between the image and a deeper
//! base are left as they were (their content no longer matches the base
//! below them).
//!
//! Emptying is our own metadata edit: the active L1 table is zeroed (one
//! write), then the references it held are dropped ([`crate::refcount`]),
//! so a crash in between only leaks clusters.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use vm_memory::VolatileSlice;

use crate::check::{self, Repair};
use crate::header::{Header, HeaderError};
use crate::lock::{self, LockError, LockMode};
use crate::map::{self, MapError};
use crate::open::{backing_chain, open_file, ImageFile, OpenError, OpenOptions, PathOpener};
use crate::refcount::{l1_bytes, open_for_edit, read_l1, EditError, OpenEditError, Refcounts};
use crate::DiskFormat;

/// Why a commit failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("cannot open {0}")]
    Io(String, #[source] std::io::Error),
    #[error("{0}")]
    Header(String, #[source] HeaderError),
    #[error("{0} has no backing file to commit into")]
    NoBacking(String),
    #[error("{0} is not in the backing chain of {1}")]
    NotInChain(String, String),
    #[error("{0}: backing file format '{1}' is not supported (raw and qcow2 are)")]
    Format(String, String),
    #[error("base {0} ({1} bytes) is smaller than {2} ({3} bytes); resize it first")]
    Smaller(String, u64, String, u64),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Map(#[from] MapError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Edit(#[from] OpenEditError),
    #[error("{0}: I/O error while committing")]
    Copy(String, #[source] std::io::Error),
    #[error("{0}: {1} metadata errors; not emptying it (see `vt image check`)")]
    Corrupt(String, u64),
    #[error("{0}: cannot check it before emptying")]
    Check(String, #[source] check::CheckError),
    #[error("{0}: emptying: {1}")]
    Empty(String, #[source] EditError),
}

const CHUNK: usize = 1 << 20;

fn header_of(path: &Path) -> Result<Header, CommitError> {
    let name = path.display().to_string();
    let f = File::open(path).map_err(|e| CommitError::Io(name.clone(), e))?;
    Header::read(&f).map_err(|e| CommitError::Header(name, e))
}

/// Commits the qcow2 image at `path` into `base` (default: its backing
/// file); `keep` (`-d`) leaves the image as it was instead of emptying it.
/// `progress` hears (bytes written, bytes to write).
pub fn commit(
    path: &Path,
    base: Option<&Path>,
    keep: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), CommitError> {
    let name = path.display().to_string();
    let top = header_of(path)?;
    if top.backing_file.is_none() {
        return Err(CommitError::NoBacking(name));
    }
    let chain = backing_chain(path);
    let idx = match base {
        None => 0,
        Some(b) => {
            let want = std::fs::canonicalize(b)
                .map_err(|e| CommitError::Io(b.display().to_string(), e))?;
            chain
                .iter()
                .position(|p| std::fs::canonicalize(p).is_ok_and(|p| p == want))
                .ok_or_else(|| CommitError::NotInChain(b.display().to_string(), name.clone()))?
        }
    };
    let base_path: PathBuf = chain
        .get(idx)
        .cloned()
        .ok_or_else(|| CommitError::NoBacking(name.clone()))?;
    let above = if idx == 0 {
        top.clone()
    } else {
        header_of(&chain[idx - 1])?
    };
    let base_name = base_path.display().to_string();
    let format = match above.backing_format.as_deref() {
        Some("raw") => DiskFormat::Raw,
        Some("qcow2") => DiskFormat::Qcow2,
        other => {
            return Err(CommitError::Format(
                base_name,
                other.unwrap_or("(none)").to_string(),
            ))
        }
    };
    let mut dst = crate::open::open_path(
        &base_path,
        &OpenOptions {
            format: Some(format),
            ..Default::default()
        },
    )?;
    if dst.size() < top.size {
        return Err(CommitError::Smaller(base_name, dst.size(), name, top.size));
    }
    // The image's view, read without locks on its chain (the base is ours,
    // exclusively, already); the image itself held shared against writers.
    let top_file = File::open(path).map_err(|e| CommitError::Io(name.clone(), e))?;
    lock::lock(&top_file, &name, LockMode::Shared)?;
    let view_file = top_file
        .try_clone()
        .map_err(|e| CommitError::Io(name.clone(), e))?;
    let mut view = open_file(
        ImageFile {
            file: view_file,
            name: name.clone(),
            dir: crate::open::parent(path),
        },
        &OpenOptions {
            readonly: true,
            shareable: true,
            format: Some(DiskFormat::Qcow2),
            ..Default::default()
        },
        &mut PathOpener,
    )?;
    let copy = |e: std::io::Error| CommitError::Copy(base_name.clone(), e);
    let mut buf = vec![0u8; CHUNK];
    // Defined in the image or a layer above the base.
    let todo: Vec<_> = map::map(path)?
        .into_iter()
        .filter(|e| e.present && e.depth <= idx)
        .collect();
    let total = todo.iter().map(|e| e.length).sum();
    let mut done = 0;
    for e in todo {
        if e.zero && !e.data {
            dst.write_zeroes(e.start, e.length).map_err(copy)?;
            done += e.length;
            progress(done, total);
            continue;
        }
        let mut at = e.start;
        while at < e.start + e.length {
            let n = (e.start + e.length - at).min(CHUNK as u64) as usize;
            view.read_at(at, &[VolatileSlice::from(&mut buf[..n])])
                .map_err(copy)?;
            dst.write_at(at, &[VolatileSlice::from(&mut buf[..n])])
                .map_err(copy)?;
            at += n as u64;
            done += n as u64;
            progress(done, total);
        }
    }
    dst.flush().map_err(copy)?;
    drop(dst);
    drop(view);
    drop(top_file);
    if keep {
        return Ok(());
    }
    make_empty(path)
}

/// Drops every cluster the active L1 table reaches: the image then reads
/// through to its backing file everywhere.
fn make_empty(path: &Path) -> Result<(), CommitError> {
    let (file, h, name) = open_for_edit(path)?;
    let report = check::check_file(&file, &name, Repair::None)
        .map_err(|e| CommitError::Check(name.clone(), e))?;
    if report.corruptions > 0 {
        return Err(CommitError::Corrupt(name, report.corruptions));
    }
    let edit = |r: &mut Refcounts| -> Result<(), EditError> {
        let mut l1 = read_l1(r, h.l1_table_offset, h.l1_size)?;
        let zeros = vec![0u64; l1.len()];
        file.write_all_at(&l1_bytes(&zeros), h.l1_table_offset)?;
        file.sync_data()?;
        r.update_l1(&mut l1, h.cluster_bits, -1, false)
    };
    let mut r = Refcounts::load(&file, &h).map_err(|e| CommitError::Empty(name.clone(), e))?;
    edit(&mut r).map_err(|e| CommitError::Empty(name, e))
}

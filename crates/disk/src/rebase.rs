//! `qemu-img rebase`: give a qcow2 image another backing file.
//!
//! Safe mode (the default): wherever the image itself defines nothing
//! (its reads fall through to the old backing chain), the old chain's
//! content is compared, cluster by cluster, with the new backing file's
//! (zeros past its end, or everywhere for `-b ""`); clusters that differ
//! are written into the image, so that its content stays the same. Then
//! the header names the new backing file and its format. Unsafe mode
//! (`-u`) only rewrites the header.

use std::path::Path;

use vm_memory::VolatileSlice;

use crate::backing::{set_backing, BackingError};
use crate::header::{Header, HeaderError};
use crate::map::{self, MapError};
use crate::open::{open_path, OpenError, OpenOptions};
use crate::refcount::{open_for_edit, OpenEditError};
use crate::{DiskBackend, DiskFormat};

/// Why a rebase failed.
#[derive(Debug, thiserror::Error)]
pub enum RebaseError {
    #[error("cannot open {0}")]
    Io(String, #[source] std::io::Error),
    #[error("{0}")]
    Header(String, #[source] HeaderError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Map(#[from] MapError),
    #[error(transparent)]
    Edit(#[from] OpenEditError),
    #[error("{0}: {1}")]
    Backing(String, #[source] BackingError),
    #[error("{0}: I/O error while copying clusters")]
    Copy(String, #[source] std::io::Error),
}

/// The new backing file: its name as stored in the header (resolved
/// against the image's directory when relative) and its format.
#[derive(Debug, Clone, Copy)]
pub struct NewBacking<'a> {
    /// The name.
    pub name: &'a str,
    /// Its format (stored in the header; never probed).
    pub format: DiskFormat,
}

fn format_name(f: DiskFormat) -> &'static str {
    match f {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    }
}

fn read(d: &mut dyn DiskBackend, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
    // Past the end of a (smaller) backing file: zeros.
    let n = d.size().saturating_sub(at).min(buf.len() as u64) as usize;
    buf[n..].fill(0);
    if n > 0 {
        d.read_at(at, &[VolatileSlice::from(&mut buf[..n])])?;
    }
    Ok(())
}

/// Rebases the qcow2 image at `path` onto `new` (`None`: no backing file).
/// `progress` hears (bytes compared, bytes to compare) in safe mode.
pub fn rebase(
    path: &Path,
    new: Option<NewBacking>,
    unsafe_: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), RebaseError> {
    let name = path.display().to_string();
    if !unsafe_ {
        copy_differences(path, &name, new, progress)?;
    }
    let (file, _, name) = open_for_edit(path)?;
    set_backing(&file, new.map(|n| (n.name, format_name(n.format))))
        .map_err(|e| RebaseError::Backing(name, e))
}

/// Safe mode's copy: keeps the image's content over the change.
fn copy_differences(
    path: &Path,
    name: &str,
    new: Option<NewBacking>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), RebaseError> {
    let opts = OpenOptions {
        format: Some(DiskFormat::Qcow2),
        ..Default::default()
    };
    let mut top = open_path(path, &opts)?;
    let mut target = match new {
        Some(n) => Some(open_path(
            &crate::open::parent(path).join(n.name),
            &OpenOptions {
                readonly: true,
                format: Some(n.format),
                ..Default::default()
            },
        )?),
        None => None,
    };
    let file = std::fs::File::open(path).map_err(|e| RebaseError::Io(name.into(), e))?;
    let cs = Header::read(&file)
        .map_err(|e| RebaseError::Header(name.into(), e))?
        .cluster_size();
    let mut old = vec![0u8; cs as usize];
    let mut newer = vec![0u8; cs as usize];
    let copy = |e: std::io::Error| RebaseError::Copy(name.into(), e);
    // Where the image defines nothing, its reads fall through: compare.
    let todo: Vec<_> = map::map(path)?
        .into_iter()
        .filter(|e| !(e.present && e.depth == 0))
        .collect();
    let total = todo.iter().map(|e| e.length).sum();
    let mut done = 0;
    for e in todo {
        let mut at = e.start;
        while at < e.start + e.length {
            let n = (cs - at % cs).min(e.start + e.length - at) as usize;
            read(top.as_mut(), at, &mut old[..n]).map_err(copy)?;
            match target.as_mut() {
                Some(t) => read(t.as_mut(), at, &mut newer[..n]).map_err(copy)?,
                None => newer[..n].fill(0),
            }
            if old[..n] != newer[..n] {
                top.write_at(at, &[VolatileSlice::from(&mut old[..n])])
                    .map_err(copy)?;
            }
            at += n as u64;
            done += n as u64;
            progress(done, total);
        }
    }
    top.flush().map_err(copy)?;
    Ok(())
}

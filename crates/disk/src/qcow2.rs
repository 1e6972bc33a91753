//! The qcow2 backend: imago's qcow2 driver (synchronous build, no tokio)
//! behind [`DiskBackend`].
//!
//! imago does the format work: L1/L2 lookup with an L2 and refcount-block
//! cache, cluster allocation with refcount updates (eager: it never sets
//! the dirty bit), copy-on-write from the backing layer, zero clusters,
//! compressed-cluster reads (zlib), discard and write-zeroes that free
//! clusters, and a flush that writes cached metadata only after the data
//! it points to. We add what must happen around it (`open.rs`): the
//! header checks, the backing chain opened through a [`crate::BackingOpener`]
//! in the format its header names, and the locks. Guest buffers go to
//! imago as iovecs over guest memory (its `vm-memory` feature), so reads of
//! allocated clusters are one `preadv` into the guest, as with raw.

use std::fs::File;
use std::io;
use std::path::Path;

use imago::file::File as ImagoFile;
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::qcow2::Qcow2 as ImagoQcow2;
use imago::raw::Raw as ImagoRaw;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, StorageOpenOptions};
use vm_memory::VolatileSlice;

use crate::DiskBackend;

/// One opened layer of an image chain (raw or qcow2), as imago sees it.
pub type Layer = FormatAccess<ImagoFile>;

/// A qcow2 disk (with its backing chain, if any).
pub struct Qcow2 {
    inner: Layer,
    size: u64,
    /// With `cache=none`, the image's buffered handle: imago works on an
    /// O_DIRECT handle, a separate open file, and the image's lock lives
    /// on this one.
    _lock_holder: Option<File>,
}

fn storage(file: File, name: &Path, writable: bool) -> io::Result<ImagoFile> {
    storage_with(file, name, writable, false)
}

/// `direct`: `file` was opened with O_DIRECT (imago then aligns every
/// request and buffer to what the file system needs, with bounce buffers).
fn storage_with(file: File, name: &Path, writable: bool, direct: bool) -> io::Result<ImagoFile> {
    ImagoFile::from_open_file(
        file,
        StorageOpenOptions::new()
            .filename(name)
            .write(writable)
            .direct(direct),
    )
}

/// Wraps an open raw file as a chain layer (read-only: raw layers are only
/// ever backing files here).
pub fn raw_layer(file: File, name: &Path) -> io::Result<Layer> {
    let raw = ImagoRaw::builder(storage(file, name, false)?)
        .write(false)
        .open(DenyImplicitOpenGate::default())?;
    Ok(FormatAccess::new(raw))
}

/// Wraps an open qcow2 file as a chain layer over `backing`. The header
/// must have passed [`crate::header::Header::check_usable`]; imago is told
/// the backing layer explicitly and opens nothing by itself (its gate
/// denies every implicit open). `direct`: `file` has O_DIRECT.
pub fn qcow2_layer(
    file: File,
    name: &Path,
    writable: bool,
    backing: Option<Layer>,
    direct: bool,
) -> io::Result<Layer> {
    let q = ImagoQcow2::<ImagoFile>::builder(storage_with(file, name, writable, direct)?)
        .write(writable)
        .backing(backing)
        .data_file(None)
        .open(DenyImplicitOpenGate::default())?;
    Ok(FormatAccess::new(q))
}

impl Qcow2 {
    /// The backend on an opened top layer.
    pub fn new(inner: Layer) -> Self {
        let size = inner.size();
        Qcow2 {
            inner,
            size,
            _lock_holder: None,
        }
    }

    /// The backend on a top layer imago reads through an O_DIRECT handle,
    /// keeping `holder` (the locked, buffered handle) open with it.
    pub fn with_lock_holder(inner: Layer, holder: File) -> Self {
        Qcow2 {
            _lock_holder: Some(holder),
            ..Qcow2::new(inner)
        }
    }

    /// The imago layer, for tools (`vt image`).
    pub fn layer(&mut self) -> &mut Layer {
        &mut self.inner
    }
}

fn check(size: u64, offset: u64, len: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
}

fn total(bufs: &[VolatileSlice]) -> u64 {
    bufs.iter().map(|b| b.len() as u64).sum()
}

impl DiskBackend for Qcow2 {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, bufs: &[VolatileSlice]) -> io::Result<()> {
        check(self.size, offset, total(bufs))?;
        let (iov, guard) = IoVectorMut::from_volatile_slice(bufs.iter());
        let r = self.inner.readv(iov, offset);
        drop(guard);
        r
    }

    fn write_at(&mut self, offset: u64, bufs: &[VolatileSlice]) -> io::Result<()> {
        check(self.size, offset, total(bufs))?;
        let (iov, guard) = IoVector::from_volatile_slice(bufs.iter());
        let r = self.inner.writev(iov, offset);
        drop(guard);
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        // Cached metadata out (data first, then the tables pointing to
        // it), then fdatasync.
        self.inner.flush()?;
        self.inner.sync()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len)
    }

    /// Frees the clusters and marks them zero (v3: zero clusters, so the
    /// backing file stays hidden). v2 has no zero clusters: zeros are
    /// written.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        check(self.size, offset, len)?;
        match self.inner.discard_to_zero(offset, len) {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                let inner = &self.inner;
                crate::fill_zeroes(offset, len, |buf, at| inner.write(buf, at))
            }
            r => r,
        }
    }
}

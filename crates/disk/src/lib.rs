//! Disk images for VT System: raw files and qcow2 images behind one trait,
//! [`DiskBackend`], used by the VMM's virtio-blk device and by `vt image`
//! (which needs no VM).
//!
//! Opening is split so that whoever holds the rights opens the files:
//! [`open_file`] takes an already-open [`std::fs::File`] (say, one `vtd`
//! opened as the calling user and passed to a jailed VMM) and a
//! [`BackingOpener`] that opens each backing file a qcow2 header names;
//! [`open_path`] is the thin path-based wrapper with the default
//! [`PathOpener`].
//!
//! Safety rules, as QEMU's:
//! - a writable image whose format was not given is probed, and refused
//!   when its first sector is an image header ([`probe`]): a guest must
//!   never write over a qcow2's metadata by way of a raw disk;
//! - a backing file is opened in the format its header extension names,
//!   never probed; no format → refused;
//! - images are locked with OFD locks on QEMU's lock bytes ([`lock`]):
//!   one writer, or any number of readers, across VT System and QEMU.

pub mod backing;
pub mod check;
pub mod commit;
pub mod compress;
pub mod create;
pub mod header;
pub mod info;
pub mod lock;
pub mod map;
pub mod open;
pub mod probe;
pub mod qcow2;
pub mod raw;
pub mod rebase;
pub mod refcount;
pub mod resize;
pub mod snapshot;

use std::io;

use vm_memory::VolatileSlice;

pub use api::{CacheMode, DiskFormat};
pub use open::{
    backing_chain, open_file, open_file_twin, open_image, open_path, BackingOpener, Image,
    ImageFile, OpenError, OpenOptions, PassedOpener, PathOpener, MAX_CHAIN_DEPTH,
};
pub use probe::Probed;
pub use raw::RawFile;

/// Sector size of the virtio-blk protocol, in bytes.
pub const SECTOR_SIZE: u64 = 512;

/// A disk image, as a guest sees it: `size()` bytes addressed by byte
/// offset. Buffers are guest memory ([`VolatileSlice`]s), so raw I/O goes
/// straight between the file and the guest without a copy.
///
/// Callers keep every request inside `0..size()`; a backend answers a
/// request outside it with an error, never a panic.
pub trait DiskBackend: Send {
    /// Size in bytes (a multiple of [`SECTOR_SIZE`]).
    fn size(&self) -> u64;
    /// Fills `bufs`, in order, from the disk at byte `offset`.
    fn read_at(&mut self, offset: u64, bufs: &[VolatileSlice]) -> io::Result<()>;
    /// Writes `bufs`, in order, to the disk at byte `offset`.
    fn write_at(&mut self, offset: u64, bufs: &[VolatileSlice]) -> io::Result<()>;
    /// Makes every completed write durable (data, then the metadata that
    /// points to it, each `fdatasync`ed).
    fn flush(&mut self) -> io::Result<()>;
    /// Lets the backend drop the range (reads may then return anything;
    /// our backends return zeros or the backing file's data).
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes the range read as zeros.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()>;
}

/// Writes `len` zero bytes from `offset` through `write(buf, at)`, 1 MiB
/// at a time (for files and formats that cannot zero a range otherwise).
pub(crate) fn fill_zeroes(
    offset: u64,
    len: u64,
    mut write: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<()> {
    let zeros = vec![0u8; (1 << 20).min(len as usize)];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        write(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Reads from the start of `file` until `buf` is full or the file ends;
/// returns how many bytes were read.
pub(crate) fn read_prefix(file: &std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

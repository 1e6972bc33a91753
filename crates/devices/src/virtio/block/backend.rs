//! Disk backends: where a virtio-blk device's sectors live. [`RawFile`] is
//! a plain file; qcow2 will be another implementation of [`DiskBackend`].
//!
//! Buffers are guest memory ([`VolatileSlice`]s), so I/O goes straight
//! between the file and the guest without a copy.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use vm_memory::VolatileSlice;

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;

/// A disk image.
pub trait DiskBackend: Send {
    /// Size in bytes (a multiple of [`SECTOR_SIZE`]).
    fn size(&self) -> u64;
    /// Fills `bufs`, in order, from the disk at byte `offset`.
    fn read_at(&mut self, offset: u64, bufs: &[VolatileSlice]) -> io::Result<()>;
    /// Writes `bufs`, in order, to the disk at byte `offset`.
    fn write_at(&mut self, offset: u64, bufs: &[VolatileSlice]) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> io::Result<()>;
    /// Lets the backend drop the range (reads may then return anything).
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes the range read as zeros.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()>;
}

/// Why a disk could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open {0}")]
    Open(String, #[source] io::Error),
    #[error("{0} is not a regular file or block device")]
    NotAFile(String),
    #[error("{0}: size {1} is not a multiple of 512 bytes")]
    Size(String, u64),
    #[error("{0} is empty")]
    Empty(String),
    #[error("{0}: cache=none needs O_DIRECT, which its file system refuses")]
    NoDirect(String, #[source] io::Error),
}

/// A raw image file (or block device).
pub struct RawFile {
    file: File,
    /// The same file opened with O_DIRECT (`cache=none`): aligned
    /// transfers go through it, around the host's page cache.
    direct: Option<File>,
    size: u64,
}

/// O_DIRECT wants buffers, lengths and offsets aligned to the device's
/// logical block; 512 covers most, and a refusal falls back to the cache.
const DIRECT_ALIGN: u64 = 512;

impl RawFile {
    pub fn open(path: &Path, readonly: bool) -> Result<Self, OpenError> {
        Self::open_with(path, readonly, false)
    }

    /// Opens `path`; with `direct`, aligned I/O bypasses the page cache.
    pub fn open_with(path: &Path, readonly: bool, direct: bool) -> Result<Self, OpenError> {
        Self::open_twin(path, direct.then_some(path), readonly)
    }

    /// Opens `path` (or duplicates it: [`crate::files::open`]); with
    /// `direct`, that path (the same file, or an `O_DIRECT` descriptor
    /// passed as `/dev/fd/M`) is opened with `O_DIRECT` for aligned I/O.
    pub fn open_twin(
        path: &Path,
        direct: Option<&Path>,
        readonly: bool,
    ) -> Result<Self, OpenError> {
        let name = path.display().to_string();
        let file =
            crate::files::open(path, !readonly, 0).map_err(|e| OpenError::Open(name.clone(), e))?;
        let direct = match direct {
            Some(d) => Some(
                crate::files::open(d, !readonly, libc::O_DIRECT)
                    .map_err(|e| OpenError::NoDirect(name.clone(), e))?,
            ),
            None => None,
        };
        let meta = file
            .metadata()
            .map_err(|e| OpenError::Open(name.clone(), e))?;
        use std::os::unix::fs::FileTypeExt;
        let size = if meta.file_type().is_block_device() {
            use std::io::Seek;
            (&file)
                .seek(io::SeekFrom::End(0))
                .map_err(|e| OpenError::Open(name.clone(), e))?
        } else if meta.is_file() {
            meta.len()
        } else {
            return Err(OpenError::NotAFile(name));
        };
        if size == 0 {
            return Err(OpenError::Empty(name));
        }
        if size % SECTOR_SIZE != 0 {
            return Err(OpenError::Size(name, size));
        }
        Ok(RawFile { file, direct, size })
    }

    /// Through the O_DIRECT file when there is one and the transfer is
    /// aligned for it; through the page cache otherwise, or when the
    /// device wants a larger alignment than [`DIRECT_ALIGN`].
    fn transfer(&mut self, offset: u64, bufs: &[VolatileSlice], write: bool) -> io::Result<()> {
        let aligned = |v: u64| v.is_multiple_of(DIRECT_ALIGN);
        if let Some(direct) = &self.direct {
            let fits = aligned(offset)
                && bufs
                    .iter()
                    .all(|b| aligned(b.ptr_guard().as_ptr() as u64) && aligned(b.len() as u64));
            if fits {
                match transfer(direct, offset, bufs, write) {
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    r => return r,
                }
            }
        }
        transfer(&self.file, offset, bufs, write)
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(io::Error::from_raw_os_error(libc::EOVERFLOW));
        };
        // SAFETY: plain syscall on our own fd with integer arguments.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl DiskBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, bufs: &[VolatileSlice]) -> io::Result<()> {
        self.transfer(offset, bufs, false)
    }

    fn write_at(&mut self, offset: u64, bufs: &[VolatileSlice]) -> io::Result<()> {
        self.transfer(offset, bufs, true)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let keep = libc::FALLOC_FL_KEEP_SIZE;
        self.fallocate(libc::FALLOC_FL_ZERO_RANGE | keep, offset, len)
            .or_else(|_| self.fallocate(libc::FALLOC_FL_PUNCH_HOLE | keep, offset, len))
            .or_else(|_| {
                // No hole punching here (e.g. a block device): write zeros.
                let zeros = vec![0u8; 64 << 10];
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(zeros.len() as u64) as usize;
                    use std::os::unix::fs::FileExt;
                    self.file.write_all_at(&zeros[..n], offset + done)?;
                    done += n as u64;
                }
                Ok(())
            })
    }
}

/// preadv/pwritev over all of `bufs`, resuming after short transfers.
fn transfer(file: &File, offset: u64, bufs: &[VolatileSlice], write: bool) -> io::Result<()> {
    let mut iovs: Vec<libc::iovec> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| libc::iovec {
            iov_base: b.ptr_guard_mut().as_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut first = 0;
    let mut pos = offset;
    while first < iovs.len() {
        let rest = &iovs[first..];
        let count = rest.len().min(1024) as libc::c_int;
        let at = libc::off_t::try_from(pos)
            .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // SAFETY: every iovec points into guest memory that `bufs`
        // borrows for this whole call (mmap-backed: the address stays valid
        // while mapped, whatever the pointer guard's lifetime); lengths are
        // the slices' lengths, so the kernel stays inside each buffer.
        let n = unsafe {
            if write {
                libc::pwritev(file.as_raw_fd(), rest.as_ptr(), count, at)
            } else {
                libc::preadv(file.as_raw_fd(), rest.as_ptr(), count, at)
            }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let mut n = n as usize;
        pos += n as u64;
        while n > 0 && first < iovs.len() {
            let iov = &mut iovs[first];
            if n >= iov.iov_len {
                n -= iov.iov_len;
                first += 1;
            } else {
                // SAFETY: advancing within the same buffer by less than its length.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(n).cast() };
                iov.iov_len -= n;
                n = 0;
            }
        }
    }
    Ok(())
}

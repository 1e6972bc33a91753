//! The raw backend: the disk is the file (or block device), byte for
//! byte. I/O is preadv/pwritev straight into guest memory; discard punches
//! holes, write-zeroes zeroes ranges.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use vm_memory::VolatileSlice;

use crate::open::OpenError;
use crate::{DiskBackend, SECTOR_SIZE};

/// Why a file cannot be a raw disk (the caller adds the file's name).
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error("cannot stat")]
    Stat(#[source] io::Error),
    #[error("not a regular file or block device")]
    NotAFile,
    #[error("size {0} is not a multiple of 512 bytes")]
    Size(u64),
    #[error("is empty")]
    Empty,
    #[error("cache=none needs O_DIRECT, which its file system refuses")]
    NoDirect(#[source] io::Error),
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

/// Size of a regular file or block device; other kinds are refused.
pub fn file_size(file: &File) -> Result<u64, RawError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = file.metadata().map_err(RawError::Stat)?;
    if meta.file_type().is_block_device() {
        use std::io::Seek;
        let mut f = file;
        f.seek(io::SeekFrom::End(0)).map_err(RawError::Stat)
    } else if meta.is_file() {
        Ok(meta.len())
    } else {
        Err(RawError::NotAFile)
    }
}

/// Opens the file behind `file` a second time with O_DIRECT (through
/// `/proc/self/fd`, so it works for a file passed in as an fd).
pub fn reopen_direct(file: &File, readonly: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(!readonly)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

impl RawFile {
    /// Opens `path` for the raw backend, without locks (tests and tools;
    /// the VMM goes through [`crate::open_file`]).
    pub fn open(path: &Path, readonly: bool) -> Result<Self, OpenError> {
        Self::open_with(path, readonly, false)
    }

    /// Opens `path`; with `direct`, aligned I/O bypasses the page cache.
    pub fn open_with(path: &Path, readonly: bool, direct: bool) -> Result<Self, OpenError> {
        let name = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(!readonly)
            .open(path)
            .map_err(|e| OpenError::Open(name.clone(), e))?;
        Self::from_file(file, readonly, direct).map_err(|e| OpenError::Raw(name, e))
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The raw backend on an open file (readable, and writable unless
    /// `readonly`); with `direct`, a second O_DIRECT handle on it.
    pub fn from_file(file: File, readonly: bool, direct: bool) -> Result<Self, RawError> {
        let direct = if direct {
            Some(reopen_direct(&file, readonly).map_err(RawError::NoDirect)?)
        } else {
            None
        };
        Self::from_files(file, direct)
    }

    /// The raw backend on an open file and, for `cache=none`, an O_DIRECT
    /// handle on the same file that the caller opened.
    pub fn from_files(file: File, direct: Option<File>) -> Result<Self, RawError> {
        let size = file_size(&file)?;
        if size == 0 {
            return Err(RawError::Empty);
        }
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(RawError::Size(size));
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
                use std::os::unix::fs::FileExt;
                crate::fill_zeroes(offset, len, |buf, at| self.file.write_all_at(buf, at))
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

//! Opening a VMM's files by path or as descriptors it was given.
//!
//! A jailed VMM has no path to its resources: its manager opens them and
//! passes descriptors, which the VMM's configuration names `/dev/fd/N` (the
//! convention of bash, QEMU's `/dev/fdset` and many tools). [`open`] takes
//! either form: a path is opened; `/dev/fd/N` is duplicated (each use gets
//! its own descriptor; the offset is shared, so it is rewound) after
//! checking that `N` was opened for what the caller wants to do.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `/dev/fd/N` for descriptor `n`.
pub fn fd_path(n: RawFd) -> PathBuf {
    PathBuf::from(format!("/dev/fd/{n}"))
}

/// The descriptor a `/dev/fd/N` path names, if it is one.
pub fn passed_fd(path: &Path) -> Option<RawFd> {
    let n = path.to_str()?.strip_prefix("/dev/fd/")?;
    let v = n.parse::<RawFd>().ok()?;
    (v >= 0 && v.to_string() == n).then_some(v)
}

/// A close-on-exec duplicate of descriptor `fd` (which stays open).
pub fn dup(fd: RawFd) -> io::Result<File> {
    // SAFETY: F_DUPFD_CLOEXEC takes an int and returns a new descriptor.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(r) })
}

/// Opens `path` for reading, and for writing too with `write`, with extra
/// open(2) `flags` (e.g. `O_DIRECT`). A `/dev/fd/N` path duplicates `N`
/// instead; errors: `EBADF` when `N` is not open, `EACCES` when it is not
/// open for writing and `write` is asked, `EINVAL` when `flags` asks for
/// `O_DIRECT` or `O_APPEND` and `N` lacks it.
pub fn open(path: &Path, write: bool, flags: libc::c_int) -> io::Result<File> {
    let Some(n) = passed_fd(path) else {
        return OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(flags)
            .open(path);
    };
    // SAFETY: F_GETFL on any int; an unknown descriptor gives EBADF.
    let fl = unsafe { libc::fcntl(n, libc::F_GETFL) };
    if fl < 0 {
        return Err(io::Error::last_os_error());
    }
    if write && fl & libc::O_ACCMODE == libc::O_RDONLY {
        return Err(io::Error::from_raw_os_error(libc::EACCES));
    }
    let wanted = flags & (libc::O_DIRECT | libc::O_APPEND);
    if fl & wanted != wanted {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut f = dup(n)?;
    if fl & libc::O_APPEND == 0 {
        // Rewind what a previous boot read (pipes and sockets cannot).
        let _ = f.seek(io::SeekFrom::Start(0));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[test]
    fn paths_and_passed_descriptors() {
        assert_eq!(passed_fd(Path::new("/dev/fd/7")), Some(7));
        for p in [
            "/dev/fd/",
            "/dev/fd/x",
            "/dev/fd/-1",
            "/dev/fd/07",
            "/tmp/dev/fd/3",
        ] {
            assert_eq!(passed_fd(Path::new(p)), None, "{p}");
        }
        let ro = File::open("/etc/hostname").unwrap();
        let p = fd_path(ro.as_raw_fd());
        let mut a = String::new();
        open(&p, false, 0).unwrap().read_to_string(&mut a).unwrap();
        // Read again: rewound, not at the end.
        let mut b = String::new();
        open(&p, false, 0).unwrap().read_to_string(&mut b).unwrap();
        assert_eq!(a, b);
        assert!(!a.is_empty());
        let e = open(&p, true, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
        let e = open(&p, false, libc::O_DIRECT).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        let e = open(&fd_path(9999), false, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }
}

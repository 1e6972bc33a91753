//! Opening files named by an API caller *as that caller*, so that a
//! member of the socket group cannot make root's daemon hand `/etc/shadow`
//! or `/dev/sda` to a VM (what libvirt's DAC/sVirt checks are for).
//!
//! The open runs on a short-lived thread whose filesystem uid/gid and
//! supplementary groups are the caller's: Linux keeps these credentials
//! per thread, and the raw `setfsuid`/`setfsgid`/`setgroups` system calls
//! (unlike glibc's `setgroups`, which changes every thread) touch only the
//! calling one (setfsuid(2), credentials(7)). The last path component is
//! opened with `O_NOFOLLOW`, so a file swapped for a symlink after the
//! definition is refused; `O_NONBLOCK` keeps a FIFO from hanging the open.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use api::manager::Owner;

/// The supplementary groups of `uid` (getgrouplist(3) of its passwd
/// entry; just `gid` when the uid has no entry).
fn groups_of(uid: u32, gid: u32) -> Vec<libc::gid_t> {
    let mut pw: libc::passwd = unsafe_zeroed();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r fills `pw` with pointers into `buf`, both ours
    // and alive until we return; `out` says whether an entry was found.
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return vec![gid];
    }
    let mut n: libc::c_int = 64;
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: `pw.pw_name` points into `buf` (NUL-terminated); `groups`
    // has room for `n` entries and getgrouplist writes at most that many.
    let r = unsafe { libc::getgrouplist(pw.pw_name, gid, groups.as_mut_ptr(), &mut n) };
    if r < 0 {
        return vec![gid];
    }
    groups.truncate(n.max(0) as usize);
    groups
}

fn unsafe_zeroed() -> libc::passwd {
    // SAFETY: passwd is plain data (pointers and integers); all-zero is a
    // valid value that getpwuid_r overwrites.
    unsafe { std::mem::zeroed() }
}

/// How a caller-checked open failed. The message never tells whether a
/// path the caller cannot see exists.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "{what} {path}: no such file, or not {mode} by uid {uid} (symbolic links are not followed)"
    )]
    Denied {
        what: &'static str,
        path: String,
        mode: &'static str,
        uid: u32,
    },
    #[error("{what} {path}: {err}")]
    Other {
        what: &'static str,
        path: String,
        err: io::Error,
    },
}

/// What kind of file a caller may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file or a block device (a disk).
    FileOrBlock,
    /// A regular file only (kernel, initrd, backing files).
    Regular,
}

/// Opens `path` for reading (and writing with `write`), with extra open
/// flags, as `owner` (`None` or uid 0: as vtd itself, following links).
///
/// The type is checked on an `O_PATH` handle (as the owner, so it tells
/// nothing about hidden paths) *before* the file is really opened, through
/// that handle, so a FIFO, a character device (`/dev/watchdog`, a tape, a
/// tty) or a socket is never opened at all, and nothing can be swapped in
/// between the check and the open. The owner's thread also gives up every
/// effective capability, so `/proc/PID/root` and similar magic links are
/// checked as the owner too.
pub fn open_as(
    owner: Option<Owner>,
    what: &'static str,
    path: &Path,
    write: bool,
    flags: libc::c_int,
    kind: Kind,
) -> Result<File, AccessError> {
    let owner = owner.filter(|o| o.uid != 0);
    let open = move || -> io::Result<File> {
        let nofollow = if owner.is_some() { libc::O_NOFOLLOW } else { 0 };
        // First a handle that opens nothing (O_PATH: no device open
        // routine runs, no FIFO blocks), then its type, then the real open
        // of that very inode through /proc/self/fd: nothing can be swapped
        // in between the check and the open.
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | nofollow | libc::O_CLOEXEC)
            .open(path)?;
        let meta = handle.metadata()?;
        if meta.file_type().is_symlink() {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        check_kind(&meta, kind)?;
        use std::os::fd::AsRawFd;
        OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(flags | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
    };
    let result = match owner {
        None => open(),
        Some(o) => {
            let groups = groups_of(o.uid, o.gid);
            std::thread::scope(|s| {
                let t = std::thread::Builder::new().spawn_scoped(s, || -> io::Result<File> {
                    become_owner(o, &groups)?;
                    open()
                });
                match t {
                    Ok(t) => t
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("open thread failed"))),
                    Err(e) => Err(e),
                }
            })
        }
    };
    let name = path.display().to_string();
    let f = result.map_err(|e| match (owner, e.raw_os_error()) {
        (
            Some(o),
            Some(libc::ENOENT | libc::EACCES | libc::EPERM | libc::ELOOP | libc::ENOTDIR),
        ) => AccessError::Denied {
            what,
            path: name.clone(),
            mode: if write { "writable" } else { "readable" },
            uid: o.uid,
        },
        _ => AccessError::Other {
            what,
            path: name.clone(),
            err: e,
        },
    })?;
    // Blocking again for the VMM (O_NONBLOCK only kept a FIFO from hanging us).
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFL/F_SETFL on our own descriptor with integer flags.
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
    Ok(f)
}

fn check_kind(meta: &std::fs::Metadata, kind: Kind) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let ok = meta.is_file() || (kind == Kind::FileOrBlock && meta.file_type().is_block_device());
    if ok {
        return Ok(());
    }
    Err(io::Error::other(match kind {
        Kind::FileOrBlock => "not a regular file or block device",
        Kind::Regular => "not a regular file",
    }))
}

/// Makes the calling thread (only) act as `o` on the file system: its
/// groups, fsgid and fsuid, and no effective capability left.
fn become_owner(o: Owner, groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: raw per-thread credential calls with integers and our own
    // group list; the thread ends right after the open.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::syscall(libc::SYS_setfsgid, o.gid);
        libc::syscall(libc::SYS_setfsuid, o.uid);
        // setfs*id report the previous value: check it took.
        if libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 != o.uid
            || libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 != o.gid
        {
            return Err(io::Error::other("cannot take the caller's identity"));
        }
    }
    jail::privs::clear_effective()
}

impl AccessError {
    /// 403 for what the caller may not use, 400 for the rest.
    pub fn status(&self) -> u16 {
        match self {
            AccessError::Denied { .. } => 403,
            AccessError::Other { .. } => 400,
        }
    }
}

impl From<AccessError> for crate::error::ApiError {
    fn from(e: AccessError) -> Self {
        crate::error::ApiError::new(e.status(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_as_the_caller_and_never_follows_links() {
        if !jail::is_root() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("vt-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let user = Owner {
            uid: 60_001,
            gid: 60_001,
        };
        let theirs = dir.join("theirs.img");
        std::fs::write(&theirs, b"x").unwrap();
        std::os::unix::fs::chown(&theirs, Some(60_001), Some(60_001)).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, b"s").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(open_as(Some(user), "disk", &theirs, true, 0, Kind::FileOrBlock).is_ok());
        let e = open_as(Some(user), "disk", &secret, false, 0, Kind::FileOrBlock).unwrap_err();
        assert_eq!(e.status(), 403, "{e}");
        let e = open_as(
            Some(user),
            "disk",
            Path::new("/etc/shadow"),
            false,
            0,
            Kind::FileOrBlock,
        )
        .unwrap_err();
        assert_eq!(e.status(), 403, "{e}");
        // Missing and forbidden read the same.
        let missing = open_as(
            Some(user),
            "disk",
            &dir.join("nope"),
            false,
            0,
            Kind::FileOrBlock,
        )
        .unwrap_err();
        assert_eq!(missing.status(), 403);
        assert!(missing
            .to_string()
            .contains("no such file, or not readable"));
        // The caller's own file swapped for a link to a root-only file.
        std::fs::remove_file(&theirs).unwrap();
        std::os::unix::fs::symlink(&secret, &theirs).unwrap();
        let e = open_as(Some(user), "disk", &theirs, false, 0, Kind::FileOrBlock).unwrap_err();
        assert_eq!(e.status(), 403, "{e}");
        // Root follows links and reads anything; this thread kept its identity.
        assert!(open_as(None, "disk", &theirs, false, 0, Kind::FileOrBlock).is_ok());
        assert!(open_as(
            Some(Owner { uid: 0, gid: 0 }),
            "disk",
            &secret,
            true,
            0,
            Kind::FileOrBlock
        )
        .is_ok());
        // A FIFO neither hangs nor passes.
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        // Nor is a character device opened, even by root.
        let null = open_as(
            None,
            "disk",
            Path::new("/dev/null"),
            false,
            0,
            Kind::FileOrBlock,
        );
        assert_eq!(null.unwrap_err().status(), 400);
        assert_eq!(
            open_as(None, "disk", &fifo, false, 0, Kind::FileOrBlock)
                .unwrap_err()
                .status(),
            400
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

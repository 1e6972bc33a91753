//! Image locks, the way QEMU takes them (`block/file-posix.c`), so VT
//! System and QEMU respect each other's locks.
//!
//! Open-file-description locks (`F_OFD_SETLK`): they belong to the open
//! file, not the process, so they survive `fork`, pass with the fd to a
//! jailed VMM, and vanish when the last fd of that open file closes (a
//! process killed with SIGKILL included). Only shared (read) locks are
//! ever held, one byte each:
//! - byte `100 + p` while we *use* permission `p`;
//! - byte `200 + p` while we *forbid others* permission `p`.
//!
//! Permissions (QEMU's `BLK_PERM_*` bits): 0 consistent read, 1 write,
//! 2 write-unchanged, 3 resize. A writer uses 0, 1, 2 and forbids 1, 3;
//! a reader uses 0 and forbids 1, 3. So there is one writer, or any number
//! of readers, and never both. After taking its bytes, an opener tests
//! (`F_OFD_GETLK` for a write lock) the bytes that would conflict: `100 +
//! p` for what it forbids, `200 + p` for what it uses.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// How an image is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Read-only use (a read-only disk, a backing file): others may read,
    /// nobody may write.
    Shared,
    /// Writable use: nobody else may read or write.
    Exclusive,
}

/// Why an image could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process writes the image.
    #[error("disk {0} is in use by another process (locked for writing)")]
    Writer(String),
    /// We want to write, and another process has the image open and
    /// forbids writers (a reader, or a VM using it as a backing file).
    #[error("disk {0} is in use by another process (open read-only there, which forbids writers)")]
    Reader(String),
    /// The lock calls themselves failed.
    #[error("cannot lock disk {0}")]
    Fcntl(String, #[source] io::Error),
}

const PERM_BASE: i64 = 100;
const SHARED_BASE: i64 = 200;
const READ: i64 = 0;
const WRITE: i64 = 1;
const WRITE_UNCHANGED: i64 = 2;
const RESIZE: i64 = 3;

fn perms(mode: LockMode) -> (&'static [i64], &'static [i64]) {
    match mode {
        LockMode::Shared => (&[READ], &[WRITE, RESIZE]),
        LockMode::Exclusive => (&[READ, WRITE, WRITE_UNCHANGED], &[WRITE, RESIZE]),
    }
}

fn fcntl_lock(file: &File, cmd: libc::c_int, kind: libc::c_int, byte: i64) -> io::Result<i16> {
    // SAFETY: flock is plain data; all-zero is a valid value (l_pid must be
    // 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte;
    fl.l_len = 1;
    // SAFETY: fcntl on our own fd with a pointer to a live flock it may
    // write back into (F_OFD_GETLK).
    let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type)
}

/// Is `byte` locked by another open file?
fn taken(file: &File, byte: i64) -> io::Result<bool> {
    let t = fcntl_lock(file, libc::F_OFD_GETLK, libc::F_WRLCK, byte)?;
    Ok(t != libc::F_UNLCK as i16)
}

/// Locks `file` (shown as `name` in errors) in `mode`; the lock lasts
/// while the open file does. On a conflict, our bytes are released again
/// before the error returns. File systems without OFD locks (ENOLCK,
/// EOPNOTSUPP, EINVAL) leave the image unlocked, as QEMU does.
pub fn lock(file: &File, name: &str, mode: LockMode) -> Result<(), LockError> {
    let (used, forbidden) = perms(mode);
    let bytes = used
        .iter()
        .map(|p| PERM_BASE + p)
        .chain(forbidden.iter().map(|p| SHARED_BASE + p));
    for b in bytes {
        match fcntl_lock(file, libc::F_OFD_SETLK, libc::F_RDLCK, b) {
            Ok(_) => {}
            Err(e) if unsupported(&e) => return Ok(()),
            Err(e) if busy(&e) => return fail(file, LockError::Writer(name.into())),
            Err(e) => return fail(file, LockError::Fcntl(name.into(), e)),
        }
    }
    for p in forbidden {
        match taken(file, PERM_BASE + p) {
            Ok(false) => {}
            Ok(true) => return fail(file, LockError::Writer(name.into())),
            Err(e) => return fail(file, LockError::Fcntl(name.into(), e)),
        }
    }
    for p in used {
        match taken(file, SHARED_BASE + p) {
            Ok(false) => {}
            Ok(true) => return fail(file, LockError::Reader(name.into())),
            Err(e) => return fail(file, LockError::Fcntl(name.into(), e)),
        }
    }
    Ok(())
}

/// Releases every lock byte this open file holds.
pub fn unlock(file: &File) {
    for b in (PERM_BASE..PERM_BASE + 4).chain(SHARED_BASE..SHARED_BASE + 4) {
        let _ = fcntl_lock(file, libc::F_OFD_SETLK, libc::F_UNLCK, b);
    }
}

fn fail(file: &File, e: LockError) -> Result<(), LockError> {
    unlock(file);
    Err(e)
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::EINVAL)
    )
}

fn busy(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    /// The kill test forks a child: between fork and exec the child holds
    /// copies of every fd, locks included, so the tests take turns.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("vt-lock-{}-{name}", std::process::id()));
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        p
    }

    fn open(p: &std::path::Path, write: bool) -> File {
        OpenOptions::new().read(true).write(write).open(p).unwrap()
    }

    #[test]
    fn second_writer_refused() {
        let _turn = serial();
        let p = temp("ww");
        let a = open(&p, true);
        lock(&a, "a", LockMode::Exclusive).unwrap();
        let b = open(&p, true);
        let e = lock(&b, "x.img", LockMode::Exclusive).unwrap_err();
        assert_eq!(
            e.to_string(),
            "disk x.img is in use by another process (locked for writing)"
        );
        // A reader is refused too, and a writer is refused while readers hold it.
        assert!(matches!(
            lock(&b, "x", LockMode::Shared),
            Err(LockError::Writer(_))
        ));
        drop(a);
        // Gone with the holder's fd.
        lock(&b, "x", LockMode::Exclusive).unwrap();
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn readers_share_and_keep_writers_out() {
        let _turn = serial();
        let p = temp("rr");
        let a = open(&p, false);
        let b = open(&p, false);
        lock(&a, "a", LockMode::Shared).unwrap();
        lock(&b, "b", LockMode::Shared).unwrap();
        let w = open(&p, true);
        assert!(matches!(
            lock(&w, "w", LockMode::Exclusive),
            Err(LockError::Reader(_))
        ));
        drop(a);
        drop(b);
        lock(&w, "w", LockMode::Exclusive).unwrap();
        std::fs::remove_file(p).unwrap();
    }

    /// Not a test by itself: run as a child process by the next test
    /// (with `VT_LOCK_CHILD=path`), it locks the file and waits to be killed.
    #[test]
    fn child_holder() {
        let Some(p) = std::env::var_os("VT_LOCK_CHILD") else {
            return;
        };
        let f = open(std::path::Path::new(&p), true);
        lock(&f, "c", LockMode::Exclusive).unwrap();
        println!("locked");
        std::thread::sleep(std::time::Duration::from_secs(60));
    }

    #[test]
    fn lock_released_when_holder_is_killed() {
        use std::io::BufRead;
        let _turn = serial();
        let p = temp("kill");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock::tests::child_holder",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("VT_LOCK_CHILD", &p)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let locked = std::io::BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("locked"));
        assert!(locked);
        let w = open(&p, true);
        assert!(matches!(
            lock(&w, "w", LockMode::Exclusive),
            Err(LockError::Writer(_))
        ));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        lock(&w, "w", LockMode::Exclusive).unwrap();
        std::fs::remove_file(&p).unwrap();
    }
}

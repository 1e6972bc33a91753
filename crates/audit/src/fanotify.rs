//! File-access watches with fanotify(7): `auditctl -w PATH -p rwxa`
//! semantics, mapped to what fanotify can report:
//!
//! | perm | fanotify events                    | record actions              |
//! |------|------------------------------------|-----------------------------|
//! | `r`  | `FAN_OPEN_PERM`, `FAN_ACCESS`      | `watch.open`, `watch.read`  |
//! | `w`  | `FAN_MODIFY`, `FAN_CLOSE_WRITE`    | `watch.write`, `watch.close-write` |
//! | `x`  | `FAN_OPEN_EXEC_PERM`               | `watch.exec`                |
//! | `a`  | `FAN_ATTRIB` (a second, FID group) | `watch.attr`                |
//!
//! An admin's watch (`image_of` unset) reports opens as permission
//! events: the opener waits (microseconds) until the watcher has read its
//! `/proc/PID/exe` and uid, so even a short-lived `cat` is named; the
//! answer is always "allow" (watches observe, they do not refuse). A VM
//! image's watch (`image_of` set; the path comes from a VM definition,
//! which any user may write) uses the notification events `FAN_OPEN` and
//! `FAN_OPEN_EXEC` instead: nobody ever waits on the watcher for it, and
//! the opener's exe is read after the fact (absent when it was gone).
//!
//! Marks are put with `FAN_MARK_DONT_FOLLOW` on the path given, which
//! must not be a symbolic link (callers pass canonical paths). If the
//! reading thread cannot go on ([`Watcher::run`] returns after retrying
//! transient errors with backoff), the groups are closed
//! ([`Watcher::close`]): the kernel then allows every pending permission
//! event and no opener is left waiting. fanotify cannot tell an open for reading from one for
//! writing (the event's descriptor has the watcher's flags): every open is
//! `watch.open` under `r`. Reads and writes through descriptors opened
//! earlier (a VMM's disk, passed by `vtd`) come as `FAN_ACCESS`/`FAN_MODIFY`
//! with the reading process's pid. `a` covers chmod, chown, utimes and
//! extended attributes; a truncate is a `FAN_MODIFY`. Watches are on the
//! inode: a file replaced by rename is no longer watched.
//!
//! Repeats are coalesced: the first access of a kind by a process to a
//! watched file is reported at once; more of the same within the
//! interval are counted and reported once when it ends (as `count`).

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What a watch reports (`auditctl -p` letters; in JSON the letters as
/// a string, `"rwa"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub attr: bool,
}

impl std::str::FromStr for Perms {
    type Err = String;
    fn from_str(s: &str) -> Result<Perms, String> {
        let mut p = Perms::default();
        for c in s.chars() {
            match c {
                'r' => p.read = true,
                'w' => p.write = true,
                'x' => p.exec = true,
                'a' => p.attr = true,
                _ => return Err(format!("perm '{s}': use the letters r, w, x, a")),
            }
        }
        if p == Perms::default() {
            return Err("perm: give at least one of r, w, x, a".into());
        }
        Ok(p)
    }
}

impl From<Perms> for String {
    fn from(p: Perms) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for Perms {
    type Error = String;
    fn try_from(s: String) -> Result<Perms, String> {
        s.parse()
    }
}

impl std::fmt::Display for Perms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (on, c) in [
            (self.read, 'r'),
            (self.write, 'w'),
            (self.exec, 'x'),
            (self.attr, 'a'),
        ] {
            if on {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl Perms {
    /// The mask for the content (descriptor) group: opens as
    /// permission events when `blocking`, else as notifications.
    fn content_mask(self, blocking: bool) -> u64 {
        let mut m = 0;
        if self.read {
            m |= libc::FAN_ACCESS;
            m |= if blocking {
                libc::FAN_OPEN_PERM
            } else {
                libc::FAN_OPEN
            };
        }
        if self.write {
            m |= libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE;
        }
        if self.exec {
            m |= if blocking {
                libc::FAN_OPEN_EXEC_PERM
            } else {
                libc::FAN_OPEN_EXEC
            };
        }
        m
    }

    fn covers(self, kind: Kind) -> bool {
        match kind {
            Kind::Open | Kind::Read => self.read,
            Kind::Write | Kind::CloseWrite => self.write,
            Kind::Exec => self.exec,
            Kind::Attr => self.attr,
        }
    }
}

/// One kind of access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Open,
    Read,
    Write,
    CloseWrite,
    Exec,
    Attr,
}

impl Kind {
    /// The record's action: `watch.open`, `watch.read`, ...
    pub fn action(self) -> &'static str {
        match self {
            Kind::Open => "watch.open",
            Kind::Read => "watch.read",
            Kind::Write => "watch.write",
            Kind::CloseWrite => "watch.close-write",
            Kind::Exec => "watch.exec",
            Kind::Attr => "watch.attr",
        }
    }

    fn of_mask(mask: u64) -> Vec<Kind> {
        let mut out = Vec::new();
        for (bit, k) in [
            (libc::FAN_OPEN_PERM | libc::FAN_OPEN, Kind::Open),
            (libc::FAN_ACCESS, Kind::Read),
            (libc::FAN_MODIFY, Kind::Write),
            (libc::FAN_CLOSE_WRITE, Kind::CloseWrite),
            (libc::FAN_OPEN_EXEC_PERM | libc::FAN_OPEN_EXEC, Kind::Exec),
            (libc::FAN_ATTRIB, Kind::Attr),
        ] {
            if mask & bit != 0 {
                out.push(k);
            }
        }
        out
    }
}

/// A watch as added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// Set by [`Watcher::add`].
    #[serde(default)]
    pub id: u64,
    pub path: PathBuf,
    pub perms: Perms,
    pub key: String,
    /// Set for the watches `vtd` puts on a VM's images: that VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_of: Option<String>,
}

/// One (possibly coalesced) access, for the caller to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub watch: Watch,
    pub kind: Kind,
    pub pid: i32,
    /// `/proc/PID/exe`, `None` when the process was gone.
    pub exe: Option<String>,
    /// Real uid and gid (`/proc/PID/status`).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// 1 for a first access; more for a summary of repeats.
    pub count: u64,
    /// True for a summary of repeats within the interval.
    pub repeated: bool,
}

/// Why a watch cannot be added.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0}: {1}")]
    Path(String, io::Error),
    #[error("{0}: fanotify_mark: {1}")]
    Mark(String, io::Error),
    #[error("attribute watches (perm a) need FAN_REPORT_FID (Linux 5.1), not available: {0}")]
    NoAttr(String),
    #[error("{0}: a symbolic link: name the file itself")]
    Symlink(String),
    #[error("the file-watch thread has stopped: no watch can be added")]
    Closed,
}

struct Mark {
    watch: Watch,
    dev: u64,
    ino: u64,
    /// The file handle (type and bytes) of the inode, for FID events.
    handle: Option<Vec<u8>>,
}

/// A fanotify group pair and its watches. [`Watcher::run`] reads events
/// on one thread; watches are added and removed from any thread.
pub struct Watcher {
    content: OwnedFd,
    fid: Result<OwnedFd, String>,
    marks: Mutex<Vec<Mark>>,
    next_id: Mutex<u64>,
    /// Set by [`Watcher::close`].
    closed: AtomicBool,
    /// An errno [`Watcher::run`] takes as its next read's (tests).
    injected: AtomicI32,
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

fn init(flags: u32) -> io::Result<OwnedFd> {
    let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32;
    // SAFETY: fanotify_init takes two flag words and returns a new fd.
    let fd =
        unsafe { libc::fanotify_init(flags | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK, event_flags) };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: the descriptor was just created and belongs to nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mark(fd: RawFd, flags: u32, mask: u64, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a NUL-terminated path alive for the call; the group
    // descriptor is ours.
    let r = unsafe { libc::fanotify_mark(fd, flags, mask, libc::AT_FDCWD, c.as_ptr()) };
    if r < 0 {
        return Err(last_err());
    }
    Ok(())
}

/// `struct file_handle` with room for the largest handle (MAX_HANDLE_SZ).
#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; 128],
}

/// The file handle of `path` (name_to_handle_at(2)): type then bytes, as
/// fanotify reports them in FID events.
fn handle_of(path: &Path) -> io::Result<Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut h = FileHandle {
        handle_bytes: 128,
        handle_type: 0,
        f_handle: [0; 128],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `h` is a file_handle header followed by `handle_bytes` bytes
    // of room, as the call requires; `c` is a NUL-terminated path and
    // `mount_id` is writable; all live for the call.
    let r = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            (&mut h as *mut FileHandle).cast::<libc::file_handle>(),
            &mut mount_id,
            0,
        )
    };
    if r < 0 {
        return Err(last_err());
    }
    let n = (h.handle_bytes as usize).min(h.f_handle.len());
    let mut out = h.handle_type.to_ne_bytes().to_vec();
    out.extend_from_slice(&h.f_handle[..n]);
    Ok(out)
}

/// Reads `/proc/PID/exe` and the real uid/gid from `/proc/PID/status`.
pub fn process_info(pid: i32) -> (Option<String>, Option<u32>, Option<u32>) {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.display().to_string());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    (exe, field("Uid:"), field("Gid:"))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// One event as read from a group.
struct Raw {
    mask: u64,
    fd: i32,
    pid: i32,
    /// FID events: the handle (type and bytes).
    handle: Option<Vec<u8>>,
}

/// Splits a buffer of events (fanotify(7): `fanotify_event_metadata`
/// records, each `event_len` long, FID info records after the metadata);
/// also how many bytes were understood (the rest: a malformed record).
fn parse(buf: &[u8]) -> (Vec<Raw>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(meta_len)) = (u32_at(buf, at), buf.get(at + 6..at + 8)) {
        let len = len as usize;
        let meta_len = u16::from_ne_bytes([meta_len[0], meta_len[1]]) as usize;
        let vers = buf.get(at + 4).copied();
        if len < 24 || at + len > buf.len() || vers != Some(libc::FANOTIFY_METADATA_VERSION) {
            break;
        }
        let ev = &buf[at..at + len];
        let (Some(mask), Some(fd), Some(pid)) = (u64_at(ev, 8), u32_at(ev, 16), u32_at(ev, 20))
        else {
            break;
        };
        // fanotify_event_info_fid: header (type u8, pad, len u16), fsid
        // (8 bytes), then struct file_handle (u32 bytes, i32 type, bytes).
        let handle = ev.get(meta_len..).and_then(|info| {
            if info.first() != Some(&libc::FAN_EVENT_INFO_TYPE_FID) {
                return None;
            }
            let n = u32_at(info, 12)? as usize;
            info.get(16..20 + n).map(<[u8]>::to_vec)
        });
        out.push(Raw {
            mask,
            fd: fd as i32,
            pid: pid as i32,
            handle,
        });
        at += len;
    }
    (out, at)
}

/// Pending repeats: (pid, watch id, kind) -> the first access and the
/// count since it was reported.
type Pending = HashMap<(i32, u64, Kind), (Access, Instant)>;

impl Watcher {
    /// Makes the fanotify groups. Needs CAP_SYS_ADMIN.
    pub fn new() -> io::Result<Watcher> {
        let content = init(libc::FAN_CLASS_CONTENT)?;
        let fid = init(libc::FAN_CLASS_NOTIF | libc::FAN_REPORT_FID).map_err(|e| e.to_string());
        Ok(Watcher {
            content,
            fid,
            marks: Mutex::new(Vec::new()),
            next_id: Mutex::new(1),
            closed: AtomicBool::new(false),
            injected: AtomicI32::new(0),
        })
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Vec<Mark>> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the inode of `path` with the union of its watches' masks.
    fn remark(&self, marks: &[Mark], dev: u64, ino: u64, path: &Path) -> Result<(), WatchError> {
        let (mut content, mut attr) = (0, false);
        for m in marks.iter().filter(|m| m.dev == dev && m.ino == ino) {
            content |= m.watch.perms.content_mask(m.watch.image_of.is_none());
            attr |= m.watch.perms.attr;
        }
        let name = path.display().to_string();
        let nofollow = libc::FAN_MARK_DONT_FOLLOW;
        let set = |fd: RawFd, mask: u64| -> Result<(), WatchError> {
            // Remove what is no longer wanted, add what is.
            let all = libc::FAN_OPEN_PERM
                | libc::FAN_OPEN
                | libc::FAN_OPEN_EXEC
                | libc::FAN_ACCESS
                | libc::FAN_MODIFY
                | libc::FAN_CLOSE_WRITE
                | libc::FAN_OPEN_EXEC_PERM
                | libc::FAN_ATTRIB;
            if all & !mask != 0 {
                let _ = mark(fd, libc::FAN_MARK_REMOVE | nofollow, all & !mask, path);
            }
            if mask != 0 {
                mark(fd, libc::FAN_MARK_ADD | nofollow, mask, path)
                    .map_err(|e| WatchError::Mark(name.clone(), e))?;
            }
            Ok(())
        };
        set(self.content.as_raw_fd(), content)?;
        match &self.fid {
            Ok(fd) => set(fd.as_raw_fd(), if attr { libc::FAN_ATTRIB } else { 0 })?,
            Err(e) if attr => return Err(WatchError::NoAttr(e.clone())),
            Err(_) => {}
        }
        Ok(())
    }

    /// Adds a watch on `w.path` (which must exist); returns it with its id.
    pub fn add(&self, mut w: Watch) -> Result<Watch, WatchError> {
        let name = w.path.display().to_string();
        if self.closed.load(Ordering::SeqCst) {
            return Err(WatchError::Closed);
        }
        let meta =
            std::fs::symlink_metadata(&w.path).map_err(|e| WatchError::Path(name.clone(), e))?;
        if meta.file_type().is_symlink() {
            return Err(WatchError::Symlink(name));
        }
        let handle = if w.perms.attr {
            Some(handle_of(&w.path).map_err(|e| WatchError::Path(name.clone(), e))?)
        } else {
            None
        };
        let mut marks = self.marks();
        {
            let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
            w.id = *next;
            *next += 1;
        }
        marks.push(Mark {
            watch: w.clone(),
            dev: meta.dev(),
            ino: meta.ino(),
            handle,
        });
        if let Err(e) = self.remark(&marks, meta.dev(), meta.ino(), &w.path) {
            marks.pop();
            let _ = self.remark(&marks, meta.dev(), meta.ino(), &w.path);
            return Err(e);
        }
        Ok(w)
    }

    /// Removes watch `id`; false when there is none.
    pub fn remove(&self, id: u64) -> bool {
        let mut marks = self.marks();
        let Some(i) = marks.iter().position(|m| m.watch.id == id) else {
            return false;
        };
        let m = marks.remove(i);
        let _ = self.remark(&marks, m.dev, m.ino, &m.watch.path);
        true
    }

    /// Every watch.
    pub fn list(&self) -> Vec<Watch> {
        self.marks().iter().map(|m| m.watch.clone()).collect()
    }

    /// The watches an event on (dev, ino) or on `handle` concerns.
    fn matching(&self, file: Option<(u64, u64)>, handle: Option<&[u8]>) -> Vec<Watch> {
        self.marks()
            .iter()
            .filter(|m| match (file, handle) {
                (Some((d, i)), _) => m.dev == d && m.ino == i,
                (None, Some(h)) => m.handle.as_deref() == Some(h),
                (None, None) => false,
            })
            .map(|m| m.watch.clone())
            .collect()
    }

    /// Handles one event: answers a permission event (always allow)
    /// after reading who asked, and returns the accesses it means.
    fn handle(&self, group: RawFd, raw: Raw) -> Vec<(Watch, Kind, i32, Option<ProcInfo>)> {
        let mut file = None;
        let mut info = None;
        if raw.fd >= 0 {
            // SAFETY: the kernel gave us this descriptor with the event;
            // we own it and close it when `owned` drops.
            let owned = unsafe { OwnedFd::from_raw_fd(raw.fd) };
            let f = std::fs::File::from(owned);
            file = f.metadata().ok().map(|m| (m.dev(), m.ino()));
            let perm = libc::FAN_OPEN_PERM | libc::FAN_OPEN_EXEC_PERM;
            if raw.mask & perm != 0 {
                // Read while the opener waits, so it is still there.
                info = Some(process_info(raw.pid));
                let resp = libc::fanotify_response {
                    fd: f.as_raw_fd(),
                    response: libc::FAN_ALLOW,
                };
                let size = std::mem::size_of::<libc::fanotify_response>();
                // SAFETY: writes `size` bytes from a live fanotify_response
                // to our group's descriptor.
                let _ = unsafe {
                    libc::write(
                        group,
                        (&resp as *const libc::fanotify_response).cast(),
                        size,
                    )
                };
            }
        }
        let watches = self.matching(file, raw.handle.as_deref());
        let mut out = Vec::new();
        for kind in Kind::of_mask(raw.mask) {
            for w in watches.iter().filter(|w| w.perms.covers(kind)) {
                out.push((w.clone(), kind, raw.pid, info.clone()));
            }
        }
        out
    }

    /// Stops watching for good: removes every mark and closes both
    /// groups (each descriptor number is pointed at `/dev/null`), so the
    /// kernel allows every permission event still pending and no later
    /// open waits. [`Watcher::run`] returns; [`Watcher::add`] fails.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let null = std::fs::File::open("/dev/null");
        let mut fds = vec![self.content.as_raw_fd()];
        if let Ok(f) = &self.fid {
            fds.push(f.as_raw_fd());
        }
        for fd in fds {
            // SAFETY: FAN_MARK_FLUSH on our own group takes no path.
            unsafe {
                libc::fanotify_mark(
                    fd,
                    libc::FAN_MARK_FLUSH,
                    0,
                    libc::AT_FDCWD,
                    std::ptr::null(),
                )
            };
            if let Ok(n) = &null {
                // SAFETY: dup2 atomically closes the group (its last
                // reference: the kernel then allows its pending events)
                // and leaves the number open on /dev/null, so the
                // OwnedFd that owns `fd` still closes a valid descriptor.
                unsafe { libc::dup2(n.as_raw_fd(), fd) };
            }
        }
    }

    /// Makes the next read in [`Watcher::run`] fail with `errno` (for
    /// tests of the failure paths).
    #[doc(hidden)]
    pub fn inject_error(&self, errno: i32) {
        self.injected.store(errno, Ordering::SeqCst);
    }

    /// Reads events until [`Watcher::close`] or a fatal error, calling
    /// `sink` for each first access and each summary of repeats (after
    /// `interval`). Out of descriptors or memory (EMFILE, ENFILE, ENOMEM,
    /// ENOBUFS) it retries with backoff (0.1 s doubling to 5 s, 10
    /// times); on any other error, or when retries run out, it closes
    /// the groups ([`Watcher::close`]) and returns the error.
    pub fn run(&self, interval: Duration, sink: impl FnMut(Access)) -> io::Error {
        let e = self.read_events(interval, sink);
        self.close();
        e
    }

    fn read_events(&self, interval: Duration, mut sink: impl FnMut(Access)) -> io::Error {
        let mut pending: Pending = HashMap::new();
        let mut retries = 0u32;
        // 8-aligned buffer for the event records.
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut fds = vec![libc::pollfd {
                fd: self.content.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if let Ok(f) = &self.fid {
                fds.push(libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            if self.closed.load(Ordering::SeqCst) {
                return io::Error::other("the watcher was closed");
            }
            let wait_ms = if pending.is_empty() { 1000 } else { 250 };
            // SAFETY: `fds` is a live array of that many pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
            if n < 0 && last_err().raw_os_error() != Some(libc::EINTR) {
                return last_err();
            }
            let injected = self.injected.swap(0, Ordering::SeqCst);
            if injected != 0 {
                fds[0].revents |= libc::POLLIN;
            }
            for p in fds.iter().filter(|p| p.revents & libc::POLLIN != 0) {
                let got = if injected != 0 && p.fd == self.content.as_raw_fd() {
                    // SAFETY: sets this thread's errno, read just below.
                    unsafe { *libc::__errno_location() = injected };
                    -1
                } else {
                    // SAFETY: reads at most buf.len() bytes into our buffer.
                    unsafe { libc::read(p.fd, buf.as_mut_ptr().cast(), buf.len()) }
                };
                if got < 0 {
                    let e = last_err();
                    match e.raw_os_error() {
                        Some(libc::EINTR | libc::EAGAIN) => continue,
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
                            if retries < 10 =>
                        {
                            let wait = Duration::from_millis(100 << retries.min(6));
                            eprintln!("fanotify: read: {e}: retrying in {wait:?}");
                            std::thread::sleep(wait.min(Duration::from_secs(5)));
                            retries += 1;
                            continue;
                        }
                        _ => return e,
                    }
                }
                retries = 0;
                let (raws, understood) = parse(&buf[..got as usize]);
                let malformed = understood != got as usize;
                for raw in raws {
                    if raw.mask & libc::FAN_Q_OVERFLOW != 0 {
                        eprintln!(
                            "fanotify: event queue overflowed: some accesses were not reported"
                        );
                        continue;
                    }
                    for (watch, kind, pid, info) in self.handle(p.fd, raw) {
                        offer(&mut pending, watch, kind, pid, info, interval, &mut sink);
                    }
                }
                if malformed {
                    // Events after it (and their permission requests)
                    // cannot be found: closing the groups allows them.
                    return io::Error::other("fanotify: a malformed event record");
                }
            }
            flush(&mut pending, interval, &mut sink);
        }
    }
}

type ProcInfo = (Option<String>, Option<u32>, Option<u32>);

/// Reports a first access now; counts a repeat within the interval.
fn offer(
    pending: &mut Pending,
    watch: Watch,
    kind: Kind,
    pid: i32,
    info: Option<ProcInfo>,
    interval: Duration,
    sink: &mut impl FnMut(Access),
) {
    let k = (pid, watch.id, kind);
    if let Some((a, since)) = pending.get_mut(&k) {
        if since.elapsed() < interval {
            a.count += 1;
            return;
        }
    }
    let (exe, uid, gid) = info.unwrap_or_else(|| process_info(pid));
    let a = Access {
        watch,
        kind,
        pid,
        exe,
        uid,
        gid,
        count: 1,
        repeated: false,
    };
    sink(a.clone());
    pending.insert(
        k,
        (
            Access {
                count: 0,
                repeated: true,
                ..a
            },
            Instant::now(),
        ),
    );
}

/// Reports the repeats of every interval that has ended.
fn flush(pending: &mut Pending, interval: Duration, sink: &mut impl FnMut(Access)) {
    pending.retain(|_, (a, since)| {
        if since.elapsed() < interval {
            return true;
        }
        if a.count > 0 {
            sink(a.clone());
        }
        false
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perms_parse_and_print() {
        let p: Perms = "rwa".parse().unwrap();
        assert!(p.read && p.write && p.attr && !p.exec);
        assert_eq!(p.to_string(), "rwa");
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"rwa\"");
        assert_eq!(
            serde_json::from_str::<Perms>("\"xr\"").unwrap().to_string(),
            "rx"
        );
        assert!(serde_json::from_str::<Perms>("\"z\"").is_err());
        assert!("".parse::<Perms>().is_err());
        assert!("rq".parse::<Perms>().is_err());
        assert_eq!(
            Perms {
                read: true,
                ..Perms::default()
            }
            .content_mask(true),
            libc::FAN_OPEN_PERM | libc::FAN_ACCESS
        );
    }

    #[test]
    fn garbage_event_buffers_do_not_panic() {
        let mut seed = 7u64;
        for len in 0..300 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 33) as u8
                })
                .collect();
            let _ = parse(&buf);
        }
        // A well-formed event with a FID record.
        let mut ev = Vec::new();
        ev.extend(48u32.to_ne_bytes());
        ev.push(libc::FANOTIFY_METADATA_VERSION);
        ev.push(0);
        ev.extend(24u16.to_ne_bytes());
        ev.extend(libc::FAN_ATTRIB.to_ne_bytes());
        ev.extend((-1i32).to_ne_bytes());
        ev.extend(77i32.to_ne_bytes());
        ev.extend([libc::FAN_EVENT_INFO_TYPE_FID, 0]);
        ev.extend(24u16.to_ne_bytes());
        ev.extend([0u8; 8]);
        ev.extend(4u32.to_ne_bytes());
        ev.extend(1i32.to_ne_bytes());
        ev.extend([9u8, 9, 9, 9]);
        let (r, understood) = parse(&ev);
        assert_eq!((r.len(), understood), (1, ev.len()));
        assert_eq!((r[0].pid, r[0].fd, r[0].mask), (77, -1, libc::FAN_ATTRIB));
        let mut want = 1i32.to_ne_bytes().to_vec();
        want.extend([9u8, 9, 9, 9]);
        assert_eq!(r[0].handle.as_deref(), Some(want.as_slice()));
    }
}

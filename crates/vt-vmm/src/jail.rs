//! `vt-vmm --jail`: entering the cell before anything else runs.
//!
//! Under `vtd` the VMM starts as pid 1 of fresh namespaces with every
//! resource already open (`/dev/fd/N` in its flags): it only builds the
//! cell and drops privileges. Run by hand (`vt-vmm --jail` as root), it
//! first opens its resources itself, the same way (`/dev/fd/N`), then
//! makes the namespaces and forks: the parent stays outside only to pass
//! on SIGTERM/SIGINT/SIGHUP and the exit status.

use std::fs::OpenOptions;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use api::VmConfig;

/// Who the VMM becomes in its cell.
pub struct JailArgs {
    pub uid: u32,
    pub gid: u32,
    pub file_size: Option<u64>,
    pub hostname: Option<String>,
}

/// Where the process goes on after [`enter`].
pub enum Entered {
    /// In the cell, unprivileged: run the VM.
    Inside,
    /// The outside parent of a hand-run jail: exit with this status.
    Outside(u8),
}

fn keep(fd: impl Into<OwnedFd>) -> PathBuf {
    devices::files::fd_path(fd.into().into_raw_fd())
}

fn open_fd(path: &Path, write: bool, flags: i32, what: &str) -> Result<PathBuf, String> {
    if devices::files::passed_fd(path).is_some() {
        return Ok(path.to_path_buf());
    }
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(flags | libc::O_CLOEXEC)
        .open(path)
        .map(keep)
        .map_err(|e| format!("cannot open {what} {}: {e}", path.display()))
}

/// Opens every resource of `config` (and binds `api`) here, outside the
/// cell, and names them `/dev/fd/N` instead.
fn preopen(config: &mut VmConfig, api: &mut Option<PathBuf>) -> Result<Option<PathBuf>, String> {
    if !config.kernel.as_os_str().is_empty() {
        config.kernel = open_fd(&config.kernel, false, 0, "kernel")?;
    }
    if let Some(f) = &config.firmware {
        config.firmware = Some(open_fd(f, false, 0, "firmware")?);
    }
    if let Some(i) = &config.initrd {
        config.initrd = Some(open_fd(i, false, 0, "initrd")?);
    }
    for d in &mut config.disks {
        if d.cache == api::CacheMode::Direct && d.direct_path.is_none() {
            d.direct_path = Some(open_fd(&d.path, !d.readonly, libc::O_DIRECT, "disk")?);
        }
        // A qcow2's backing files, read-only: the cell has no path to them.
        if d.backing_paths.is_empty() && devices::files::passed_fd(&d.path).is_none() {
            for b in disk::backing_chain(&d.path) {
                // Regular files only: a FIFO or a device is never opened.
                if !std::fs::metadata(&b).is_ok_and(|m| m.is_file()) {
                    return Err(format!(
                        "backing file {} is not a regular file",
                        b.display()
                    ));
                }
                d.backing_paths.push(open_fd(&b, false, 0, "backing file")?);
            }
        }
        d.path = open_fd(&d.path, !d.readonly, 0, "disk")?;
    }
    if let api::SerialConfig::File(p) = &config.serial {
        if devices::files::passed_fd(p).is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(p)
                .map_err(|e| format!("cannot open serial file {}: {e}", p.display()))?;
            config.serial = api::SerialConfig::File(keep(f));
        }
    }
    for n in &mut config.nets {
        if n.fd.is_none() {
            let tap = devices::virtio::net::tap::Tap::open(&n.tap)
                .map_err(|e| format!("tap {}: {e}", n.tap))?;
            n.fd = Some(tap.into_fd().into_raw_fd() as u32);
        }
    }
    let mut bound = None;
    if let Some(p) = api
        .as_ref()
        .filter(|p| devices::files::passed_fd(p).is_none())
    {
        // As without the jail: a stale socket is replaced, a live one or
        // anything else at the path is an error.
        let l = vmm::control::Control::bind(p).map_err(|e| crate::cli::error_chain(&e))?;
        bound = Some(p.clone());
        *api = Some(keep(l));
    }
    Ok(bound)
}

/// Enters the cell (see the module doc). Errors are one line.
pub fn enter(
    args: &JailArgs,
    config: &mut VmConfig,
    api: &mut Option<PathBuf>,
) -> Result<Entered, String> {
    if !jail::is_root() {
        return Err("--jail needs root (it makes namespaces and drops to --jail-uid)".into());
    }
    // SAFETY: getpid has no arguments and cannot fail.
    let hand_run = unsafe { libc::getpid() } != 1;
    if hand_run {
        let bound = preopen(config, api)?;
        // The pid namespace is for the child only; the other namespaces the
        // child makes itself below, so this parent stays in the host's
        // (pivot_root would otherwise move its root into the cell too).
        unshare(libc::CLONE_NEWPID)?;
        // SAFETY: single-threaded, so the child may do anything after fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("cannot fork: {}", std::io::Error::last_os_error()));
        }
        if pid > 0 {
            let status = supervise(pid);
            if let Some(p) = bound {
                let _ = std::fs::remove_file(p);
            }
            return Ok(Entered::Outside(status));
        }
        unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNET)?;
    }
    jail::cell::enter().map_err(|e| format!("jail: {}", crate::cli::error_chain(&e)))?;
    vmm::preopen_kvm().map_err(|e| format!("jail: cannot open /dev/kvm in the cell: {e}"))?;
    if let Some(h) = &args.hostname {
        jail::cell::set_hostname(h).map_err(|e| format!("jail: {e}"))?;
    }
    let mut limits = jail::privs::Limits::default();
    if let Some(f) = args.file_size {
        limits.file_size = f;
    }
    jail::privs::drop_to(args.uid, args.gid, limits)
        .map_err(|e| format!("jail: {}", crate::cli::error_chain(&e)))?;
    if hand_run {
        // Run by hand: the VM goes when its outside parent does (kill -9
        // of the pid the user knows). Set after the uid change, which
        // would clear it; a parent gone already leaves us to init.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    }
    Ok(Entered::Inside)
}

/// unshare(2) of this (single-threaded) process; errors are one line.
fn unshare(flags: libc::c_int) -> Result<(), String> {
    // SAFETY: unshare with flags; we are single-threaded here.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(format!(
            "cannot make namespaces: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The outside parent: passes termination signals on, returns the
/// child's exit code (128 + signal when it was killed).
fn supervise(child: libc::pid_t) -> u8 {
    // SAFETY: building and applying a signal mask in our own memory.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        // SIGCHLD too: the child's end wakes the wait at once.
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD] {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let tick = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    loop {
        // SAFETY: waits on our own mask with a timeout; no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &tick) };
        if sig > 0 && sig != libc::SIGCHLD {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child, sig) };
        }
        let mut status = 0;
        // SAFETY: waitpid on our own child, writing one int.
        let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if r == child {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status) as u8;
            }
            return 128u8.wrapping_add(libc::WTERMSIG(status) as u8);
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 1;
        }
    }
}

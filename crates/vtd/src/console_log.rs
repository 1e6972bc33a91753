//! A VM's serial console log: the VMM writes its console into a pipe;
//! a `vt-logger` process (crate `vt-log`) reads the other end and writes
//! `console.log`, capped and rotated (`console.log.1` ... `.K`), whole
//! lines only — as libvirt's virtlogd does for QEMU.
//!
//! Why a helper process and not the VMM or `vtd` itself: a confined VMM
//! cannot rename files in its VM directory (Landlock, its own uid), and a
//! file it appends to through a passed descriptor cannot be rotated by
//! another process without losing what it writes between the copy and
//! the truncation. `vtd` itself cannot hold the pipe: VMMs outlive a
//! `vtd` restart, and the console would be lost (or the VMM blocked)
//! while it is down. The logger runs in its own session like the VMM,
//! holds nothing but the pipe's read end and the log, and ends when the
//! VMM's end closes.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use vt_log::rotate::Limits;

/// The logger program and the log's limits (`vtd --console-log-size`,
/// `--console-log-files`).
#[derive(Debug, Clone)]
pub struct Config {
    /// The `vt-logger` program run for each VM (default: [`default_logger`]).
    pub logger: PathBuf,
    /// When `console.log` rotates and how many old ones are kept
    /// (`--max-bytes` and `--files` of `vt-logger`; default 2 MiB and 4).
    pub limits: Limits,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Sets the configuration (once, at start-up).
pub fn configure(c: Config) {
    let _ = CONFIG.set(c);
}

/// The default logger: `vt-logger` beside `vtd`, else from PATH.
pub fn default_logger() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("vt-logger")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("vt-logger"))
}

fn config() -> Config {
    CONFIG.get().cloned().unwrap_or_else(|| Config {
        logger: default_logger(),
        limits: Limits {
            max_bytes: 2 << 20,
            files: 4,
        },
    })
}

/// Starts a logger writing `log` and returns the pipe's write end for
/// the VMM's console. Errors: no pipe, or the logger cannot be run.
pub fn start(log: &Path) -> std::io::Result<OwnedFd> {
    let c = config();
    let (read, write) = pipe()?;
    // The VMM takes a passed serial file only opened for appending (a
    // pipe ignores the flag, but carries it).
    // SAFETY: F_SETFL on a descriptor we own.
    if unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETFL, libc::O_APPEND) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut cmd = Command::new(&c.logger);
    cmd.arg("--max-bytes")
        .arg(c.limits.max_bytes.to_string())
        .arg("--files")
        .arg(c.limits.files.to_string())
        .arg(log)
        .stdin(Stdio::from(read))
        .stdout(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory; it runs
    // in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    // Reaped when it ends (the VMM's end closed); after a vtd restart it
    // is init's to reap.
    let _ = std::thread::Builder::new()
        .name("console-logger".into())
        .spawn(move || child.wait());
    Ok(write)
}

/// A pipe, both ends close-on-exec.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

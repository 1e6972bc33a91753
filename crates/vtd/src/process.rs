//! `vt-vmm` processes: spawning them in their own session, recognising
//! them again after a `vtd` restart, waiting for their end, killing them.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use api::manager::VmDefinition;

use crate::store::VmDir;

/// Starts `vt-vmm` for `def` in its own session (so it outlives `vtd`),
/// console to `console.log` (through its logger, [`crate::console_log`],
/// on descriptor 3), its own output to `vmm.log`.
pub fn spawn(
    vmm: &Path,
    boot: &crate::boot::Boot,
    def: &VmDefinition,
    dir: &VmDir,
) -> std::io::Result<Child> {
    // One run per log: its last line tells how this run ended.
    let log = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dir.vmm_log())?;
    let console = crate::console_log::start(&dir.console())?;
    let console_fd = console.as_raw_fd();
    let mut cmd = Command::new(vmm);
    cmd.args(crate::boot::flags(boot, def))
        .arg("--cpus")
        .arg(def.vcpus.to_string())
        .arg("--memory")
        .arg(def.memory_mib.to_string())
        .args(memory_flags(def))
        .arg("--serial")
        .arg("file=/dev/fd/3")
        .arg("--on-reboot")
        .arg("restart")
        .args(disk_flags(def))
        .args(crate::net::net_flags(def))
        .arg("--api-socket")
        .arg(dir.socket())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid, dup2 and close_range are async-signal-safe and touch
    // no memory; they run in the child between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The console pipe becomes descriptor 3 (dup2 clears its
            // close-on-exec flag; when it already is 3, dup2 does nothing
            // and the flag is cleared by hand).
            let r = if console_fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(console_fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing else vtd inherited crosses exec (std's own
            // descriptors are close-on-exec already): only stdin, stdout,
            // stderr and the console.
            let all = libc::c_uint::MAX;
            if libc::syscall(libc::SYS_close_range, 4, all, libc::CLOSE_RANGE_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(console);
    child
}

/// `--memory-merge`, `--memory-thp`, `--memory-hugepages` and `--balloon`
/// for the definition's `memory` options and balloon (nothing for the
/// defaults).
pub fn memory_flags(def: &VmDefinition) -> Vec<String> {
    let m = &def.memory;
    let mut flags = Vec::new();
    if m.merge {
        flags.extend(["--memory-merge".into(), "on".into()]);
    }
    if !m.thp {
        flags.extend(["--memory-thp".into(), "off".into()]);
    }
    if let Some(size) = m.hugepages {
        let size = match size {
            api::HugePageSize::Size2M => "2M",
            api::HugePageSize::Size1G => "1G",
        };
        flags.extend(["--memory-hugepages".into(), size.into()]);
    }
    if let Some(b) = def.balloon {
        let on = |v: bool| if v { "on" } else { "off" };
        flags.extend([
            "--balloon".into(),
            format!(
                "deflate_on_oom={},free_page_reporting={},stats={}",
                on(b.deflate_on_oom),
                on(b.free_page_reporting),
                on(b.stats)
            ),
        ]);
    }
    flags
}

/// `--disk path=P[,readonly=on][,cache=none][,format=F]` for each disk
/// (paths never hold commas: the definition is validated).
fn disk_flags(def: &VmDefinition) -> Vec<String> {
    def.disks
        .iter()
        .flat_map(|d| {
            let ro = if d.readonly { ",readonly=on" } else { "" };
            let shared = if d.shareable { ",shareable=on" } else { "" };
            let cache = match d.cache {
                api::CacheMode::Direct => ",cache=none",
                api::CacheMode::Writeback => "",
            };
            let format = d
                .format
                .map_or(String::new(), |f| format!(",format={}", f.name()));
            [
                "--disk".to_string(),
                format!("path={}{ro}{shared}{cache}{format}", d.path.display()),
            ]
        })
        .collect()
}

/// Whether `pid` is a live `vt-vmm` serving `socket` (guards against a
/// reused pid after a `vtd` restart).
pub fn is_our_vmm(pid: u32, socket: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let sock = socket.as_os_str().as_encoded_bytes();
    let is_vmm = args
        .first()
        .is_some_and(|a| a.ends_with(b"vt-vmm") || a.ends_with(b"vt-vmm (deleted)"));
    is_vmm
        && crate::scan::runs_vmm(pid)
        && args
            .windows(2)
            .any(|w| (w[0] == b"--api-socket" || w[0] == b"--id") && w[1] == sock)
}

/// Whether live process `pid` is still a copy of `vtd` (a VMM spawned
/// but not exec'd yet): the same executable as this process.
pub fn is_vtd_copy(pid: u32) -> bool {
    let exe = |p: &str| std::fs::read_link(format!("/proc/{p}/exe")).ok();
    uid_of(pid).is_some() && exe(&pid.to_string()).is_some_and(|e| Some(e) == exe("self"))
}

/// The real uid of live process `pid`, from `/proc/PID/status`; `None`
/// when it is gone or a zombie (dead, not yet reaped: a VMM whose vtd
/// died is reaped by init, at its own pace).
pub fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let state = status.lines().find_map(|l| l.strip_prefix("State:"))?;
    if matches!(state.trim_start().chars().next(), Some('Z' | 'X')) {
        return None;
    }
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// A descriptor that becomes readable when `pid` ends (any process, not
/// only our children).
pub fn pidfd(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Blocks until the process behind `fd` ends.
pub fn wait_pidfd(fd: &OwnedFd) {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, -1) };
        if rc > 0 || (rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
        {
            return;
        }
    }
}

/// Waits up to `timeout` for the process behind `fd` to end; true if it did.
pub fn wait_pidfd_timeout(fd: &OwnedFd, timeout: std::time::Duration) -> bool {
    use std::os::fd::AsRawFd;
    let deadline = std::time::Instant::now() + timeout;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        if rc > 0 {
            return true;
        }
        let interrupted =
            rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR);
        if !interrupted || left.is_zero() {
            return false;
        }
    }
}

/// Sends SIGKILL to `pid`.
pub fn kill(pid: u32) {
    // SAFETY: kill has no memory effects; callers check the pid is ours.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// The name of a signal, for exit reasons.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        _ => return format!("signal {sig}"),
    };
    format!("signal {sig} ({name})")
}

/// The host's boot id (changes on every host boot).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string()
}

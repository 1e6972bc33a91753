//! Starting a process in new namespaces with exactly the descriptors it
//! should have (clone3(2) with `CLONE_PIDFD`, then execve(2)).
//!
//! Protocol with the child (it may only make async-signal-safe calls: the
//! manager is multi-threaded):
//!
//! 1. `spawn` clones; the child starts a session, clears its signal mask,
//!    and blocks reading the *gate* pipe.
//! 2. The caller places the child (`Child::pid`, host pid) in its cgroups,
//!    then [`Child::release`] writes one byte to the gate. End of file
//!    instead (the caller died, or dropped the child unreleased) makes the
//!    child exit 127: it never runs outside its cgroups unrecorded. (A
//!    byte, not end of file, also keeps concurrent spawns from waiting on
//!    each other: a gated child holds copies of the gate ends of spawns
//!    that started while it waited.)
//! 3. The child moves the descriptors to 0, 1, 2 and 3.., marks every
//!    other one close-on-exec, and execs. If exec fails it writes its errno
//!    to the *report* pipe and exits 127; `release` reads that pipe until
//!    exec closes it, so a failed exec is an error, not a silent exit.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;

use crate::check;

/// What to run and with which descriptors.
pub struct SpawnSpec {
    /// The program (an absolute path: there is no `PATH` search).
    pub program: PathBuf,
    /// `argv[1..]`; `argv[0]` is the program.
    pub args: Vec<OsString>,
    /// The whole environment of the new process.
    pub env: Vec<(OsString, OsString)>,
    /// Descriptors the child gets as 3, 4, … in this order.
    pub fds: Vec<OwnedFd>,
    /// Becomes stdout and stderr (stdin is `/dev/null`).
    pub output: OwnedFd,
    /// New mount, pid, ipc, uts and network namespaces (needs root).
    pub namespaces: bool,
}

/// A started, possibly still gated, child.
#[derive(Debug)]
pub struct Child {
    /// Its pid in the caller's pid namespace.
    pub pid: u32,
    /// A pidfd for it (poll it for the end; signals cannot hit a reused pid).
    pub pidfd: OwnedFd,
    gate: Option<OwnedFd>,
    report: Option<OwnedFd>,
}

/// clone3's `struct clone_args`, first version (64 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

const NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWNET) as u64;

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-int array it is given.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec copy of `fd` numbered at least `min`.
fn dup_above(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an int and returns a new descriptor.
    let r = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) }.into())?;
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

fn cstring(s: &std::ffi::OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Starts `spec` gated (see the module doc); call [`Child::release`] next.
///
/// Errors: a string with a NUL byte (`InvalidInput`), clone3 refused
/// (`EPERM` without root for namespaces, `ENOSYS` before Linux 5.3).
pub fn spawn(spec: SpawnSpec) -> io::Result<Child> {
    let argv_c: Vec<CString> = std::iter::once(cstring(spec.program.as_os_str()))
        .chain(spec.args.iter().map(|a| cstring(a)))
        .collect::<io::Result<_>>()?;
    let env_c: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.clone();
            kv.push("=");
            kv.push(v);
            cstring(&kv)
        })
        .collect::<io::Result<_>>()?;
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env_c.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());

    // Everything the child dup2()s from sits above the numbers it fills.
    let first_free = 3 + spec.fds.len() as RawFd;
    let low = first_free.max(16);
    let null = std::fs::File::open("/dev/null")?;
    let null = dup_above(null.as_raw_fd(), low)?;
    let output = dup_above(spec.output.as_raw_fd(), low)?;
    let passed: Vec<OwnedFd> = spec
        .fds
        .iter()
        .map(|f| dup_above(f.as_raw_fd(), low))
        .collect::<io::Result<_>>()?;
    let passed_raw: Vec<RawFd> = passed.iter().map(|f| f.as_raw_fd()).collect();
    let (gate_r, gate_w) = pipe()?;
    let (gate_r, gate_w) = (dup_above(gate_r.as_raw_fd(), low)?, gate_w);
    let (report_r, report_w) = pipe()?;
    let report_w = dup_above(report_w.as_raw_fd(), low)?;

    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64 | if spec.namespaces { NAMESPACES } else { 0 },
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    let child_ctx = ChildCtx {
        program: argv_c[0].as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        null: null.as_raw_fd(),
        output: output.as_raw_fd(),
        passed: &passed_raw,
        first_free,
        gate_r: gate_r.as_raw_fd(),
        gate_w: gate_w.as_raw_fd(),
        report_w: report_w.as_raw_fd(),
    };
    // SAFETY: clone3 with a valid clone_args of the size given; without
    // CLONE_VM and without a stack the child runs on a copy of our memory,
    // like fork(2), and only makes async-signal-safe calls before exec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        // SAFETY: we are the child of a fork-like clone; `child_ctx`
        // points into our copy of the parent's memory, which nothing frees.
        unsafe { child_ctx.run() }
    }
    check(r)?;
    // SAFETY: CLONE_PIDFD stored a new descriptor that nobody else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop((gate_r, report_w, passed, null, output));
    Ok(Child {
        pid: r as u32,
        pidfd,
        gate: Some(gate_w),
        report: Some(report_r),
    })
}

/// What the child needs, prepared before the clone (no allocation after).
struct ChildCtx<'a> {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    null: RawFd,
    output: RawFd,
    passed: &'a [RawFd],
    first_free: RawFd,
    gate_r: RawFd,
    gate_w: RawFd,
    report_w: RawFd,
}

impl ChildCtx<'_> {
    /// The child's side; never returns.
    ///
    /// # Safety
    ///
    /// Only in the child of [`spawn`]'s clone, with the pointers prepared there.
    unsafe fn run(&self) -> ! {
        // SAFETY: async-signal-safe calls on descriptors and pointers
        // prepared before the clone; each result is checked where it matters.
        unsafe {
            libc::close(self.gate_w);
            let fail = |report: RawFd| -> ! {
                let e = *libc::__errno_location();
                libc::write(report, (&e as *const i32).cast(), 4);
                libc::_exit(127)
            };
            if libc::setsid() < 0 {
                fail(self.report_w);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            // Wait until the parent has put us in our cgroups.
            let mut b = 0u8;
            let n = loop {
                let n = libc::read(self.gate_r, (&mut b as *mut u8).cast(), 1);
                if n >= 0 || *libc::__errno_location() != libc::EINTR {
                    break n;
                }
            };
            if n != 1 {
                libc::_exit(127);
            }
            for (from, to) in [(self.null, 0), (self.output, 1), (self.output, 2)] {
                if libc::dup2(from, to) < 0 {
                    fail(self.report_w);
                }
            }
            for (i, &fd) in self.passed.iter().enumerate() {
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    fail(self.report_w);
                }
            }
            // Nothing else crosses exec (report_w is close-on-exec already).
            let all = libc::c_uint::MAX;
            if libc::syscall(
                libc::SYS_close_range,
                self.first_free as libc::c_uint,
                all,
                libc::CLOSE_RANGE_CLOEXEC,
            ) < 0
            {
                fail(self.report_w);
            }
            libc::execve(self.program, self.argv, self.envp);
            fail(self.report_w)
        }
    }
}

impl Child {
    /// Lets the child exec. Errors: the child's own error (exec failed:
    /// `ENOENT`, `EACCES`, …), in which case it has exited with 127.
    pub fn release(&mut self) -> io::Result<()> {
        if let Some(gate) = self.gate.take() {
            // SAFETY: writes one byte from our stack to our own pipe.
            let n = unsafe { libc::write(gate.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
            if n != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        let Some(report) = self.report.take() else {
            return Ok(());
        };
        let mut errno = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            // SAFETY: reads into our own 4-byte buffer from our pipe.
            let n = unsafe {
                libc::read(
                    report.as_raw_fd(),
                    errno[got..].as_mut_ptr().cast(),
                    4 - got,
                )
            };
            match n {
                0 => break,
                n if n > 0 => got += n as usize,
                _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                _ => return Err(io::Error::last_os_error()),
            }
        }
        if got == 4 {
            return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
        }
        Ok(())
    }

    /// Waits for the end (the child must be ours) and returns its status.
    pub fn wait(&self) -> io::Result<ExitStatus> {
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child, writing one int.
            let r = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, 0) };
            if r >= 0 {
                return Ok(ExitStatus::from_raw(status));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Sends SIGKILL through the pidfd (never to a reused pid).
    pub fn kill(&self) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with our pidfd and no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        check(r).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sh(script: &str, fds: Vec<OwnedFd>, out: OwnedFd) -> SpawnSpec {
        SpawnSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            fds,
            output: out,
            namespaces: false,
        }
    }

    #[test]
    fn passes_exactly_the_given_fds_and_waits_at_the_gate() {
        let (mut r, w) = std::io::pipe().unwrap();
        let data = std::fs::File::open("/etc/hostname").unwrap();
        // An fd that must NOT reach the child even though it is inheritable.
        let stray = std::fs::File::open("/etc/passwd").unwrap();
        // SAFETY: clearing FD_CLOEXEC on our own descriptor.
        unsafe { libc::fcntl(stray.as_raw_fd(), libc::F_SETFD, 0) };
        let spec = sh(
            "ls /proc/self/fd | sort -n | tr '\\n' ' '; readlink /proc/self/fd/3",
            vec![data.into()],
            w.into(),
        );
        let mut child = spawn(spec).unwrap();
        // Gated: it has not run yet.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let stat = std::fs::read_to_string(format!("/proc/{}/cmdline", child.pid)).unwrap();
        assert!(!stat.contains("-c"), "exec'd before release: {stat}");
        child.release().unwrap();
        assert!(child.wait().unwrap().success());
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        // 0, 1, 2, 3 and the fd ls itself opens for /proc/self/fd.
        assert!(out.starts_with("0 1 2 3 4 /"), "{out}");
        assert!(out.contains("/etc/hostname"), "{out}");
        drop(stray);
    }

    #[test]
    fn a_child_never_released_never_runs() {
        let (mut r, w) = std::io::pipe().unwrap();
        let spec = sh("echo ran", vec![], w.into());
        let mut child = spawn(spec).unwrap();
        // The caller goes away without releasing it (vtd killed, say).
        child.gate = None;
        assert_eq!(child.wait().unwrap().code(), Some(127));
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "");
    }

    #[test]
    fn a_failed_exec_is_an_error() {
        let (_r, w) = std::io::pipe().unwrap();
        let mut spec = sh("true", vec![], w.into());
        spec.program = "/nonexistent/prog".into();
        let mut child = spawn(spec).unwrap();
        let e = child.release().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(child.wait().unwrap().code(), Some(127));
    }

    #[test]
    fn namespaces_are_new() {
        if !crate::is_root() {
            return;
        }
        let (mut r, w) = std::io::pipe().unwrap();
        let mut spec = sh(
            "echo $$; readlink /proc/self/ns/net /proc/self/ns/mnt /proc/self/ns/uts /proc/self/ns/ipc",
            vec![],
            w.into(),
        );
        spec.namespaces = true;
        let mut child = spawn(spec).unwrap();
        child.release().unwrap();
        assert!(child.wait().unwrap().success());
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        let mut lines = out.lines();
        assert_eq!(
            lines.next(),
            Some("1"),
            "not pid 1 of a new pid namespace: {out}"
        );
        for (line, ns) in lines.zip(["net", "mnt", "uts", "ipc"]) {
            let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
            assert_ne!(line, host.to_string_lossy(), "{ns} namespace shared");
        }
    }
}

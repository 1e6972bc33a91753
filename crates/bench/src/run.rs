//! Running one VMM process and timestamping it: spawn (monotonic clock read
//! just before), first stdout byte, a marker in stdout, process exit (seen
//! with `waitid(WNOWAIT)`), then the reap with `wait4` for `ru_maxrss`.
//!
//! A watchdog thread SIGKILLs the child at its deadline. It only kills while
//! the child is unreaped (a zombie at worst), so it can never hit a reused pid.

use anyhow::{bail, Context};
use std::fmt;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// A finished run.
#[derive(Debug)]
pub struct Finished {
    pub first_byte: Option<Duration>,
    pub marker: Option<Duration>,
    pub exit_at: Duration,
    pub exit: Exit,
    /// Peak resident set size (`ru_maxrss`), KiB.
    pub maxrss_kib: u64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The watchdog killed it.
    pub timed_out: bool,
}

impl Finished {
    /// The tail of stdout and stderr, for error messages.
    pub fn tail(&self) -> String {
        let cut = |b: &[u8]| {
            let s = String::from_utf8_lossy(b).into_owned();
            let start = s.len().saturating_sub(1500);
            let start = (start..=s.len()).find(|&i| s.is_char_boundary(i));
            s[start.unwrap_or(s.len())..].to_string()
        };
        format!(
            "stdout: ...{}\nstderr: ...{}",
            cut(&self.stdout),
            cut(&self.stderr)
        )
    }
}

struct Watchdog {
    /// Set (under the lock) once the child has exited; the watchdog kills
    /// only while it is unset.
    done: Arc<(Mutex<bool>, Condvar)>,
    fired: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    fn start(pid: libc::pid_t, timeout: Duration) -> Watchdog {
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let fired = Arc::new(AtomicBool::new(false));
        let (d, f) = (done.clone(), fired.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            let (lock, cv) = &*d;
            let mut finished = lock.lock().unwrap_or_else(|e| e.into_inner());
            while !*finished {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    f.store(true, Ordering::SeqCst);
                    // SAFETY: plain syscall; `pid` is our unreaped child (it is
                    // reaped only after `done` is set, under this lock).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return;
                }
                finished = cv
                    .wait_timeout(finished, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        });
        Watchdog {
            done,
            fired,
            thread: Some(thread),
        }
    }

    fn disarm(&mut self) {
        let (lock, cv) = &*self.done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A started VMM process.
pub struct Running {
    pid: libc::pid_t,
    start: Instant,
    stdout: ChildStdout,
    out: Vec<u8>,
    first_byte: Option<Duration>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    watchdog: Watchdog,
    reaped: bool,
    _child: Child,
}

impl Running {
    /// Spawns `cmd` (stdin /dev/null, stdout and stderr piped, SIGKILLed if
    /// this process dies); the clock starts just before the spawn.
    pub fn spawn(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Running> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        let watchdog = Watchdog::start(pid, timeout);
        let (Some(stdout), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
            bail!("{program}: no stdout/stderr pipe");
        };
        let stderr = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err.read_to_end(&mut v);
            v
        });
        Ok(Running {
            pid,
            start,
            stdout,
            out: Vec::new(),
            first_byte: None,
            stderr: Some(stderr),
            watchdog,
            reaped: false,
            _child: child,
        })
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Reads stdout until `marker` appears (`Some(time since spawn)`) or
    /// stdout ends (`None`).
    pub fn read_until(&mut self, marker: &[u8]) -> anyhow::Result<Option<Duration>> {
        let mut buf = [0u8; 16384];
        loop {
            let from = self.out.len().saturating_sub(marker.len());
            if !marker.is_empty() && find(&self.out[from..], marker) {
                return Ok(Some(self.start.elapsed()));
            }
            let n = match self.stdout.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading the VMM's stdout"),
            };
            let now = self.start.elapsed();
            if n == 0 {
                return Ok(None);
            }
            self.first_byte.get_or_insert(now);
            self.out.extend_from_slice(&buf[..n]);
            if !marker.is_empty() && find(&self.out[from..], marker) {
                return Ok(Some(now));
            }
        }
    }

    /// Sends `sig` to the (unreaped) child.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain syscall on our own child, which is not reaped yet
        // (`self` is consumed by the reap).
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Reads stdout to its end, waits for the exit, reaps.
    pub fn finish(mut self) -> anyhow::Result<Finished> {
        self.read_until(b"")?;
        loop {
            // SAFETY: an all-zero siginfo_t is valid; waitid only writes it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `info` is a valid out pointer; WNOWAIT leaves the child
            // unreaped so the watchdog cannot race a pid reuse.
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if r == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("waitid");
            }
        }
        let exit_at = self.start.elapsed();
        self.watchdog.disarm();
        let (status, maxrss_kib) = self.reap()?;
        let stderr = self.stderr.take().and_then(|t| t.join().ok());
        let exit = if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        };
        Ok(Finished {
            first_byte: self.first_byte,
            marker: None,
            exit_at,
            exit,
            maxrss_kib,
            stdout: std::mem::take(&mut self.out),
            stderr: stderr.unwrap_or_default(),
            timed_out: self.watchdog.fired.load(Ordering::SeqCst),
        })
    }

    /// `wait4`: (raw status, ru_maxrss in KiB).
    fn reap(&mut self) -> anyhow::Result<(libc::c_int, u64)> {
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is valid; wait4 only writes it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: valid out pointers; `pid` is our child, not yet reaped.
            let r = unsafe { libc::wait4(self.pid, &mut status, 0, &mut usage) };
            if r == self.pid {
                self.reaped = true;
                return Ok((status, u64::try_from(usage.ru_maxrss).unwrap_or(0)));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                self.reaped = true;
                return Err(e).context("wait4");
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            self.signal(libc::SIGKILL);
            self.watchdog.disarm();
            let _ = self.reap();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Spawn, wait for `marker` (if any) and the exit; fail on a timeout.
pub fn measure(cmd: &mut Command, marker: &[u8], timeout: Duration) -> anyhow::Result<Finished> {
    let mut r = Running::spawn(cmd, timeout)?;
    let seen = r.read_until(marker)?;
    let mut f = r.finish()?;
    f.marker = if marker.is_empty() { None } else { seen };
    if f.timed_out {
        bail!("killed after {timeout:?}\n{}", f.tail());
    }
    Ok(f)
}

/// `cmd` as a shell-ish one-liner, for reports.
pub fn describe(cmd: &Command) -> String {
    let quote = |s: &str| {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-=,:".contains(c))
        {
            s.to_string()
        } else {
            format!("'{s}'")
        }
    };
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_a_shell_and_finds_a_marker() {
        let mut c = Command::new("sh");
        c.args(["-c", "printf 'abc\\nREADY\\n'; exit 3"]);
        let f = measure(&mut c, b"READY", Duration::from_secs(20)).unwrap();
        assert_eq!(f.exit, Exit::Code(3));
        let (first, marker) = (f.first_byte.unwrap(), f.marker.unwrap());
        assert!(first <= marker && marker <= f.exit_at);
        assert_eq!(f.stdout, b"abc\nREADY\n");
        assert!(f.maxrss_kib > 0);
    }

    #[test]
    fn watchdog_kills() {
        let mut c = Command::new("sleep");
        c.arg("30");
        let err = measure(&mut c, b"", Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("killed after"), "{err}");
    }

    #[test]
    fn describes_commands() {
        let mut c = Command::new("qemu");
        c.args(["-m", "128", "-append", "console=ttyS0 quiet"]);
        assert_eq!(describe(&c), "qemu -m 128 -append 'console=ttyS0 quiet'");
    }
}

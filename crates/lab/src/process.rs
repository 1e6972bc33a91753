//! Running a child process with a deadline while collecting (and optionally
//! echoing) its stdout.
//!
//! Two reader threads drain stdout and stderr; stdout arrives in chunks over a
//! channel so the caller's thread can enforce the deadline with
//! `recv_timeout`. On timeout the child is killed and reaped.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for {program}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a finished (or killed) child left behind.
#[derive(Debug)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// `None` when the child was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
    /// When `watch` first appeared in stdout, measured from the spawn.
    pub watch_seen: Option<Duration>,
}

impl Captured {
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }
}

/// Runs `cmd` with stdin from /dev/null until it exits or `timeout` passes.
/// With `echo`, stdout is copied live to this process's stderr.
pub fn run(
    cmd: &mut Command,
    timeout: Duration,
    echo: bool,
    watch: &[u8],
) -> Result<Captured, ProcessError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let start = Instant::now();
    let deadline = start + timeout;
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // prctl, which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            // Die with the thread that started us: no QEMU outlives its test.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            program: program.clone(),
            source,
        })?;

    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let out_thread = child.stdout.take().map(|mut pipe| {
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        })
    });
    let (err_tx, err_rx) = mpsc::channel::<Vec<u8>>();
    if let Some(mut pipe) = child.stderr.take() {
        thread::spawn(move || {
            let mut all = Vec::new();
            let _ = pipe.read_to_end(&mut all);
            let _ = err_tx.send(all);
        });
    }

    let mut stdout = Vec::new();
    let mut watch_seen = None;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => {
                if echo {
                    let mut e = std::io::stderr().lock();
                    let _ = e.write_all(&chunk);
                    let _ = e.flush();
                }
                let from = stdout.len().saturating_sub(watch.len());
                stdout.extend_from_slice(&chunk);
                if watch_seen.is_none() && !watch.is_empty() && contains(&stdout[from..], watch) {
                    watch_seen = Some(start.elapsed());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }

    let status = if timed_out {
        kill(&mut child, &program)?;
        None
    } else {
        wait_until(&mut child, deadline, &program)?
    };
    // A grandchild may still hold the pipes open: never wait long for them.
    if status.is_some() {
        if let Some(t) = out_thread {
            let _ = t.join();
        }
    }
    let stderr = err_rx
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    Ok(Captured {
        stdout,
        stderr,
        status,
        elapsed: start.elapsed(),
        watch_seen,
    })
}

/// Waits for the child until `deadline`, then kills it (returning `None`).
fn wait_until(
    child: &mut Child,
    deadline: Instant,
    program: &str,
) -> Result<Option<ExitStatus>, ProcessError> {
    let wait_err = |source| ProcessError::Wait {
        program: program.to_string(),
        source,
    };
    loop {
        if let Some(status) = child.try_wait().map_err(wait_err)? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            kill(child, program)?;
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn kill(child: &mut Child, program: &str) -> Result<(), ProcessError> {
    // An error here means it already exited; reaping below covers both.
    let _ = child.kill();
    child.wait().map_err(|source| ProcessError::Wait {
        program: program.to_string(),
        source,
    })?;
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_output_and_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo MARK; echo err >&2; exit 4"]);
        let c = run(&mut cmd, Duration::from_secs(10), false, b"MARK").unwrap();
        assert_eq!(c.stdout, b"one\nMARK\n");
        assert_eq!(c.stderr, b"err\n");
        assert_eq!(c.status.and_then(|s| s.code()), Some(4));
        assert!(c.watch_seen.is_some());
    }

    #[test]
    fn kills_at_deadline() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; exec sleep 30"]);
        let c = run(&mut cmd, Duration::from_millis(500), false, b"").unwrap();
        assert!(c.timed_out());
        assert_eq!(c.stdout, b"started\n");
        assert!(c.elapsed < Duration::from_secs(10));
    }
}

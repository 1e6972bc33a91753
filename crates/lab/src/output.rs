//! Turning a finished QEMU (or local shell) run into a [`LabOutput`]: the
//! L1 console protocol is `VTLAB-START` on its own line, the command's output,
//! then `VTLAB-EXIT=<code>`; `VTLAB-ERROR=<why>` instead when the L1 failed.

use crate::error::LabError;
use crate::host::HostKind;
use crate::process::Captured;
use std::time::Duration;

pub(crate) const START: &[u8] = b"VTLAB-START";
const EXIT: &str = "VTLAB-EXIT=";
const ERROR: &str = "VTLAB-ERROR=";

/// The result of one command run.
#[derive(Debug, Clone)]
pub struct LabOutput {
    /// The command's stdout and stderr, merged, `\r\n` turned into `\n`.
    pub stdout: String,
    pub exit_code: i32,
    /// Wall time of the whole run (lab: boot + command + power-off).
    pub duration: Duration,
    /// Lab only: from QEMU start until the command started (the lab boot time).
    pub boot: Option<Duration>,
    /// The whole console log (lab) or the same as `stdout` (direct).
    pub console: String,
    /// Where it ran.
    pub host: HostKind,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace("\r\n", "\n")
}

pub(crate) fn from_lab(c: Captured, timeout: Duration) -> Result<LabOutput, LabError> {
    let console = text(&c.stdout);
    let stderr = text(&c.stderr);
    if c.timed_out() {
        return Err(LabError::Timeout {
            after: timeout,
            console,
            stderr,
        });
    }
    let start = std::str::from_utf8(START).unwrap_or("VTLAB-START");
    let body_at = console
        .find(&format!("{start}\n"))
        .map(|i| i + start.len() + 1);
    let Some(body_at) = body_at else {
        if let Some(i) = console.find(ERROR) {
            let why = console[i + ERROR.len()..].lines().next().unwrap_or("");
            return Err(LabError::L1 {
                why: why.to_string(),
                console,
            });
        }
        return Err(no_marker(&c, console, stderr));
    };
    let Some(exit_at) = console[body_at..].rfind(EXIT).map(|i| i + body_at) else {
        return Err(no_marker(&c, console, stderr));
    };
    let digits: String = console[exit_at + EXIT.len()..]
        .chars()
        .take_while(|ch| ch.is_ascii_digit())
        .collect();
    let Ok(exit_code) = digits.parse::<i32>() else {
        return Err(no_marker(&c, console, stderr));
    };
    Ok(LabOutput {
        stdout: console[body_at..exit_at].to_string(),
        exit_code,
        duration: c.elapsed,
        boot: c.watch_seen,
        console,
        host: HostKind::Lab,
    })
}

fn no_marker(c: &Captured, console: String, stderr: String) -> LabError {
    let status = c
        .status
        .map_or_else(|| "killed".to_string(), |s| s.to_string());
    LabError::NoExitMarker {
        status,
        console,
        stderr,
    }
}

pub(crate) fn from_direct(c: Captured, timeout: Duration) -> Result<LabOutput, LabError> {
    let stdout = text(&c.stdout);
    let Some(status) = c.status else {
        return Err(LabError::Timeout {
            after: timeout,
            console: stdout,
            stderr: text(&c.stderr),
        });
    };
    use std::os::unix::process::ExitStatusExt;
    let exit_code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    Ok(LabOutput {
        console: stdout.clone(),
        stdout,
        exit_code,
        duration: c.elapsed,
        boot: None,
        host: HostKind::Direct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn captured(out: &str) -> Captured {
        Captured {
            stdout: out.as_bytes().to_vec(),
            stderr: Vec::new(),
            status: Some(ExitStatus::from_raw(0)),
            elapsed: Duration::from_secs(1),
            watch_seen: Some(Duration::from_millis(500)),
        }
    }

    #[test]
    fn parses_markers() {
        let c = captured("boot noise\r\nVTLAB-START\r\nhello\r\nVTLAB-EXIT=3\r\n[ 1.0] reboot\r\n");
        let o = from_lab(c, Duration::from_secs(9)).unwrap();
        assert_eq!(o.stdout, "hello\n");
        assert_eq!(o.exit_code, 3);
        assert_eq!(o.boot, Some(Duration::from_millis(500)));
    }

    #[test]
    fn output_without_final_newline() {
        let c = captured("VTLAB-START\nabcVTLAB-EXIT=0\n");
        let o = from_lab(c, Duration::from_secs(9)).unwrap();
        assert_eq!(o.stdout, "abc");
        assert_eq!(o.exit_code, 0);
    }

    #[test]
    fn reports_missing_marker_and_l1_error() {
        let err = from_lab(captured("VTLAB-START\nhi\n"), Duration::from_secs(9)).unwrap_err();
        assert!(matches!(err, LabError::NoExitMarker { .. }), "{err}");
        let err = from_lab(
            captured("VTLAB-ERROR=no /dev/kvm\n"),
            Duration::from_secs(9),
        );
        assert!(matches!(err, Err(LabError::L1 { ref why, .. }) if why == "no /dev/kvm"));
    }
}

//! The lab's error type.

use crate::artifacts::ArtifactsError;
use crate::host::HostError;
use crate::initramfs::InitramfsError;
use crate::libs::LibsError;
use crate::process::ProcessError;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Artifacts(#[from] ArtifactsError),
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    #[error(transparent)]
    Libs(#[from] LibsError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("{0} not found (apt-get install qemu-system-x86, or set VT_QEMU)")]
    NoQemu(String),
    #[error("cannot create a temporary directory")]
    TempDir(#[source] std::io::Error),
    #[error("cannot link {path}")]
    Link {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {after:?}{}", tail(.console, .stderr))]
    Timeout {
        after: Duration,
        console: String,
        stderr: String,
    },
    #[error("lab L1 failed: {why}{}", tail(.console, ""))]
    L1 { why: String, console: String },
    #[error("lab ended without VTLAB-EXIT ({status}){}", tail(.console, .stderr))]
    NoExitMarker {
        status: String,
        console: String,
        stderr: String,
    },
}

impl LabError {
    /// A spawn failure of QEMU itself becomes the clearer [`LabError::NoQemu`].
    pub(crate) fn from_spawn(e: ProcessError) -> LabError {
        match e {
            ProcessError::Spawn { program, source }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                LabError::NoQemu(program)
            }
            other => LabError::Process(other),
        }
    }
}

/// The last lines of the console and of QEMU's stderr, for error messages.
fn tail(console: &str, stderr: &str) -> String {
    const LINES: usize = 40;
    let mut s = String::new();
    for (what, text) in [("console", console), ("stderr", stderr)] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("TCG doesn't support requested feature"))
            .collect();
        if lines.is_empty() {
            continue;
        }
        let from = lines.len().saturating_sub(LINES);
        s.push_str(&format!(
            "\n--- {what} (last {} lines) ---\n",
            lines.len() - from
        ));
        s.push_str(&lines[from..].join("\n"));
    }
    s
}

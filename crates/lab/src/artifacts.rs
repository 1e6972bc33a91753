//! The guest artifacts made by `scripts/guest-artifacts.sh`: where they live,
//! and running the script when they are missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactsError {
    #[error("cannot run {script}")]
    Spawn {
        script: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{script} failed ({status}){}", stderr_tail(.stderr))]
    Script {
        script: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("guest artifact {0} is missing after running the script")]
    Missing(PathBuf),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn stderr_tail(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", stderr.trim_end())
    }
}

/// Paths of the artifacts in one guest directory.
#[derive(Debug, Clone)]
pub struct GuestArtifacts {
    pub dir: PathBuf,
    /// The kernel bzImage.
    pub vmlinuz: PathBuf,
    /// The ELF kernel (PVH entry note present).
    pub vmlinux: PathBuf,
    /// The L2 guest initramfs (prints `VT-GUEST ...` lines, obeys `vt.action=`).
    pub initramfs: PathBuf,
    /// busybox-static.
    pub busybox: PathBuf,
    /// Decompressed kvm modules for the lab L1, with `load-order`.
    pub lab_modules: PathBuf,
}

impl GuestArtifacts {
    /// The paths under `dir`, without checking them.
    pub fn at(dir: &Path) -> GuestArtifacts {
        GuestArtifacts {
            dir: dir.to_path_buf(),
            vmlinuz: dir.join("vmlinuz"),
            vmlinux: dir.join("vmlinux"),
            initramfs: dir.join("initramfs.cpio.gz"),
            busybox: dir.join("busybox"),
            lab_modules: dir.join("lab-modules"),
        }
    }

    fn required(&self) -> [PathBuf; 7] {
        [
            self.vmlinuz.clone(),
            self.vmlinux.clone(),
            self.initramfs.clone(),
            self.busybox.clone(),
            self.lab_modules.join("load-order"),
            self.dir.join("SHA256SUMS"),
            self.dir.join(".version"),
        ]
    }

    fn first_missing(&self) -> Option<PathBuf> {
        self.required().into_iter().find(|p| !p.is_file())
    }

    /// Module names in the order the lab L1 loads them (`<name>.ko` beside it).
    pub fn lab_module_order(&self) -> Result<Vec<String>, ArtifactsError> {
        let path = self.lab_modules.join("load-order");
        let text = std::fs::read_to_string(&path)
            .map_err(|source| ArtifactsError::Read { path, source })?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }
}

/// The repository root: `$VT_REPO_ROOT`, else two levels above this crate.
pub fn repo_root() -> PathBuf {
    let root = match std::env::var_os("VT_REPO_ROOT") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    };
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// `$VT_GUEST_DIR`, else `<repo>/target/guest` (the script's default too).
pub fn default_guest_dir() -> PathBuf {
    match std::env::var_os("VT_GUEST_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join("target/guest"),
    }
}

fn script_path() -> PathBuf {
    repo_root().join("scripts/guest-artifacts.sh")
}

/// Returns the artifacts in `dir` (default: [`default_guest_dir`]), running the
/// script first only if a file is missing. Script output is captured and shown
/// in the error if it fails.
pub fn ensure(dir: Option<&Path>) -> Result<GuestArtifacts, ArtifactsError> {
    let dir = dir.map_or_else(default_guest_dir, Path::to_path_buf);
    let arts = GuestArtifacts::at(&dir);
    if arts.first_missing().is_none() {
        return Ok(arts);
    }
    run_script(&dir, false)?;
    check(arts)
}

/// Always runs the script (it verifies its cache and rebuilds what is missing),
/// with its messages going to this process's stderr.
pub fn fetch(dir: Option<&Path>) -> Result<GuestArtifacts, ArtifactsError> {
    let dir = dir.map_or_else(default_guest_dir, Path::to_path_buf);
    run_script(&dir, true)?;
    check(GuestArtifacts::at(&dir))
}

fn check(arts: GuestArtifacts) -> Result<GuestArtifacts, ArtifactsError> {
    match arts.first_missing() {
        Some(p) => Err(ArtifactsError::Missing(p)),
        None => Ok(arts),
    }
}

fn run_script(dir: &Path, inherit: bool) -> Result<(), ArtifactsError> {
    let script = script_path();
    let mut cmd = Command::new("bash");
    cmd.arg(&script).arg(dir).stdin(Stdio::null());
    let spawn_err = |source| ArtifactsError::Spawn {
        script: script.clone(),
        source,
    };
    let (status, stderr) = if inherit {
        (cmd.status().map_err(spawn_err)?, String::new())
    } else {
        let out = cmd.output().map_err(spawn_err)?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status, stderr)
    };
    if status.success() {
        return Ok(());
    }
    Err(ArtifactsError::Script {
        script,
        status,
        stderr,
    })
}

//! `vt run ...`: one VM, no daemon; the same flags as `vt-vmm` (see `vt run --help`).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

/// Finds `vt-vmm`: `$VT_VMM`, else beside this executable, else on `PATH`.
pub fn vmm_path() -> PathBuf {
    if let Some(p) = std::env::var_os("VT_VMM") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        let sibling = exe.with_file_name("vt-vmm");
        if sibling.is_file() {
            return sibling;
        }
    }
    PathBuf::from("vt-vmm")
}

/// Replaces this process with `vt-vmm ARGS`, so signals, the terminal and the
/// exit status are the VMM's own.
pub fn run(args: Vec<String>) -> Result<ExitCode> {
    let vmm = vmm_path();
    let err = Command::new(&vmm).args(args).exec();
    Err(err).with_context(|| format!("cannot run {}", vmm.display()))
}

//! `vt man --dir DIR`: man pages from the clap definitions
//! (`clap_mangen`): `vt.1` and one page a verb (`vt-create.1`,
//! `vt-net-define.1`, ...). Install with `vt man --dir
//! /usr/local/share/man/man1`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

/// Writes every page of `cmd` into `dir` (made when missing).
pub fn write(cmd: clap::Command, dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    clap_mangen::generate_to(cmd, dir).with_context(|| dir.display().to_string())?;
    Ok(ExitCode::SUCCESS)
}

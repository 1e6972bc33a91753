//! `vt image ...`: guest images.

use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build the Linux guest artifacts (kernel, vmlinux, initramfs, lab
    /// modules) from Debian packages; cached once built.
    FetchLinux {
        /// Output directory [default: $VT_GUEST_DIR or <repo>/target/guest]
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::FetchLinux { dir } => {
            let arts = lab::artifacts::fetch(dir.as_deref())?;
            for p in [
                &arts.vmlinuz,
                &arts.vmlinux,
                &arts.initramfs,
                &arts.lab_modules,
            ] {
                println!("{}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

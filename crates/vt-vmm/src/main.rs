//! `vt-vmm`: runs one VM until it powers off.
//!
//! Exit status: 0 when the guest powers off, reboots (with `--on-reboot exit`)
//! or SIGTERM/SIGINT stops it; 1 when the guest crashes (triple fault, KVM
//! internal error) or the host fails; 2 for bad input (arguments, files,
//! sizes).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("vt-vmm: error: {msg}");
            return ExitCode::from(2);
        }
    };
    match vmm::run_with_api(&config, args.api_socket.as_deref()) {
        Ok(vmm::VmExit::PowerOff | vmm::VmExit::Reboot | vmm::VmExit::Stopped(_)) => {
            ExitCode::SUCCESS
        }
        Ok(vmm::VmExit::Crashed(reason)) => {
            eprintln!("vt-vmm: guest crashed: {reason}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("vt-vmm: error: {}", cli::error_chain(&e));
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

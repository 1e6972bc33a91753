//! `vt-vmm`: runs one VM until it powers off.
//!
//! Exit status: 0 when the guest powers off, reboots (with `--on-reboot exit`)
//! or SIGTERM/SIGINT stops it; 1 when the guest crashes (triple fault, KVM
//! internal error) or the host fails; 2 for bad input (arguments, files,
//! sizes). With `--api-socket`, a last stderr line `vt-vmm: exit: ...`
//! says how a VM that ended with status 0 ended.

mod cli;
mod jail;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    vt_log::init("vt-vmm");
    let args = match cli::Args::try_parse() {
        Ok(a) => a,
        Err(e) => return cli::usage_error(e),
    };
    let mut config = match args.to_config() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("vt-vmm: error: {msg}");
            return ExitCode::from(2);
        }
    };
    if pvm::path_is_linux(&config.kernel) && pvm::host_is_pvm() {
        eprintln!("vt-vmm: warning: {}", pvm::WARNING);
    }
    let mut api_socket = args.api_socket.clone();
    if let (true, Some(size)) = (args.jail, config.memory.hugepages) {
        // The cell has no /sys: the huge page pool is checked from here.
        if let Err(e) = vmm::memory::check_hugepages(config.memory_mib, size) {
            eprintln!("vt-vmm: error: {}", cli::error_chain(&e));
            return ExitCode::from(2);
        }
    }
    if let (true, Some(uid)) = (args.jail, args.jail_uid) {
        let j = jail::JailArgs {
            uid,
            gid: args.jail_gid.unwrap_or(uid),
            file_size: args.jail_file_size,
            hostname: Some("cell".into()),
        };
        match jail::enter(&j, &mut config, &mut api_socket) {
            Ok(jail::Entered::Inside) => {}
            Ok(jail::Entered::Outside(code)) => return ExitCode::from(code),
            Err(msg) => {
                eprintln!("vt-vmm: error: {msg}");
                return ExitCode::from(1);
            }
        }
    }
    match vmm::run_confined(&config, api_socket.as_deref(), args.policy()) {
        Ok(exit @ (vmm::VmExit::PowerOff | vmm::VmExit::Reboot | vmm::VmExit::Stopped(_))) => {
            // Under a manager (with a control socket), say how the VM ended:
            // the manager may not be our parent any more to see the status.
            if args.api_socket.is_some() {
                eprintln!("vt-vmm: exit: {}", describe(&exit));
            }
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

fn describe(exit: &vmm::VmExit) -> String {
    match exit {
        vmm::VmExit::PowerOff => "guest powered off".into(),
        vmm::VmExit::Reboot => "guest rebooted".into(),
        vmm::VmExit::Stopped(0) => "stopped through the control socket".into(),
        vmm::VmExit::Stopped(sig) => format!("stopped by signal {sig}"),
        vmm::VmExit::Crashed(reason) => format!("guest crashed: {reason}"),
    }
}

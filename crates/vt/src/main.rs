//! `vt`: the VT System command-line tool. One module per verb.

mod image;
mod lab;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "vt", version, about = "VT System: KVM virtualization platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run commands on a hardware-virtualization /dev/kvm inside the lab
    /// (QEMU TCG with nested SVM).
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Fetch and build guest images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Run one VM in the foreground, without the daemon: takes the flags of
    /// `vt-vmm` (`vt run --kernel PATH [--initrd PATH] [--cmdline STR]
    /// [--cpus N] [--memory MIB] [--serial SPEC] [--on-reboot exit|restart]`).
    #[command(disable_help_flag = true)]
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lab(c) => lab::run(c),
        Command::Image(c) => image::run(c),
        Command::Run { args } => run::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vt: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

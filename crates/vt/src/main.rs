//! `vt`: the VT System command-line tool. One module per verb.

mod image;
mod lab;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lab(c) => lab::run(c),
        Command::Image(c) => image::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vt: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

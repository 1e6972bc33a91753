//! `vt lab ...`: the lab (see the `lab` crate).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum LabCommand {
    /// Boot the lab, run a shell command in it, print its output and exit
    /// with its exit code.
    Run(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// L1 memory in MiB
    #[arg(long, value_name = "MIB", default_value_t = 3072)]
    memory: u32,
    /// L1 vCPUs
    #[arg(long, value_name = "N", default_value_t = 2)]
    cpus: u32,
    /// Carry a host file in (GUEST defaults to /<file name>)
    #[arg(long, value_name = "HOST[:GUEST]")]
    file: Vec<String>,
    /// Carry an ELF binary and its shared libraries in (GUEST defaults to /bin/<name>)
    #[arg(long, value_name = "HOST[:GUEST]")]
    binary: Vec<String>,
    /// Give up (and kill QEMU) after this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout: u64,
    /// Echo the whole L1 console live to stderr
    #[arg(long, short)]
    verbose: bool,
    /// Print the boot and run times to stderr
    #[arg(long)]
    timing: bool,
    /// Carry the L2 guest artifacts in, to /guest/{vmlinuz,vmlinux,initramfs.cpio.gz}
    #[arg(long)]
    with_guest: bool,
    /// Carry this host's QEMU in (a peer VMM to compare with)
    #[arg(long)]
    with_qemu: bool,
    /// Extra QEMU argument (repeat for several)
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    qemu_arg: Vec<String>,
    /// Extra L1 kernel command-line word
    #[arg(long, value_name = "WORD")]
    kernel_arg: Vec<String>,
    /// Guest artifacts directory [default: $VT_GUEST_DIR or <repo>/target/guest]
    #[arg(long, value_name = "DIR")]
    guest_dir: Option<PathBuf>,
    /// The command, run with `sh -c` in the L1 (words are joined by spaces)
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(cmd: LabCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LabCommand::Run(args) => lab_run(args),
    }
}

fn lab_run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut lab = lab::Lab::new()
        .memory_mib(args.memory)
        .cpus(args.cpus)
        .timeout(Duration::from_secs(args.timeout));
    if args.verbose {
        lab = lab.verbose(true);
    }
    if let Some(dir) = args.guest_dir {
        lab = lab.guest_dir(dir);
    }
    if args.with_guest {
        lab = lab.with_guest_artifacts();
    }
    if args.with_qemu {
        lab = lab.with_qemu();
    }
    for a in args.qemu_arg {
        lab = lab.qemu_arg(a);
    }
    for a in args.kernel_arg {
        lab = lab.kernel_arg(a);
    }
    for spec in &args.file {
        let (host, guest) = host_guest(spec, "/")?;
        lab = lab.add_file(host, &guest);
    }
    for spec in &args.binary {
        let (host, guest) = host_guest(spec, "/bin/")?;
        lab = lab.add_binary(host, &guest);
    }
    let out = lab.run(&args.command.join(" ")).context("lab run failed")?;
    print!("{}", out.stdout);
    if args.timing {
        let boot = out.boot.map_or(0.0, |b| b.as_secs_f64());
        eprintln!(
            "vt: lab up in {boot:.2} s, whole run {:.2} s",
            out.duration.as_secs_f64()
        );
    }
    Ok(ExitCode::from(u8::try_from(out.exit_code).unwrap_or(255)))
}

/// `HOST[:GUEST]`; a missing GUEST is `<default_dir><file name>`.
fn host_guest(spec: &str, default_dir: &str) -> anyhow::Result<(PathBuf, String)> {
    if let Some((host, guest)) = spec.split_once(":/") {
        return Ok((PathBuf::from(host), format!("/{guest}")));
    }
    let host = Path::new(spec);
    let Some(name) = host.file_name().and_then(|n| n.to_str()) else {
        bail!("{spec:?}: expected HOST[:GUEST]");
    };
    Ok((host.to_path_buf(), format!("{default_dir}{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_guest() {
        let (h, g) = host_guest("target/x:/vt/x", "/bin/").unwrap();
        assert_eq!((h.to_str(), g.as_str()), (Some("target/x"), "/vt/x"));
        let (h, g) = host_guest("/usr/bin/strace", "/bin/").unwrap();
        assert_eq!(
            (h.to_str(), g.as_str()),
            (Some("/usr/bin/strace"), "/bin/strace")
        );
        assert!(host_guest("/", "/").is_err());
    }
}

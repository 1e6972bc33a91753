//! `vt`: the VT System command-line tool. The verbs that talk to `vtd` are
//! in `cmd/` (one file each); `run`, `lab` and `image` work without it.
//!
//! Exit codes: 0 ok; 1 failed; 2 bad usage; 3 vtd unreachable; 4 no such
//! VM; 5 conflict (name taken, VM running / not running); 6 `vt shutdown`
//! had to stop the VM by force (the guest did not power off itself).

mod cmd;
mod host;
mod image;
mod lab;
mod man;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use cmd::client::{CliResult, Client};
use cmd::output::Format;

/// Shown after `vt --help`.
const EXAMPLES: &str = "\
Examples:
  vt net define lan --mode nat --subnet 10.0.0.0/24 && vt net start lan
  vt create --name web1 --ram 512 --disk path=/var/lib/vt/web1.qcow2,size=10,format=qcow2 \\
      --network network=lan --boot kernel=/boot/vmlinux,kernel_args=\"console=ttyS0 root=/dev/vda\"
  vt start web1 && vt console web1
  vt edit web1 --memory 1024 --vcpus 2      (at the next start if it runs)
  vt shutdown web1 --timeout 60             (exit 6: the stop had to be forced)
  vt list --output json

Exit codes: 0 ok, 1 failed, 2 bad usage, 3 vtd unreachable, 4 no such VM,
5 conflict, 6 a shutdown had to force the stop.";

#[derive(Parser)]
#[command(
    name = "vt",
    version,
    about = "VT System: KVM virtualization platform",
    after_help = EXAMPLES
)]
struct Cli {
    /// vtd's API socket.
    #[arg(
        long,
        global = true,
        env = "VT_SOCKET",
        default_value = "/run/vt/vtd.sock"
    )]
    socket: PathBuf,
    /// Output format (`human` is taken for `table`, as qemu-img names it).
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Define a VM (virt-install options).
    #[command(after_help = "\
Examples:
  vt create --name t1 --ram 256 --network network=default
  vt create --name web1 --ram 1024,merge=on --vcpus 2 \\
      --disk path=/var/lib/vt/web1.qcow2,size=10,format=qcow2 \\
      --network bridge=br0,mac=52:54:00:12:34:56 \\
      --boot kernel=/boot/vmlinux,initrd=/boot/initrd.img,kernel_args=\"console=ttyS0 root=/dev/vda\" --start")]
    Create(Box<cmd::create::CreateArgs>),
    /// Change a VM's definition (at its next start when it runs).
    #[command(after_help = "\
Examples:
  vt edit web1 --memory 2048 --vcpus 4
  vt edit web1 --disk-add path=/var/lib/vt/data.raw,size=20 --network-add network=lan
  vt edit web1 --disk-remove /var/lib/vt/data.raw --network-remove 52:54:00:12:34:56
  vt edit web1 --cmdline \"console=ttyS0 root=/dev/vda quiet\" --autostart on")]
    Edit(Box<cmd::edit::EditArgs>),
    /// Define a VM from a JSON definition (`vt dumpdef`'s), or make an
    /// existing VM's definition exactly that (FILE `-`: stdin).
    #[command(
        after_help = "Example:\n  vt dumpdef web1 > web1.json; $EDITOR web1.json; vt define web1.json"
    )]
    Define { file: String },
    /// Print a VM's definition as JSON (what its next start uses).
    Dumpdef { name: String },
    /// Start the VM when vtd starts after a host boot (or no more).
    Autostart {
        name: String,
        #[arg(long)]
        disable: bool,
    },
    /// List VMs (all of them, running or not).
    List {
        /// Accepted for virsh habits: `vt list` always lists every VM.
        #[arg(long)]
        all: bool,
    },
    /// Show one VM.
    #[command(visible_alias = "dominfo")]
    Info { name: String },
    /// Start a VM.
    Start { name: String },
    /// Press the power button and wait; stop after the timeout (exit 6
    /// then: the guest did not power off itself).
    #[command(after_help = "\
Example:
  vt shutdown web1 --timeout 60 || [ $? -eq 6 ] && echo \"web1 had to be stopped\"")]
    Shutdown {
        name: String,
        /// Seconds to wait for the guest to power off.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Stop a VM now (virsh destroy).
    #[command(visible_alias = "destroy")]
    Stop { name: String },
    /// Pause a VM's vCPUs.
    #[command(visible_alias = "suspend")]
    Pause { name: String },
    /// Resume a paused VM.
    Resume { name: String },
    /// Reboot gracefully (virsh reboot): press the power button; vtd
    /// starts the VM again when the guest has powered off.
    Reboot {
        name: String,
        /// Seconds vtd waits for the guest to power off (it keeps running
        /// if it does not).
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Reset a VM: a hard reset, it boots again at once.
    Reset { name: String },
    /// Resize a running VM's memory through its balloon (`vt create
    /// --balloon on`): SIZE in MiB, or with M / G, at most its defined size.
    Setmem { name: String, size: String },
    /// Remove a stopped VM's definition (disk images are kept).
    Undefine { name: String },
    /// Read a VM in state `unknown` again, once its definition.json is
    /// fixed or restored.
    Repair { name: String },
    /// The serial console: interactive on a terminal (Ctrl-] detaches),
    /// else streamed to stdout until the VM stops.
    Console {
        name: String,
        /// Print what the console has so far and exit.
        #[arg(long)]
        no_follow: bool,
    },
    /// Follow VM state changes.
    Events,
    /// One VM's statistics (like `virsh domstats`): CPU time, memory,
    /// vCPU exits, per-disk and per-NIC counters.
    Stats { name: String },
    /// A live view of every VM: CPU %, memory, disk and network rates
    /// (`q` quits).
    Top(cmd::top::TopArgs),
    /// Virtual networks (virsh net-*).
    #[command(subcommand)]
    Net(cmd::net::NetCommand),
    /// Policy switches (what VMs may do beyond the defaults).
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
    /// The audit trail: search, verify, file watches.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
    /// Print a shell completion script (bash, zsh, fish, ...).
    #[command(after_help = "Example:\n  vt completions bash > /etc/bash_completion.d/vt")]
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (vt.1, vt-create.1, ...) into DIR.
    #[command(hide = true)]
    Man {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Run commands on a hardware-virtualization /dev/kvm inside the lab
    /// (QEMU TCG with nested SVM).
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// This host's settings: `vt host memory` (KSM, THP, huge pages).
    #[command(subcommand)]
    Host(host::HostCommand),
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

fn managed(c: &Client, command: Command, f: Format) -> CliResult {
    use cmd::lifecycle::action;
    match command {
        Command::Create(a) => cmd::create::run(c, *a, f),
        Command::List { all: _ } => cmd::list::list(c, f),
        Command::Edit(a) => cmd::edit::edit(c, *a, f),
        Command::Define { file } => cmd::edit::define(c, &file, f),
        Command::Dumpdef { name } => cmd::edit::dumpdef(c, &name),
        Command::Autostart { name, disable } => cmd::edit::autostart(c, &name, disable, f),
        Command::Info { name } => cmd::list::info(c, &name, f),
        Command::Start { name } => action(c, &name, "start", "", f),
        Command::Shutdown { name, timeout } => cmd::power::shutdown(c, &name, timeout, f),
        Command::Stop { name } => action(c, &name, "stop", "", f),
        Command::Pause { name } => action(c, &name, "pause", "", f),
        Command::Resume { name } => action(c, &name, "resume", "", f),
        Command::Reboot { name, timeout } => {
            action(c, &name, "reboot", &format!("?timeout_secs={timeout}"), f)
        }
        Command::Reset { name } => action(c, &name, "reset", "", f),
        Command::Undefine { name } => cmd::lifecycle::undefine(c, &name, f),
        Command::Repair { name } => action(c, &name, "repair", "", f),
        Command::Setmem { name, size } => cmd::setmem::run(c, &name, &size, f),
        Command::Console { name, no_follow } => cmd::console::run(c, &name, !no_follow),
        Command::Events => cmd::events::run(c, f),
        Command::Stats { name } => cmd::stats::run(c, &name, f),
        Command::Top(a) => cmd::top::run(c, a),
        Command::Net(n) => cmd::net::run(c, n, f),
        Command::Policy(p) => cmd::policy::run(c, p, f),
        Command::Audit(a) => cmd::audit::run(c, a, f),
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    // A reader that went away (`vt console NAME | grep -q X`, `| head`)
    // ends `vt` quietly, as it does cat or virsh, instead of a panic in
    // println!: Rust starts with SIGPIPE ignored.
    // SAFETY: setting a signal's disposition to its default before any
    // thread exists; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args: Vec<String> = std::env::args().collect();
    cmd::errors::set_json(cmd::errors::wants_json(&args));
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => return cmd::errors::report(2, &cmd::errors::one_line(&e)),
    };
    cmd::errors::set_json(cli.output == Format::Json);
    let result = match cli.command {
        Command::Lab(c) => lab::run(c),
        Command::Image(c) => image::run(c, cli.output),
        Command::Host(c) => host::run(c, cli.output),
        Command::Run { args } => run::run(args),
        Command::Man { dir } => man::write(Cli::command(), &dir),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "vt", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let client = Client { socket: cli.socket };
            return match managed(&client, command, cli.output) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => e.exit(),
            };
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => cmd::errors::report(1, &format!("{e:#}")),
    }
}

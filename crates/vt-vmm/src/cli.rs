//! Command-line flags of `vt-vmm`.

use std::path::PathBuf;

use api::control::SeccompMode;
use api::{
    parse_balloon, parse_disk, parse_net, HugePageSize, MemoryOptions, OnReboot, SerialConfig,
    VmConfig,
};
use clap::{Parser, ValueEnum};

/// Run one virtual machine.
#[derive(Debug, Parser)]
#[command(name = "vt-vmm", version, about)]
pub struct Args {
    /// Kernel to boot: a bzImage or an ELF vmlinux (PVH entry used when present).
    #[arg(long, value_name = "PATH", required_unless_present = "firmware")]
    pub kernel: Option<PathBuf>,
    /// Boot through this firmware from the disks (`--disk` order is the
    /// boot order) instead of a kernel: SeaBIOS's bios-256k.bin. Not with
    /// --kernel/--initrd.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["kernel", "initrd"])]
    pub firmware: Option<PathBuf>,
    /// Initramfs to load.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line [default: console=ttyS0]; refused with
    /// `--firmware` (the disk's boot loader has its own).
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Number of vCPUs (1-254).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub memory: u64,
    /// Kernel same-page merging of guest RAM (`MADV_MERGEABLE`): `ksmd`
    /// may share identical pages with other VMs. Off by default (a timing
    /// side channel between the VMs sharing pages).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Switch::Off)]
    pub memory_merge: Switch,
    /// Transparent huge pages for guest RAM (`MADV_HUGEPAGE`).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Switch::On)]
    pub memory_thp: Switch,
    /// Back guest RAM with the host's hugetlbfs pages of this size
    /// (`2M` or `1G`), reserved before boot; the memory size must be a
    /// multiple of it. Default: ordinary memory.
    #[arg(long, value_name = "SIZE", value_parser = parse_hugepages)]
    pub memory_hugepages: Option<HugePageSize>,
    /// Serial console: `stdio`, `file=PATH` or `null`.
    #[arg(long, value_name = "SPEC", default_value = "stdio")]
    pub serial: String,
    /// What a guest reboot does.
    #[arg(long, value_enum, default_value_t = RebootArg::Exit)]
    pub on_reboot: RebootArg,
    /// A virtio-blk disk on a raw file (repeatable):
    /// `path=P[,readonly=on][,serial=S][,bw=BYTES/s][,iops=N]`; bw takes K/M/G.
    #[arg(long, value_name = "SPEC")]
    pub disk: Vec<String>,
    /// A virtio-net NIC on a tap device (repeatable):
    /// `tap=NAME[,mac=MAC][,bw=BYTES/s][,pps=N]`.
    #[arg(long, value_name = "SPEC")]
    pub net: Vec<String>,
    /// A virtio-rng device fed by the host's getrandom.
    #[arg(long)]
    pub rng: bool,
    /// A virtio-balloon device (its size set through the control API,
    /// `PUT /vm/balloon`): `on` or
    /// `[deflate_on_oom=on][,free_page_reporting=on]`.
    #[arg(long, value_name = "SPEC")]
    pub balloon: Option<String>,
    /// Serve the control API (JSON over HTTP) on this Unix socket
    /// (`/dev/fd/N`: a listening socket already bound, passed as fd N).
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Run in a cell: new namespaces, a root holding only /dev/kvm,
    /// no capabilities, the uid/gid of --jail-uid (needs root).
    #[arg(long, requires = "jail_uid")]
    pub jail: bool,
    /// The VM's own uid in the cell (not 0).
    #[arg(long, value_name = "UID")]
    pub jail_uid: Option<u32>,
    /// The VM's own gid in the cell (default: the uid).
    #[arg(long, value_name = "GID")]
    pub jail_gid: Option<u32>,
    /// Largest file the jailed VMM may grow, in bytes (RLIMIT_FSIZE).
    #[arg(long, value_name = "BYTES")]
    pub jail_file_size: Option<u64>,
    /// A label for managers (found in /proc/PID/cmdline); unused otherwise.
    #[arg(long, value_name = "STR")]
    pub id: Option<String>,
    /// seccomp filters per thread: `on` (a call outside the allow-list
    /// kills the VMM), `log` (allowed and logged by the kernel), `off`.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = SeccompArg::On)]
    pub seccomp: SeccompArg,
    /// Landlock: the VMM may open only its own files (`on`) or anything
    /// its user may (`off`).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Switch::On)]
    pub landlock: Switch,
}

/// `--seccomp` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeccompArg {
    /// A call outside the thread's allow-list kills the VMM.
    On,
    /// Such a call is allowed and logged by the kernel.
    Log,
    /// No filter.
    Off,
}

/// `on` / `off` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// `--on-reboot` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RebootArg {
    Exit,
    Restart,
}

/// Parses a `--memory-hugepages` value.
pub fn parse_hugepages(s: &str) -> Result<HugePageSize, String> {
    match s {
        "2M" => Ok(HugePageSize::Size2M),
        "1G" => Ok(HugePageSize::Size1G),
        _ => Err(format!("invalid huge page size '{s}': expected 2M or 1G")),
    }
}

/// Parses a `--serial` value.
pub fn parse_serial(s: &str) -> Result<SerialConfig, String> {
    match s {
        "stdio" => Ok(SerialConfig::Stdio),
        "null" => Ok(SerialConfig::Null),
        _ => match s.strip_prefix("file=") {
            Some(p) if !p.is_empty() => Ok(SerialConfig::File(p.into())),
            _ => Err(format!(
                "invalid --serial '{s}': expected stdio, null or file=PATH"
            )),
        },
    }
}

impl Args {
    /// The confinement `--seccomp` and `--landlock` ask for.
    pub fn policy(&self) -> vmm::sandbox::Policy {
        vmm::sandbox::Policy {
            seccomp: match self.seccomp {
                SeccompArg::On => SeccompMode::On,
                SeccompArg::Log => SeccompMode::Log,
                SeccompArg::Off => SeccompMode::Off,
            },
            landlock: self.landlock == Switch::On,
        }
    }

    /// The VM configuration these flags describe.
    pub fn to_config(&self) -> Result<VmConfig, String> {
        let config = VmConfig {
            kernel: self.kernel.clone().unwrap_or_default(),
            firmware: self.firmware.clone(),
            initrd: self.initrd.clone(),
            cmdline: match (&self.cmdline, &self.firmware) {
                (Some(c), _) => c.clone(),
                (None, Some(_)) => String::new(),
                (None, None) => "console=ttyS0".into(),
            },
            cpus: self.cpus,
            memory_mib: self.memory,
            memory: MemoryOptions {
                merge: self.memory_merge == Switch::On,
                thp: self.memory_thp == Switch::On,
                hugepages: self.memory_hugepages,
            },
            serial: parse_serial(&self.serial)?,
            on_reboot: match self.on_reboot {
                RebootArg::Exit => OnReboot::Exit,
                RebootArg::Restart => OnReboot::Restart,
            },
            disks: self
                .disk
                .iter()
                .map(|d| parse_disk(d).map_err(|e| format!("invalid --disk '{d}': {e}")))
                .collect::<Result<_, _>>()?,
            nets: self
                .net
                .iter()
                .map(|n| parse_net(n).map_err(|e| format!("invalid --net '{n}': {e}")))
                .collect::<Result<_, _>>()?,
            rng: self.rng,
            balloon: self
                .balloon
                .as_deref()
                .map(|b| parse_balloon(b).map_err(|e| format!("invalid --balloon '{b}': {e}")))
                .transpose()?,
        };
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

/// Bad flags: `vt-vmm: error: ...` on one line and status 2 (`--help` and
/// `--version` print as usual and exit 0).
pub fn usage_error(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    eprintln!("vt-vmm: error: {}", one_line(&e.to_string()));
    std::process::ExitCode::from(2)
}

/// clap's message without its `error:` prefix, tips and usage, on one line.
fn one_line(msg: &str) -> String {
    let mut lines = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"));
    let first = lines.next().unwrap_or("bad arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match lines.next() {
        Some(more) if more.starts_with('[') || first.ends_with(':') => format!("{first} {more}"),
        _ => first.to_string(),
    }
}

/// `error: cause: cause` on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_specs() {
        assert_eq!(parse_serial("stdio"), Ok(SerialConfig::Stdio));
        assert_eq!(parse_serial("null"), Ok(SerialConfig::Null));
        assert_eq!(parse_serial("file=/x"), Ok(SerialConfig::File("/x".into())));
        assert!(parse_serial("file=").is_err());
        assert!(parse_serial("tcp:1").is_err());
    }

    #[test]
    fn flags_become_a_config() {
        let a = Args::parse_from([
            "vt-vmm", "--kernel", "/k", "--cpus", "2", "--memory", "1024",
        ]);
        let c = a.to_config().unwrap();
        assert_eq!((c.cpus, c.memory_mib), (2, 1024));
        assert_eq!(c.cmdline, "console=ttyS0");
        let a = Args::parse_from(["vt-vmm", "--kernel", "/k", "--cpus", "0"]);
        assert!(a.to_config().unwrap_err().contains("between 1 and 254"));
    }

    #[test]
    fn firmware_or_kernel() {
        let a = Args::parse_from(["vt-vmm", "--firmware", "/bios.bin"]);
        let c = a.to_config().unwrap();
        assert_eq!(
            c.firmware.as_deref(),
            Some(std::path::Path::new("/bios.bin"))
        );
        assert!(c.kernel.as_os_str().is_empty());
        for bad in [
            &["vt-vmm"][..],
            &["vt-vmm", "--firmware", "/b", "--kernel", "/k"],
            &["vt-vmm", "--firmware", "/b", "--initrd", "/i"],
        ] {
            assert!(Args::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn confinement_flags() {
        let on = Args::parse_from(["vt-vmm", "--kernel", "/k"]).policy();
        assert_eq!(on, vmm::sandbox::Policy::default());
        assert_eq!(on.seccomp, SeccompMode::On);
        assert!(on.landlock);
        let a = Args::parse_from(["vt-vmm", "--kernel", "/k", "--seccomp", "log"]);
        assert_eq!(a.policy().seccomp, SeccompMode::Log);
        let a = Args::parse_from([
            "vt-vmm",
            "--kernel",
            "/k",
            "--seccomp",
            "off",
            "--landlock",
            "off",
        ]);
        assert_eq!(a.policy(), vmm::sandbox::Policy::off());
        for bad in [["--seccomp", "maybe"], ["--landlock", "log"]] {
            let mut argv = vec!["vt-vmm", "--kernel", "/k"];
            argv.extend(bad);
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}

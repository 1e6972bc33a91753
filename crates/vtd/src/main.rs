//! `vtd`: the VT System manager daemon.
//!
//! Serves the REST API (see `openapi.json`, also at `GET /openapi.json`) on
//! a Unix socket, keeps VM definitions in the state directory, runs each
//! VM as its own `vt-vmm` process (own session, so it outlives `vtd`) and
//! finds running VMMs again when it restarts.

mod audit;
mod cell;
mod daemon;
mod error;
mod events;
mod exit;
mod net;
mod process;
mod routes;
mod store;
mod vm;
mod vmm;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

/// The VT System manager daemon.
#[derive(Parser)]
#[command(name = "vtd", version, about)]
struct Args {
    /// The API socket (created with mode 0660).
    #[arg(long, value_name = "PATH", default_value = "/run/vt/vtd.sock")]
    socket: PathBuf,
    /// Where VM definitions and logs live.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/vt")]
    state_dir: PathBuf,
    /// The VMM binary (default: `vt-vmm` beside `vtd`, else from PATH).
    #[arg(long, value_name = "PATH")]
    vmm: Option<PathBuf>,
    /// Kernel for VMs defined without one (e.g. `vt create` without `--boot`).
    #[arg(long, value_name = "PATH")]
    default_kernel: Option<PathBuf>,
    /// Initrd that goes with `--default-kernel`.
    #[arg(long, value_name = "PATH")]
    default_initrd: Option<PathBuf>,
    /// Group (numeric id) to own the socket; members may use the API.
    #[arg(long, value_name = "GID")]
    socket_group: Option<u32>,
    /// Run every VMM in a cell (own uid, namespaces, no capabilities,
    /// cgroup limits); `off` only for debugging. Needs root.
    #[arg(long, value_name = "on|off", default_value = "on")]
    jail: OnOff,
    /// First uid/gid of the range VMMs run as (65536 ids, none of which
    /// may belong to a host user or group).
    #[arg(long, value_name = "UID", default_value_t = jail::ids::DEFAULT_BASE)]
    vm_uid_base: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

fn default_vmm() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("vt-vmm")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("vt-vmm"))
}

fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(format!("{} is in use by another vtd", path.display()));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let perms = std::fs::Permissions::from_mode(0o660);
    std::fs::set_permissions(path, perms).map_err(|e| format!("chmod {}: {e}", path.display()))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(listener)
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Every file and directory vtd makes (definitions, logs, sockets) is
    // its own alone, whatever umask it was started with.
    // SAFETY: umask takes a mode and cannot fail.
    unsafe { libc::umask(0o077) };
    let vmm = args.vmm.unwrap_or_else(default_vmm);
    let abs = |p: Option<PathBuf>| p.map(|p| std::path::absolute(&p).unwrap_or(p));
    let defaults = daemon::Defaults {
        kernel: abs(args.default_kernel),
        initrd: abs(args.default_initrd),
    };
    let jail = match args.jail {
        OnOff::Off => None,
        OnOff::On => {
            if let Err(e) = jail::ids::check_range(
                args.vm_uid_base,
                Path::new("/etc/passwd"),
                Path::new("/etc/group"),
            ) {
                eprintln!("vtd: error: {e}");
                return ExitCode::from(2);
            }
            if !jail::is_root() {
                eprintln!("vtd: error: --jail on needs root (use --jail off to run VMMs unconfined as this user)");
                return ExitCode::from(2);
            }
            let cgroups = jail::cgroup::Layout::detect();
            let all = jail::cgroup::CgroupLimits {
                memory_bytes: Some(1),
                cpu_weight: Some(1),
                cpu_quota_percent: None,
                pids: Some(1),
            };
            let (_, missing) = cgroups.enforceable(&all);
            if !missing.is_empty() {
                eprintln!(
                    "vtd: warning: no cgroup controller for {}: VMs run without those limits",
                    missing.join(", ")
                );
            }
            Some(Arc::new(cell::Jail {
                uids: cell::UidPool::new(args.vm_uid_base),
                cgroups,
            }))
        }
    };
    let daemon = match daemon::Daemon::open(&args.state_dir, vmm, defaults, jail) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "vtd: error: state directory {}: {e}",
                args.state_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let listener = match bind(&args.socket, args.socket_group) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vtd: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Decided before serving, started in the background.
    let due = daemon.autostart_due();
    let autostart = daemon.clone();
    std::thread::spawn(move || autostart.autostart(due));
    let api = Arc::new(routes::Api(daemon));
    vt_http::serve(listener, api, vt_http::Limits::default(), 512);
    ExitCode::SUCCESS
}

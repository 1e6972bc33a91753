//! `vtd`: the VT System manager daemon.
//!
//! Serves the REST API (see `openapi.json`, also at `GET /openapi.json`) on
//! a Unix socket, keeps VM definitions in the state directory, runs each
//! VM as its own `vt-vmm` process (own session, so it outlives `vtd`) and
//! finds running VMMs again when it restarts.

mod access;
mod admission;
mod audit;
mod boot;
mod cell;
mod console_log;
mod daemon;
mod edit;
mod error;
mod events;
mod exit;
mod metrics;
mod net;
mod nics;
mod policy;
mod process;
mod ready;
mod reboot;
mod routes;
mod scan;
mod stats;
mod store;
mod vm;
mod vmm;
mod vmnet;
mod watches;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

/// Connections at once on both sockets together.
const CONNECTIONS: usize = 512;
/// Connections at once of one non-root user.
const CONNECTIONS_PER_UID: usize = 64;
/// Of [`CONNECTIONS`], the slots only root may take.
const ROOT_CONNECTIONS: usize = 64;

/// `--state-dir` when none is given.
const DEFAULT_STATE_DIR: &str = "/var/lib/vt";

/// The VT System manager daemon.
#[derive(Parser)]
#[command(name = "vtd", version, about)]
struct Args {
    /// The API socket (created with mode 0660).
    #[arg(long, value_name = "PATH", default_value = "/run/vt/vtd.sock")]
    socket: PathBuf,
    /// Where VM definitions and logs live.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
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
    /// The BIOS firmware for VMs that boot their disk (`boot` `bios`,
    /// `vt create --import`): SeaBIOS's bios-256k.bin.
    #[arg(long, value_name = "PATH", default_value = boot::DEFAULT_BIOS)]
    bios: PathBuf,
    /// Group (a name or a numeric id) to own the admin socket; members
    /// may use the whole API.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// The read-only socket, mode 0666 (list, info, console output,
    /// events; every change refused). Default: the admin socket's path
    /// with `-ro` before its extension (`/run/vt/vtd-ro.sock`).
    #[arg(long, value_name = "PATH")]
    ro_socket: Option<PathBuf>,
    /// Run every VMM in a cell (own uid, namespaces, no capabilities,
    /// cgroup limits); `off` only for debugging. Needs root.
    #[arg(long, value_name = "on|off", default_value = "on")]
    jail: OnOff,
    /// First uid/gid of the range VMMs run as (65536 ids, none of which
    /// may belong to a host user or group).
    #[arg(long, value_name = "UID", default_value_t = jail::ids::DEFAULT_BASE)]
    vm_uid_base: u32,
    /// A directory where kernels and disk images belong (repeatable).
    /// Files elsewhere are refused while the `vm_host_paths` policy
    /// switch is off (it is on by default).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/vt/images")]
    storage_dir: Vec<PathBuf>,
    /// The dnsmasq program that serves DHCP and DNS on networks.
    #[arg(long, value_name = "PATH", default_value = "dnsmasq")]
    dnsmasq: String,
    /// The nft program that loads vtd's nftables tables.
    #[arg(long, value_name = "PATH", default_value = "nft")]
    nft: String,
    /// The audit trail's sealing key (32 bytes, made with mode 0600 when
    /// missing). Keep it outside the state directory to separate it from
    /// the trail (another file system, a path backed up elsewhere).
    /// Default: STATE/audit.key.
    #[arg(long, value_name = "PATH")]
    audit_key: Option<PathBuf>,
    /// Size of one audit trail file before the next is begun (MiB).
    #[arg(long, value_name = "MIB", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
    audit_file_size: u64,
    /// Audit trail files kept; the oldest beyond are removed (and that
    /// removal recorded).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(2..=100000))]
    audit_files: u64,
    /// Repeated accesses of one kind by one process to one watched file
    /// within this many seconds are one record (the first is recorded at
    /// once, the rest counted).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    watch_coalesce: u64,
    /// Size of a VM's console.log before it is rotated: bytes, or a
    /// number with K, M or G (a VM keeps console.log plus
    /// --console-log-files rotated files).
    #[arg(long, value_name = "SIZE", default_value = "2M", value_parser = console_log_size)]
    console_log_size: u64,
    /// Rotated console logs kept per VM (console.log.1 ... .N).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=1000))]
    console_log_files: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// `--console-log-size`: 4 KiB to 4 GiB.
fn console_log_size(v: &str) -> Result<u64, String> {
    api::parse_size("console-log-size", v)
        .map_err(|e| e.to_string())
        .and_then(|n| {
            (4096..=4 << 30)
                .contains(&n)
                .then_some(n)
                .ok_or_else(|| format!("{v}: between 4K and 4G"))
        })
}

fn default_vmm() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("vt-vmm")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("vt-vmm"))
}

/// A group name or number as a gid (getgrnam_r(3)).
fn group_id(g: &str) -> Result<u32, String> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    let name = std::ffi::CString::new(g).map_err(|_| format!("bad group name '{g}'"))?;
    // SAFETY: group is plain data; getgrnam_r fills it with pointers into
    // `buf`, both alive for the call, and `out` tells whether it found one.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as above; every pointer is valid for the call.
    let r = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if r != 0 || out.is_null() {
        return Err(format!("--socket-group: no group named '{g}'"));
    }
    Ok(grp.gr_gid)
}

/// `/run/vt/vtd.sock` → `/run/vt/vtd-ro.sock`.
fn ro_path(admin: &Path) -> PathBuf {
    let stem = admin
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match admin.extension() {
        Some(ext) => format!("{stem}-ro.{}", ext.to_string_lossy()),
        None => format!("{stem}-ro"),
    };
    admin.with_file_name(name)
}

fn bind(path: &Path, group: Option<u32>, mode: u32) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        // Reachable by everyone: the sockets' own modes decide who may talk.
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(format!("{} is in use by another vtd", path.display()));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let perms = std::fs::Permissions::from_mode(mode);
    std::fs::set_permissions(path, perms).map_err(|e| format!("chmod {}: {e}", path.display()))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(listener)
}

fn main() -> ExitCode {
    let args = Args::parse();
    vt_log::init("vtd");
    console_log::configure(console_log::Config {
        logger: console_log::default_logger(),
        limits: vt_log::rotate::Limits {
            max_bytes: args.console_log_size,
            files: args.console_log_files,
        },
    });
    // Every file and directory vtd makes (definitions, logs, sockets) is
    // its own alone, whatever umask it was started with.
    // SAFETY: umask takes a mode and cannot fail.
    unsafe { libc::umask(0o077) };
    let vmm = args.vmm.unwrap_or_else(default_vmm);
    let abs = |p: Option<PathBuf>| p.map(|p| std::path::absolute(&p).unwrap_or(p));
    let defaults = daemon::Defaults {
        kernel: abs(args.default_kernel),
        initrd: abs(args.default_initrd),
        bios: abs(Some(args.bios)),
    };
    let jail = match args.jail {
        OnOff::Off => None,
        OnOff::On => {
            if let Err(e) = jail::ids::check_range(args.vm_uid_base, &jail::ids::IdFiles::host()) {
                tracing::error!("{e}");
                return ExitCode::from(2);
            }
            if !jail::is_root() {
                tracing::error!(
                    "--jail on needs root (use --jail off to run VMMs unconfined as this user)"
                );
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
                tracing::warn!(
                    "no cgroup controller for {}: VMs run without those limits",
                    missing.join(", ")
                );
            }
            Some(Arc::new(cell::Jail {
                uids: cell::UidPool::new(args.vm_uid_base),
                cgroups,
                instance: cell::Jail::instance_of(&args.state_dir, Path::new(DEFAULT_STATE_DIR)),
            }))
        }
    };
    let audit = daemon::AuditSettings {
        key: abs(args.audit_key),
        limits: audit::Limits {
            file_bytes: args.audit_file_size << 20,
            files: args.audit_files as usize,
        },
        coalesce: std::time::Duration::from_secs(args.watch_coalesce),
    };
    network::nft::set_program(&args.nft);
    let options = daemon::Options {
        storage_dirs: args
            .storage_dir
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect(),
        dnsmasq: args.dnsmasq.clone(),
    };
    let daemon = match daemon::Daemon::open(&args.state_dir, vmm, defaults, jail, &audit, options) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("state directory {}: {e}", args.state_dir.display());
            return ExitCode::FAILURE;
        }
    };
    let group = match args.socket_group.as_deref().map(group_id).transpose() {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let ro_socket = args
        .ro_socket
        .clone()
        .unwrap_or_else(|| ro_path(&args.socket));
    let (listener, ro_listener) = match bind(&args.socket, group, 0o660)
        .and_then(|l| Ok((l, bind(&ro_socket, None, 0o666)?)))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Decided before serving, started in the background.
    let due = daemon.autostart_due();
    let autostart = daemon.clone();
    std::thread::spawn(move || autostart.autostart(due));
    // Both sockets share one set of slots: a non-root user holds at most
    // CONNECTIONS_PER_UID of them, and the last ROOT_CONNECTIONS are root's.
    let mut limits = vt_http::ConnectionLimits::new(CONNECTIONS);
    limits.per_uid = CONNECTIONS_PER_UID;
    limits.reserved_for_root = ROOT_CONNECTIONS;
    let connections = vt_http::Connections::new(limits);
    let ro_connections = connections.clone();
    // dnsmasq supervision: one that died is started again.
    let supervisor = daemon.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(5));
        supervisor.nets.supervise(&|n| supervisor.hosts_for(n));
    });
    let all = daemon.list();
    let active = all.iter().filter(|v| v.run_state().0.is_active()).count();
    tracing::info!(
        socket = %args.socket.display(),
        ro_socket = %ro_socket.display(),
        state_dir = %args.state_dir.display(),
        jail = args.jail == OnOff::On,
        vms = all.len(),
        running = active,
        "vtd {} serving",
        env!("CARGO_PKG_VERSION")
    );
    let vms = all.len();
    let api = Arc::new(routes::Api(daemon));
    let ro = Arc::new(routes::ReadOnly(api.clone()));
    let ro_thread = std::thread::Builder::new()
        .name("ro-socket".into())
        .spawn(move || vt_http::serve(ro_listener, ro, vt_http::Limits::default(), ro_connections));
    if let Err(e) = ro_thread {
        tracing::error!("cannot serve the read-only socket: {e}");
        return ExitCode::FAILURE;
    }
    ready::notify_ready(&args.socket, vms);
    vt_http::serve(listener, api, vt_http::Limits::default(), connections);
    ExitCode::SUCCESS
}

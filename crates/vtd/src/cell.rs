//! Starting a VMM in its cell (the `jail` crate): `vtd` opens every
//! resource itself and passes descriptors, makes the taps in its own
//! network namespace, creates the VM's cgroup, and gives the VMM a uid of
//! its own from the range it owns.
//!
//! Descriptors reach the VMM as fd 3, 4, … in the order pushed here; its
//! flags name them `/dev/fd/N` (`fd=N` for disks and NICs).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use api::manager::VmDefinition;

use crate::access::Kind;
use crate::boot::Boot;
use crate::daemon::Defaults;
use crate::error::ApiError;
use crate::store::VmDir;

/// Guest RAM plus this much is the VMM's memory limit: its own heap,
/// thread stacks, page tables and device buffers (measured at a few MiB,
/// BENCHMARKS.md) with room for the page cache of cached disk I/O.
pub const MEMORY_OVERHEAD_MIB: u64 = 256;
/// Tasks allowed besides one per vCPU: main, console, API listener and up
/// to 32 connections, one worker per device, and spare.
pub const PIDS_OVERHEAD: u64 = 96;

/// The uids handed to running VMs: `base + slot`, lowest free slot first.
#[derive(Debug)]
pub struct UidPool {
    base: u32,
    used: Mutex<BTreeSet<u32>>,
}

impl UidPool {
    pub fn new(base: u32) -> Self {
        UidPool {
            base,
            used: Mutex::new(BTreeSet::new()),
        }
    }

    /// A uid no running VM has. Errors when all [`jail::ids::RANGE`] are taken.
    pub fn take(&self) -> Result<u32, ApiError> {
        let mut used = crate::vm::lock(&self.used);
        let slot = (0..jail::ids::RANGE)
            .find(|s| !used.contains(&(self.base + s)))
            .ok_or_else(|| ApiError::new(503, "every VM uid is in use"))?;
        used.insert(self.base + slot);
        Ok(self.base + slot)
    }

    /// The first VM uid.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// Marks `uid` taken (a VMM found running after a restart).
    pub fn mark(&self, uid: u32) {
        crate::vm::lock(&self.used).insert(uid);
    }

    /// Gives `uid` back.
    pub fn release(&self, uid: u32) {
        crate::vm::lock(&self.used).remove(&uid);
    }
}

/// How `vtd` runs VMMs.
#[derive(Debug)]
pub struct Jail {
    pub uids: UidPool,
    pub cgroups: jail::cgroup::Layout,
    /// Told apart from other `vtd`s' groups on this host: empty for the
    /// default state directory (groups are `vt/NAME`), else 8 hex digits
    /// of its path (`vt/NAME.1a2b3c4d`), so two daemons' VMs of one name
    /// never share, remove or race for one group.
    pub instance: String,
}

impl Jail {
    /// The cgroup name (under `vt/`) of VM `name`.
    pub fn cgroup_name(&self, name: &str) -> String {
        if self.instance.is_empty() {
            name.to_string()
        } else {
            format!("{name}.{}", self.instance)
        }
    }

    /// [`Jail::instance`] for `state_dir` (`default`: the built-in one).
    pub fn instance_of(state_dir: &Path, default: &Path) -> String {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let dir = canon(state_dir);
        if dir == canon(default) {
            return String::new();
        }
        // FNV-1a, 32 bits: a label, not a secret.
        let mut h: u32 = 0x811c_9dc5;
        for b in dir.as_os_str().as_encoded_bytes() {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
        format!("{h:08x}")
    }
}

/// A VMM started in its cell, still gated until [`jail::Child::release`].
pub struct Started {
    pub child: jail::Child,
    pub uid: u32,
    pub cgroup: jail::cgroup::Cgroup,
    /// What `vt info` shows of the cell.
    pub confinement: api::manager::Confinement,
}

/// The descriptors and flags under construction.
#[derive(Default)]
struct Passed {
    fds: Vec<OwnedFd>,
    args: Vec<OsString>,
}

impl Passed {
    /// Pushes `fd`; returns the number the VMM will see.
    fn push(&mut self, fd: impl Into<OwnedFd>) -> usize {
        self.fds.push(fd.into());
        2 + self.fds.len()
    }

    fn arg(&mut self, a: impl Into<OsString>) {
        self.args.push(a.into());
    }
}

/// Checks a file just opened for the VMM (role, path as named, the open
/// file): the policy switches that look at where a file is
/// ([`crate::admission::check_open`]), on the very file the VMM gets.
pub type Guard<'a> = &'a dyn Fn(&'static str, &Path, &File) -> Result<(), ApiError>;

/// What a start is tied to besides the definition: the bridge of each
/// NIC (in order) and the check every opened file passes.
pub struct Links<'a> {
    pub bridges: &'a [String],
    pub guard: Guard<'a>,
}

/// Opens a file of `def` as its owner ([`crate::access`]) and puts it
/// past `guard`. Only the admin's default kernel and initrd, in those
/// roles and read-only, are opened as vtd.
fn open(
    def: &VmDefinition,
    defaults: &Defaults,
    guard: Guard,
    path: &Path,
    write: bool,
    flags: i32,
    what: &'static str,
) -> Result<File, ApiError> {
    let boot_file = matches!(what, "kernel" | "initrd");
    let owner = if boot_file && !write && defaults.is_default(path) {
        None
    } else {
        def.owner
    };
    let kind = if what == "disk" {
        Kind::FileOrBlock
    } else {
        Kind::Regular
    };
    let f = crate::access::open_as(owner, what, path, write, flags, kind)?;
    guard(what, path, &f)?;
    Ok(f)
}

/// The backing chain of the qcow2 `top` (opened from `path` as the owner),
/// each layer opened as the owner, read-only, regular files only: the
/// references come from headers the owner wrote, so vtd opens none as
/// itself for a non-root owner (and, for root's VMs, only regular files,
/// checked before the open). Stops at a layer that is not qcow2 or has no backing file;
/// the VMM checks formats, loops and depth again when it opens the chain.
fn open_chain(
    def: &VmDefinition,
    defaults: &Defaults,
    guard: Guard,
    top: &File,
    path: &Path,
) -> Result<Vec<File>, ApiError> {
    let mut out: Vec<File> = Vec::new();
    let mut current = path.to_path_buf();
    loop {
        let layer = out.last().unwrap_or(top);
        let Ok(header) = disk::header::Header::read(layer) else {
            return Ok(out);
        };
        let Some(reference) = header.backing_file else {
            return Ok(out);
        };
        if out.len() >= disk::MAX_CHAIN_DEPTH {
            return Err(ApiError::bad_request(format!(
                "{}: backing chain deeper than {}",
                path.display(),
                disk::MAX_CHAIN_DEPTH
            )));
        }
        let dir = current.parent().unwrap_or(Path::new("/")).to_path_buf();
        current = dir.join(reference);
        out.push(open(
            def,
            defaults,
            guard,
            &current,
            false,
            0,
            "backing file",
        )?);
    }
}

/// The largest file the VMM may grow (its RLIMIT_FSIZE, `--jail-file-size`),
/// bytes: its biggest disk plus an eighth (image metadata) plus 64 MiB, and
/// at least 1 GiB. The limit covers every regular file it writes: its disks
/// and `vmm.log` (its stdout and stderr). The console is not among them: it
/// goes into a pipe, and `vt-logger` writes `console.log` outside the cell.
fn file_size_limit(disks: &[File]) -> u64 {
    let biggest = disks
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    (biggest + biggest / 8 + (64 << 20)).max(1 << 30)
}

/// Opens everything `def` needs, makes its taps, its cgroup and its uid,
/// and spawns `vmm` in a cell, gated. On error nothing is left behind.
pub fn start(
    jail: &Jail,
    vmm: &Path,
    boot: &Boot,
    def: &VmDefinition,
    defaults: &Defaults,
    dir: &VmDir,
    links: Links,
) -> Result<Started, ApiError> {
    let Links { bridges, guard } = links;
    let mut p = Passed::default();
    match boot {
        Boot::Kernel(kernel) => {
            let k = open(def, defaults, guard, kernel, false, 0, "kernel")?;
            let n = p.push(k);
            p.arg("--kernel");
            p.arg(format!("/dev/fd/{n}"));
            if let Some(i) = &def.initrd {
                let n = p.push(open(def, defaults, guard, i, false, 0, "initrd")?);
                p.arg("--initrd");
                p.arg(format!("/dev/fd/{n}"));
            }
            p.arg("--cmdline");
            p.arg(def.cmdline.clone());
        }
        Boot::Firmware(f) => {
            // The admin's file (vtd's --bios), opened as vtd, read-only.
            let fw = crate::access::open_as(None, "firmware", f, false, 0, Kind::Regular)?;
            let n = p.push(fw);
            p.arg("--firmware");
            p.arg(format!("/dev/fd/{n}"));
        }
    }
    let mut disks = Vec::new();
    for d in &def.disks {
        let f = open(def, defaults, guard, &d.path, !d.readonly, 0, "disk")?;
        disks.push(f.try_clone().map_err(|e| ApiError::internal("dup", e))?);
        let mut spec = format!("fd={}", p.push(f));
        if d.cache == api::CacheMode::Direct {
            let direct = open(
                def,
                defaults,
                guard,
                &d.path,
                !d.readonly,
                libc::O_DIRECT,
                "disk",
            )?;
            spec.push_str(&format!(",direct_fd={},cache=none", p.push(direct)));
        }
        if d.readonly {
            spec.push_str(",readonly=on");
        }
        if d.shareable {
            spec.push_str(",shareable=on");
        }
        if let Some(f) = d.format {
            spec.push_str(&format!(",format={}", f.name()));
        }
        if d.format == Some(api::DiskFormat::Qcow2) {
            // The VMM cannot reach the backing files: open the chain here,
            // as the owner, read-only, and pass it top-down.
            let top = disks
                .last()
                .ok_or_else(|| ApiError::internal("disk", "lost"))?;
            let chain = open_chain(def, defaults, guard, top, &d.path)?;
            if !chain.is_empty() {
                let fds: Vec<usize> = chain.into_iter().map(|f| p.push(f)).collect();
                let fds: Vec<String> = fds.iter().map(|n| n.to_string()).collect();
                spec.push_str(&format!(",backing_fds={}", fds.join(":")));
            }
        }
        p.arg("--disk");
        p.arg(spec);
    }
    for (i, (n, bridge)) in def.networks.iter().zip(bridges).enumerate() {
        let name = crate::net::tap_name(&def.name, i);
        let tap = crate::net::create_tap(&name)
            .map_err(|e| ApiError::internal(&format!("cannot create tap {name}"), e))?;
        crate::net::attach(bridge, &name, std::time::Duration::ZERO)
            .map_err(|e| ApiError::internal(&format!("cannot add {name} to bridge {bridge}"), e))?;
        let mac = n
            .mac
            .as_ref()
            .map(|m| format!(",mac={m}"))
            .unwrap_or_default();
        let fd = p.push(tap);
        p.arg("--net");
        p.arg(format!("tap={name},fd={fd}{mac}"));
    }
    // The console goes through a pipe to its logger (rotated console.log).
    let console = crate::console_log::start(&dir.console())
        .map_err(|e| ApiError::internal("cannot start the console logger", e))?;
    let n = p.push(console);
    p.arg("--serial");
    p.arg(format!("file=/dev/fd/{n}"));
    let listener = UnixListener::bind(dir.socket())
        .map_err(|e| ApiError::internal("cannot bind the VM's control socket", e))?;
    let n = p.push(listener);
    p.arg("--api-socket");
    p.arg(format!("/dev/fd/{n}"));
    let mut args: Vec<OsString> = vec![
        "--cpus".into(),
        def.vcpus.to_string().into(),
        "--memory".into(),
        def.memory_mib.to_string().into(),
        "--on-reboot".into(),
        "restart".into(),
    ];
    args.extend(
        crate::process::memory_flags(def)
            .into_iter()
            .map(OsString::from),
    );
    args.append(&mut p.args);
    let log = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(dir.vmm_log())
        .map_err(|e| ApiError::internal("cannot open vmm.log", e))?;
    let uid = jail.uids.take()?;
    args.extend([
        "--id".into(),
        dir.socket().into_os_string(),
        "--jail".into(),
        "--jail-uid".into(),
        uid.to_string().into(),
        "--jail-file-size".into(),
        file_size_limit(&disks).to_string().into(),
    ]);
    let undo = |uid| {
        jail.uids.release(uid);
        let _ = std::fs::remove_file(dir.socket());
    };
    let want = jail::cgroup::CgroupLimits {
        memory_bytes: Some((def.memory_mib + MEMORY_OVERHEAD_MIB) << 20),
        cpu_weight: Some(def.cpu.weight.unwrap_or(100)),
        cpu_quota_percent: def.cpu.quota_percent,
        pids: Some(u64::from(def.vcpus) + PIDS_OVERHEAD),
    };
    // Default limits apply where the host has the controller (vtd says at
    // start which are missing); a limit the definition asks for must be
    // enforced, or the VM does not start.
    let (want, missing) = jail.cgroups.enforceable(&want);
    if !def.cpu.is_default() && missing.contains(&"cpu") {
        undo(uid);
        return Err(ApiError::bad_request(
            "the definition sets cpu limits, but this host has no cgroup cpu controller (neither cgroup v1 nor v2)",
        ));
    }
    let cgroup = jail::cgroup::Cgroup::create(&jail.cgroups, &jail.cgroup_name(&def.name), &want)
        .map_err(|e| {
        undo(uid);
        ApiError::internal("cannot set up the VM's cgroup", e)
    })?;
    let spec = jail::SpawnSpec {
        program: resolve(vmm),
        args,
        env: std::env::vars_os()
            .filter(|(k, _)| k == "PATH" || k == "RUST_BACKTRACE" || k == "VT_LOG")
            .collect(),
        fds: p.fds,
        output: log.into(),
        namespaces: true,
    };
    let child = jail::spawn(spec).map_err(|e| {
        cgroup.remove();
        undo(uid);
        ApiError::internal(&format!("cannot run {}", vmm.display()), e)
    })?;
    if let Err(e) = cgroup.add(child.pid) {
        let _ = child.kill();
        let _ = child.wait();
        cgroup.remove();
        undo(uid);
        return Err(ApiError::internal("cannot put the VMM in its cgroup", e));
    }
    let confinement = api::manager::Confinement {
        uid,
        cgroup_limits: cgroup.limits().to_vec(),
        cgroup_missing: missing.iter().map(|m| m.to_string()).collect(),
    };
    Ok(Started {
        child,
        uid,
        cgroup,
        confinement,
    })
}

/// `vmm` as an absolute path (searched in `PATH` when it has no `/`:
/// the cell's exec does no search).
pub fn resolve(vmm: &Path) -> PathBuf {
    if vmm.components().count() == 1 {
        let path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(p) = std::env::split_paths(&path)
            .map(|d| d.join(vmm))
            .find(|p| p.is_file())
        {
            return p;
        }
    }
    std::path::absolute(vmm).unwrap_or_else(|_| vmm.to_path_buf())
}

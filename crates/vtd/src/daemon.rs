//! The daemon's state: every defined VM, loaded from the state directory
//! at start (re-attaching to VMMs that kept running), created and removed
//! through the API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use api::manager::{VmDefinition, VmState};
use vt_http::Peer;

use crate::audit::Audit;
use crate::error::ApiError;
use crate::events::Events;
use crate::process;
use crate::scan;
use crate::store::{self, VmDir, MAX_SOCKET_PATH};
use crate::vm::{lock, Vm};

/// Kernel and initrd for definitions that name none, and the firmware
/// for those that boot their disks.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// `--bios` (`None`: [`crate::boot::DEFAULT_BIOS`]).
    pub bios: Option<PathBuf>,
}

impl Defaults {
    /// Whether `p` is the admin's default kernel or initrd (opened as
    /// vtd, whoever defined the VM).
    pub fn is_default(&self, p: &std::path::Path) -> bool {
        [&self.kernel, &self.initrd]
            .iter()
            .any(|d| d.as_deref() == Some(p))
    }

    /// The BIOS firmware file.
    pub fn bios(&self) -> &Path {
        self.bios
            .as_deref()
            .unwrap_or(Path::new(crate::boot::DEFAULT_BIOS))
    }
}

/// Where VMs' files may be and how networks run (vtd's flags).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--storage-dir`: where kernels and images belong (the
    /// `vm_host_paths` switch allows others).
    pub storage_dirs: Vec<PathBuf>,
    /// `--dnsmasq`: the program for networks with DHCP.
    pub dnsmasq: String,
}

/// Where the audit trail's key is and how big the trail may grow.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// The sealing key (default `STATE/audit.key`).
    pub key: Option<PathBuf>,
    pub limits: crate::audit::Limits,
    /// Repeated accesses to a watched file within this interval are one
    /// record.
    pub coalesce: std::time::Duration,
}

pub struct Daemon {
    /// Held (flock) for the daemon's life: one vtd per state directory.
    _lock: std::fs::File,
    pub state_dir: PathBuf,
    pub vmm: PathBuf,
    pub defaults: Defaults,
    pub events: Arc<Events>,
    pub audit: Arc<Audit>,
    /// fanotify watches on images and admin-named files.
    pub watches: crate::watches::Watches,
    /// How VMMs are confined (`None`: `vtd --jail off`).
    pub jail: Option<Arc<crate::cell::Jail>>,
    pub(crate) vms: Mutex<BTreeMap<String, Arc<Vm>>>,
    /// Policy switches.
    pub policy: crate::policy::Policy,
    /// Virtual networks.
    pub nets: network::manager::Manager,
    pub options: Options,
    /// VMs whose NICs are in the nftables ruleset (starting or running).
    pub wired: Mutex<std::collections::BTreeSet<String>>,
    /// Graceful reboots waiting for their guest to power off.
    pub reboots: crate::reboot::Intents,
    /// This daemon, for the VMs' exit hooks.
    pub(crate) me: std::sync::Weak<Daemon>,
}

/// How long a starting vtd waits for `vtd.lock`.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Takes `STATE/vtd.lock` (close-on-exec, so VMMs do not inherit it).
fn lock_state(state_dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_dir.join("vtd.lock"))?;
    // A VMM spawned by a vtd just killed holds a copy of that vtd's lock
    // until it execs or (gated, its vtd gone) exits: a moment's wait.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a descriptor we own; no memory is touched.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        if std::time::Instant::now() > deadline {
            return Err(std::io::Error::other(
                "another vtd is using this state directory",
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Daemon {
    /// Opens (creating) the state directory and loads every VM in it.
    pub fn open(
        state_dir: &Path,
        vmm: PathBuf,
        defaults: Defaults,
        jail: Option<Arc<crate::cell::Jail>>,
        audit: &AuditSettings,
        options: Options,
    ) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(state_dir.join("vms"))?;
        // Consoles carry logins and boot secrets: only root reads the state.
        use std::os::unix::fs::PermissionsExt;
        for d in [state_dir.to_path_buf(), state_dir.join("vms")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        }
        let state_lock = lock_state(state_dir)?;
        // What a real VMM is: the scans below believe no other process.
        let uid_base = jail.as_ref().map(|j| j.uids.base());
        match scan::Expected::new(&crate::cell::resolve(&vmm), uid_base) {
            Ok(e) => scan::expect(e),
            Err(e) => tracing::warn!(
                "VMM binary {}: {e}: running VMMs cannot be recognised",
                vmm.display()
            ),
        }
        let key = audit
            .key
            .clone()
            .unwrap_or_else(|| state_dir.join("audit.key"));
        let settings = audit;
        let audit = Arc::new(Audit::open(state_dir, &key, settings.limits)?);
        // Never watched: files vtd's watcher thread itself opens (it would
        // wait for its own answer) or writes.
        let (_, key) = audit.paths();
        let canon = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
        let forbidden = vec![
            canon(state_dir.to_path_buf()),
            canon(key),
            PathBuf::from("/proc"),
            PathBuf::from("/sys"),
        ];
        let watches = crate::watches::Watches::new(state_dir, forbidden, settings.coalesce);
        let policy = crate::policy::Policy::open(&state_dir.join("policy.json"))?;
        let nets = network::manager::Manager::open(&state_dir.join("networks"), &options.dnsmasq)?;
        let d = Arc::new_cyclic(|me| Daemon {
            _lock: state_lock,
            state_dir: state_dir.to_path_buf(),
            vmm,
            defaults,
            events: Arc::new(Events::audited(audit.clone())),
            audit,
            watches,
            jail,
            vms: Mutex::new(BTreeMap::new()),
            policy,
            nets,
            options,
            wired: Mutex::new(Default::default()),
            reboots: Default::default(),
            me: me.clone(),
        });
        // Creates and undefines a killed vtd left halfway: finished.
        for p in store::clean_temporaries(&d.vms_dir())? {
            tracing::info!("removed {} (left by an interrupted vtd)", p.display());
        }
        // Every VMM of this state directory, whatever was recorded.
        let found = scan::vmms_under(&d.vms_dir());
        for entry in std::fs::read_dir(d.vms_dir())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.file_type()?.is_dir() {
                continue;
            }
            let vm = d.load(&name, &found);
            lock(&d.vms).insert(name, vm);
        }
        // A VMM serving a socket of no VM here belongs to nobody: the
        // invariant says every VMM belongs to exactly one VM vtd knows.
        let vms = lock(&d.vms);
        for f in &found {
            let known = vms.values().any(|vm| vm.dir.socket() == f.socket);
            if !known {
                tracing::warn!(
                    "killing vt-vmm pid {}: it serves {}, which is no VM of this vtd",
                    f.pid,
                    f.socket.display()
                );
                process::kill(f.pid);
            }
        }
        drop(vms);
        d.restore_networks();
        crate::watches::Watches::start(&d);
        Ok(d)
    }

    /// Reads VM `name` from its directory and takes its VMM (among
    /// `found`) back under watch; a definition that does not parse gives a
    /// VM in state `unknown` saying why.
    pub(crate) fn load(&self, name: &str, found: &[scan::Found]) -> Arc<Vm> {
        let dir = VmDir(self.vms_dir().join(name));
        let broken = |why: String| {
            tracing::warn!("VM {name}: state unknown: {why}");
            Vm::broken(name, VmDir(dir.0.clone()), self.events.clone(), why)
        };
        match store::read_json::<VmDefinition>(&dir.definition()) {
            Ok(Some(def)) if def.name == name => {
                let vm = Vm::new(
                    def,
                    dir.clone(),
                    self.events.clone(),
                    self.jail.clone(),
                    self.exit_hook(),
                );
                vm.reattach(found);
                vm
            }
            Ok(Some(def)) => broken(format!(
                "{}: names VM '{}', not '{name}'",
                dir.definition().display(),
                def.name
            )),
            Ok(None) => broken(format!("{} is missing", dir.definition().display())),
            Err(e) => broken(e.to_string()),
        }
    }

    /// `vt repair NAME`: reads a VM in state `unknown` again from its
    /// directory (after its definition was fixed or restored by hand).
    /// 409 when it is not `unknown`, or still cannot be read.
    pub fn repair(&self, name: &str) -> Result<Arc<Vm>, ApiError> {
        let old = self.get(name)?;
        let _op = old.op();
        if old.state() != VmState::Unknown {
            return Err(ApiError::conflict(format!(
                "VM '{name}' is {}: there is nothing to repair",
                old.state().as_str()
            )));
        }
        let vm = self.load(name, &old.live_vmms());
        if let Some(why) = vm
            .status(false)
            .reason
            .filter(|_| vm.state() == VmState::Unknown)
        {
            return Err(ApiError::conflict(format!(
                "VM '{name}' is still unknown: {why}"
            )));
        }
        lock(&self.vms).insert(name.to_string(), vm.clone());
        let state = vm.state();
        self.events.publish(name, "repaired", state, None);
        Ok(vm)
    }

    /// What a VM calls when its VMM ends: its NICs leave the ruleset.
    fn exit_hook(&self) -> Option<crate::vm::ExitHook> {
        let me = self.me.clone();
        Some(Arc::new(move |name: &str| {
            if let Some(d) = me.upgrade() {
                d.unwire(name);
            }
        }))
    }

    fn vms_dir(&self) -> PathBuf {
        self.state_dir.join("vms")
    }

    /// The autostart VMs to start now: all of them on the first `vtd` start
    /// since host boot (recorded in `autostart.done`), none after that.
    pub fn autostart_due(&self) -> Vec<Arc<Vm>> {
        let marker = self.state_dir.join("autostart.done");
        let boot = process::boot_id();
        if std::fs::read_to_string(&marker).is_ok_and(|b| b.trim() == boot) {
            return Vec::new();
        }
        if let Err(e) = std::fs::write(&marker, boot) {
            tracing::warn!("cannot write {}: {e}", marker.display());
        }
        self.list()
            .into_iter()
            .filter(|vm| vm.def().autostart && !vm.state().is_active())
            .collect()
    }

    /// Starts `vms` (from [`Daemon::autostart_due`]).
    pub fn autostart(&self, vms: Vec<Arc<Vm>>) {
        for vm in vms {
            let _op = vm.op();
            if self.still_current(&vm, None).is_err() || vm.state().is_active() {
                continue;
            }
            // A change pending since the last run applies, checked again.
            let started = self
                .apply_pending(&vm)
                .and_then(|()| self.start_vm(&vm, None));
            if let Err(e) = started {
                tracing::error!("autostart of {} failed: {}", vm.name(), e.message);
            }
        }
    }

    pub fn list(&self) -> Vec<Arc<Vm>> {
        lock(&self.vms).values().cloned().collect()
    }

    /// Called with `vm.op()` held: 409 when `vm` is no longer the VM of
    /// its name (undefined, defined again or repaired while the caller
    /// waited for `op`), 403 when `peer` (none: vtd itself) may no longer
    /// change it (its owner changed meanwhile). Every lifecycle operation
    /// and edit checks this before it acts.
    pub fn still_current(&self, vm: &Arc<Vm>, peer: Option<&Peer>) -> Result<(), ApiError> {
        let now = lock(&self.vms).get(vm.name()).cloned();
        if !now.is_some_and(|now| Arc::ptr_eq(&now, vm)) {
            return Err(ApiError::conflict(format!(
                "VM '{}' was undefined or replaced meanwhile: ask again",
                vm.name()
            )));
        }
        match peer {
            Some(peer) => may_change(vm, peer),
            None => Ok(()),
        }
    }

    pub fn get(&self, name: &str) -> Result<Arc<Vm>, ApiError> {
        lock(&self.vms)
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::new(404, format!("no VM named '{name}'")))
    }

    /// Checks a new definition against the host.
    pub(crate) fn check(&self, def: &VmDefinition) -> Result<(), ApiError> {
        def.validate()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if def.boot.is_firmware() {
            crate::boot::firmware(def.boot, self.defaults.bios())?;
        } else if def.kernel.is_none() {
            return Err(ApiError::bad_request(
                "no kernel: give one (vt create --boot kernel=PATH), boot the disk's bootloader through firmware (vt create --import) or start vtd with --default-kernel",
            ));
        }
        let files = def
            .kernel
            .iter()
            .map(|k| ("kernel", k, false))
            .chain(def.initrd.iter().map(|i| ("initrd", i, false)))
            .chain(def.disks.iter().map(|d| ("disk", &d.path, !d.readonly)));
        for (what, p, write) in files {
            if let Some(owner) = def.owner.filter(|o| o.uid != 0) {
                // Checked as the caller, whose own access is all it gets.
                let default_boot_file = what != "disk" && self.defaults.is_default(p);
                if !default_boot_file {
                    let kind = match what {
                        "disk" => crate::access::Kind::FileOrBlock,
                        _ => crate::access::Kind::Regular,
                    };
                    crate::access::open_as(Some(owner), what, p, write, 0, kind)?;
                }
                continue;
            }
            if !p.is_file() {
                return Err(ApiError::bad_request(format!(
                    "{what} {} does not exist or is not a file",
                    p.display()
                )));
            }
        }
        let sock = VmDir(self.vms_dir().join(&def.name)).socket();
        if sock.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ApiError::bad_request(format!(
                "the VM's control socket path would be too long ({} bytes): use a shorter name or state directory",
                sock.as_os_str().len()
            )));
        }
        Ok(())
    }

    /// Defines a VM. Of two creates of one name, exactly one wins.
    pub fn create(&self, mut def: VmDefinition) -> Result<Arc<Vm>, ApiError> {
        if def.boot.is_firmware() {
            // The serde default ("console=ttyS0") stands for "not given":
            // a firmware boot has no command line of ours.
            if def.cmdline == "console=ttyS0" {
                def.cmdline.clear();
            }
        } else if def.kernel.is_none() {
            def.kernel = self.defaults.kernel.clone();
            if def.initrd.is_none() {
                def.initrd = self.defaults.initrd.clone();
            }
        }
        self.check(&def)?;
        crate::admission::check(
            &def,
            &self.policy,
            &self.options.storage_dirs,
            &self.defaults,
        )?;
        let mut vms = lock(&self.vms);
        let all: Vec<Arc<Vm>> = vms.values().cloned().collect();
        self.check_nics(&def, &all)?;
        self.assign_nics(&mut def, &vms)?;
        let conflict = || ApiError::conflict(format!("a VM named '{}' exists", def.name));
        if vms.contains_key(&def.name) {
            return Err(conflict());
        }
        // Whole or not at all: built under a temporary name, renamed.
        let dir = match store::create_vm_dir(&self.vms_dir(), &def.name, &def) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(conflict()),
            Err(e) => return Err(ApiError::internal("cannot create the VM directory", e)),
        };
        let vm = Vm::new(
            def,
            dir,
            self.events.clone(),
            self.jail.clone(),
            self.exit_hook(),
        );
        vms.insert(vm.name().to_string(), vm.clone());
        drop(vms);
        self.update_hosts(&vm.def());
        self.watches.add_images(&self.audit, &vm.def());
        self.events
            .publish(vm.name(), "defined", VmState::Stopped, None);
        Ok(vm)
    }

    /// Removes a stopped VM's definition and files (disk images stay);
    /// `peer`: the caller, checked again once the VM is held.
    pub fn undefine(&self, name: &str, peer: Option<&Peer>) -> Result<(), ApiError> {
        let vm = self.get(name)?;
        let _op = vm.op();
        self.still_current(&vm, peer)?;
        if vm.state().is_active() {
            return Err(ApiError::conflict(format!(
                "VM '{name}' is running: stop it first"
            )));
        }
        // Whatever was recorded: a live VMM still uses the VM's files.
        if let Some(f) = vm.live_vmms().first() {
            return Err(ApiError::conflict(format!(
                "a VMM (pid {}) still runs for VM '{name}': stop it first (vt stop {name})",
                f.pid
            )));
        }
        let mut vms = lock(&self.vms);
        store::remove_vm_dir(&self.vms_dir(), name)
            .map_err(|e| ApiError::internal("cannot remove the VM directory", e))?;
        vms.remove(name);
        drop(vms);
        self.update_hosts(&vm.def());
        self.watches.remove_images(name);
        self.events
            .publish(name, "undefined", VmState::Stopped, None);
        Ok(())
    }
}

/// Root, or the uid that defined `vm`; a VM with no recorded owner
/// (defined by root, or before owners were recorded) is root's. 403 else.
pub fn may_change(vm: &Vm, peer: &Peer) -> Result<(), ApiError> {
    if peer.uid == 0 {
        return Ok(());
    }
    let owner = vm.def().owner.map(|o| o.uid);
    if owner == Some(peer.uid) {
        return Ok(());
    }
    let whose = owner.map_or("root".to_string(), |u| format!("uid {u}"));
    Err(ApiError::new(
        403,
        format!(
            "VM '{}' belongs to {whose}: only its owner or root may do that",
            vm.name()
        ),
    ))
}

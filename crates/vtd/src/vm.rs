//! One managed VM: its definition, its VMM process and the lifecycle
//! operations on it.
//!
//! Locks: `op` serialises lifecycle operations on this VM (start, stop,
//! pause, ...); `run` guards the runtime state and is only held briefly.
//! The supervisor thread (a `wait()` on our child, or a pidfd poll on a
//! VMM found again after a `vtd` restart) calls [`Vm::exited`], which
//! records the end and wakes whoever waits on `ended`.

use std::process::ExitStatus;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use api::control::{self as proto, RunState, VmmCounters, VmmInfo};
use api::manager::{Confinement, VmDefinition, VmState, VmStatus};
use api::usage::MemoryUsage;

use crate::error::ApiError;
use crate::events::Events;
use crate::exit::classify;
use crate::net;
use crate::process;
use crate::scan;
use crate::store::{self, now_ms, LastExit, Runtime, VmDir};
use crate::vmm;

/// How long `start` waits for the VMM to build the VM.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a re-attach waits for a recorded VMM that has not exec'd yet.
const EXEC_WAIT: Duration = Duration::from_secs(2);
/// How long `stop` waits for the VMM to take the request.
const STOP_ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `status` waits for a VMM's counters.
const COUNTERS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `stop` waits for the VMM to leave after asking, then after
/// SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Run {
    state: Option<VmState>,
    pid: Option<u32>,
    reason: Option<String>,
    /// Set while `vtd` stops the VM: why.
    stopping: Option<String>,
    /// The running VMM's own uid (jailed).
    uid: Option<u32>,
    /// Its cell, for `vt info`.
    confinement: Option<Confinement>,
    /// Set while `start` waits for the VMM to build the VM: an end now
    /// is a failed start, not a crash.
    starting: bool,
}

pub struct Vm {
    /// The VM's name (a VM is never renamed).
    name: String,
    /// Its definition: changed in place (`PATCH`, a pending change
    /// applied) only under `op`, so an operation holding `op` sees one
    /// definition throughout and every request acts on the same object.
    def: RwLock<VmDefinition>,
    pub dir: VmDir,
    events: Arc<Events>,
    run: Mutex<Run>,
    ended: Condvar,
    op: Mutex<()>,
    /// How VMMs are confined (`None`: `vtd --jail off`).
    jail: Option<Arc<crate::cell::Jail>>,
    /// Why vtd cannot know this VM (a corrupt or missing definition):
    /// the state is `unknown`, `start` is refused.
    broken: Option<String>,
    /// Called with the VM's name when its VMM has ended (its network
    /// rules go).
    on_exit: Option<ExitHook>,
}

/// See [`Vm::new`].
pub type ExitHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Blocks until the VMM ends; its status when it was our child.
type Waiter = Box<dyn FnOnce() -> Option<ExitStatus> + Send>;

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Vm {
    pub fn new(
        def: VmDefinition,
        dir: VmDir,
        events: Arc<Events>,
        jail: Option<Arc<crate::cell::Jail>>,
        on_exit: Option<ExitHook>,
    ) -> Arc<Self> {
        Arc::new(Vm {
            name: def.name.clone(),
            def: RwLock::new(def),
            dir,
            events,
            jail,
            on_exit,
            run: Mutex::new(Run::default()),
            ended: Condvar::new(),
            op: Mutex::new(()),
            broken: None,
        })
    }

    /// A VM directory whose definition cannot be read: kept visible as
    /// `unknown` with `why` (file, position, parse error) and the way out.
    pub fn broken(name: &str, dir: VmDir, events: Arc<Events>, why: String) -> Arc<Self> {
        let def = serde_json::from_value(serde_json::json!({ "name": name }))
            .expect("a name alone is a valid definition");
        let broken = format!(
            "{why}; fix or restore the file, then `vt repair {name}`, or undefine the VM (`vt undefine {name}`; its disks stay) once no VMM runs for it"
        );
        Arc::new(Vm {
            name: name.to_string(),
            def: RwLock::new(def),
            dir,
            events,
            jail: None,
            on_exit: None,
            run: Mutex::new(Run::default()),
            ended: Condvar::new(),
            op: Mutex::new(()),
            broken: Some(broken),
        })
    }

    /// The live VMMs serving this VM's socket, whoever started them.
    pub fn live_vmms(&self) -> Vec<scan::Found> {
        scan::vmms_for(&self.dir.socket())
    }

    /// Refuses when the VM's state is unknown.
    fn known(&self) -> Result<(), ApiError> {
        match &self.broken {
            Some(why) => Err(ApiError::conflict(format!(
                "the state of VM '{}' is unknown: {why}",
                self.name()
            ))),
            None => Ok(()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The VM's current definition (a copy: it may change once `op` is
    /// released).
    pub fn def(&self) -> VmDefinition {
        self.def.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes `def` the VM's definition; the caller holds [`Vm::op`] and
    /// has written it to `definition.json`.
    pub fn set_def(&self, def: VmDefinition) {
        *self.def.write().unwrap_or_else(|p| p.into_inner()) = def;
    }

    pub fn state(&self) -> VmState {
        if self.broken.is_some() {
            return VmState::Unknown;
        }
        lock(&self.run).state.unwrap_or(VmState::Stopped)
    }

    /// Whether `pid` is this VM's running VMM (in vtd's pid namespace);
    /// also while it is being started (its runtime.json is written before
    /// it runs).
    pub fn is_vmm_pid(&self, pid: u32) -> bool {
        let known = lock(&self.run).pid;
        known == Some(pid)
            || (known.is_none()
                && store::read_json::<Runtime>(&self.dir.runtime())
                    .ok()
                    .flatten()
                    .is_some_and(|rt| rt.pid == pid))
    }

    /// Holds off other lifecycle operations on this VM.
    pub fn op(&self) -> MutexGuard<'_, ()> {
        lock(&self.op)
    }

    /// The VM's state and its VMM's pid (while one runs); a broken VM
    /// is `unknown`.
    pub fn run_state(&self) -> (VmState, Option<u32>) {
        if self.broken.is_some() {
            return (VmState::Unknown, None);
        }
        let r = lock(&self.run);
        (r.state.unwrap_or(VmState::Stopped), r.pid)
    }

    /// `GET path` on the running VMM's control socket; None when it does
    /// not answer in time.
    pub fn ask_vmm(&self, path: &str) -> Option<vt_http::Response> {
        vt_http::call_with_timeout(
            &self.dir.socket(),
            "GET",
            path,
            None,
            Some(COUNTERS_TIMEOUT),
        )
        .ok()
    }

    /// The VM's status; with `counters`, asks a running VMM for its counters.
    pub fn status(&self, counters: bool) -> VmStatus {
        let def = self.def();
        if let Some(why) = &self.broken {
            return VmStatus {
                name: self.name.clone(),
                state: VmState::Unknown,
                pid: self.live_vmms().first().map(|f| f.pid),
                reason: Some(why.clone()),
                definition: def.clone(),
                counters: None,
                confinement: None,
                barriers: None,
                memory: None,
                balloon: None,
                nics: Vec::new(),
                pending_changes: false,
            };
        }
        let (state, pid, reason, confinement) = {
            let r = lock(&self.run);
            let state = r.state.unwrap_or(VmState::Stopped);
            let conf = r.confinement.clone().filter(|_| state.is_active());
            (state, r.pid, r.reason.clone(), conf)
        };
        let ask = |path: &str| self.ask_vmm(path);
        let live = counters && state.is_active();
        let counters = live
            .then(|| ask(proto::COUNTERS))
            .flatten()
            .and_then(|r| serde_json::from_slice::<VmmCounters>(&r.body).ok());
        let barriers = live
            .then(|| ask(proto::INFO))
            .flatten()
            .and_then(|r| serde_json::from_slice::<VmmInfo>(&r.body).ok())
            .map(|i| i.confinement);
        let balloon = (live && def.balloon.is_some())
            .then(|| ask(proto::BALLOON))
            .flatten()
            .filter(|r| r.status == 200)
            .and_then(|r| serde_json::from_slice(&r.body).ok());
        let memory = live
            .then(|| pid.and_then(|p| MemoryUsage::read(p, def.memory_mib).ok()))
            .flatten();
        VmStatus {
            memory,
            balloon,
            name: self.name.clone(),
            state,
            pid,
            reason,
            definition: def,
            counters,
            confinement,
            barriers,
            nics: Vec::new(),
            pending_changes: false,
        }
    }

    /// Whether `pid` still is this VM's VMM: by its uid when jailed (a
    /// VMM cannot change that; its command line it could rewrite), else
    /// by its flags.
    fn is_ours(&self, pid: u32) -> bool {
        let uid = lock(&self.run).uid;
        self.is_vmm(pid, uid)
    }

    /// Whether `pid` is this VM's VMM, jailed as `uid` (or unjailed). A
    /// jailed VMM is root until it has entered its cell and dropped to its
    /// uid: then its flags must name this VM.
    fn is_vmm(&self, pid: u32, uid: Option<u32>) -> bool {
        match (uid, process::uid_of(pid)) {
            (Some(want), Some(have)) if have == want => true,
            (Some(_), Some(0)) | (None, _) => process::is_our_vmm(pid, &self.dir.socket()),
            _ => false,
        }
    }

    pub fn active_pid(&self) -> Result<u32, ApiError> {
        let r = lock(&self.run);
        match (r.state, r.pid) {
            (Some(s), Some(pid)) if s.is_active() => Ok(pid),
            _ => Err(ApiError::conflict(format!(
                "VM '{}' is not running",
                self.name()
            ))),
        }
    }

    fn set(&self, state: VmState, event: &str) {
        lock(&self.run).state = Some(state);
        self.events.publish(self.name(), event, state, None);
    }

    /// Starts the VMM and waits until its control socket answers;
    /// `bridges` has the bridge of each NIC, in order; `guard` sees every
    /// file opened for a jailed VMM.
    pub fn start(
        self: &Arc<Self>,
        vmm: &std::path::Path,
        defaults: &crate::daemon::Defaults,
        bridges: &[String],
        guard: crate::cell::Guard,
    ) -> Result<(), ApiError> {
        self.known()?;
        let def = self.def();
        if self.state().is_active() {
            return Err(ApiError::conflict(format!(
                "VM '{}' is already running",
                self.name()
            )));
        }
        // One VM, one VMM: a VMM this vtd did not start (or lost) may
        // still serve the VM's socket and hold its disks.
        if let Some(other) = self.live_vmms().first() {
            return Err(ApiError::conflict(format!(
                "a VMM (pid {}) still runs for VM '{}': stop it first",
                other.pid,
                self.name()
            )));
        }
        let boot = crate::boot::resolve(&def, defaults.bios())?;
        // Root's own definitions get a friendly early word; a caller's
        // files are checked only by opening them as the caller (below), so
        // nothing here tells whether a path it cannot see exists.
        let root_owned = def.owner.is_none_or(|o| o.uid == 0);
        for (what, p) in def
            .kernel
            .iter()
            .filter(|_| def.boot.is_kernel())
            .map(|k| ("kernel", k))
            .chain(def.initrd.iter().map(|i| ("initrd", i)))
            .filter(|_| root_owned)
        {
            if !p.is_file() {
                return Err(ApiError::bad_request(format!(
                    "{what} {} is not a file",
                    p.display()
                )));
            }
        }
        if bridges.len() != def.networks.len() {
            return Err(ApiError::internal("start", "a NIC without a bridge"));
        }
        for b in bridges {
            if !net::bridge_exists(b) {
                return Err(ApiError::bad_request(format!(
                    "bridge {b} does not exist (create it: ip link add {b} type bridge)"
                )));
            }
        }
        // `unconfined` (allowed by the vm_unconfined switch, checked by
        // the daemon) runs this VM as `vtd --jail off` would.
        let jail = if def.unconfined {
            None
        } else {
            self.jail.clone()
        };
        let io = |what| move |e| ApiError::internal(what, e);
        store::remove(&self.dir.socket()).map_err(io("cannot remove the old socket"))?;
        std::fs::write(self.dir.console(), b"").map_err(io("cannot reset console.log"))?;
        let (pid, confinement, wait): (u32, Option<Confinement>, Waiter) = match &jail {
            Some(jail) => {
                let started = crate::cell::start(
                    jail,
                    vmm,
                    &boot,
                    &def,
                    defaults,
                    &self.dir,
                    crate::cell::Links { bridges, guard },
                )?;
                let mut child = started.child;
                let pid = child.pid;
                // Recorded before the VMM runs: a vtd killed from here
                // on finds it again.
                let rt = Runtime {
                    pid,
                    started_ms: now_ms(),
                    uid: Some(started.uid),
                    confinement: Some(started.confinement.clone()),
                };
                let fail = |child: &jail::Child, e: ApiError| {
                    let _ = child.kill();
                    let _ = child.wait();
                    started.cgroup.remove();
                    jail.uids.release(started.uid);
                    let _ = store::remove(&self.dir.socket());
                    e
                };
                if let Err(e) = store::write_json(&self.dir.runtime(), &rt) {
                    return Err(fail(
                        &child,
                        ApiError::internal("cannot write runtime.json", e),
                    ));
                }
                if let Err(e) = child.release() {
                    let _ = store::remove(&self.dir.runtime());
                    let what = format!("cannot run {}", vmm.display());
                    return Err(fail(&child, ApiError::internal(&what, e)));
                }
                (
                    pid,
                    Some(started.confinement),
                    Box::new(move || child.wait().ok()),
                )
            }
            None => {
                // Unconfined, the VMM opens the paths itself as vtd's
                // user: only root's VMs may run that way.
                if let Some(o) = def.owner.filter(|o| o.uid != 0) {
                    return Err(ApiError::new(
                        403,
                        format!(
                            "VM '{}' belongs to uid {}: with vtd --jail off only root's VMs start (their files would be opened as root)",
                            self.name(),
                            o.uid
                        ),
                    ));
                }
                let mut child = process::spawn(vmm, &boot, &def, &self.dir)
                    .map_err(|e| ApiError::internal(&format!("cannot run {}", vmm.display()), e))?;
                let pid = child.id();
                let rt = Runtime {
                    pid,
                    started_ms: now_ms(),
                    uid: None,
                    confinement: None,
                };
                if let Err(e) = store::write_json(&self.dir.runtime(), &rt) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ApiError::internal("cannot write runtime.json", e));
                }
                (pid, None, Box::new(move || child.wait().ok()))
            }
        };
        {
            let mut r = lock(&self.run);
            *r = Run {
                state: Some(VmState::Running),
                pid: Some(pid),
                reason: None,
                stopping: None,
                uid: confinement.as_ref().map(|c| c.uid),
                confinement,
                starting: true,
            };
        }
        let me = self.clone();
        let watcher = std::thread::Builder::new()
            .name(format!("wait-{pid}"))
            .spawn(move || {
                let status = wait();
                me.exited(pid, status);
            });
        if let Err(e) = watcher {
            process::kill(pid);
            return Err(ApiError::internal("cannot start a supervisor thread", e));
        }
        // Running means built: the VMM says `starting` until the VM is
        // built and its vCPUs are about to run.
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            if lock(&self.run).pid != Some(pid) {
                let reason = lock(&self.run).reason.clone().unwrap_or_default();
                return Err(ApiError::bad_request(reason));
            }
            let built = vt_http::call_with_timeout(
                &self.dir.socket(),
                "GET",
                proto::INFO,
                None,
                Some(COUNTERS_TIMEOUT),
            )
            .ok()
            .and_then(|r| serde_json::from_slice::<VmmInfo>(&r.body).ok())
            .is_some_and(|i| i.state != RunState::Starting);
            if built {
                let mut r = lock(&self.run);
                if r.pid == Some(pid) {
                    r.starting = false;
                    break;
                }
                continue;
            }
            if std::time::Instant::now() > deadline {
                lock(&self.run).stopping = Some(format!(
                    "failed to start: the VMM did not build the VM within {}s",
                    START_TIMEOUT.as_secs()
                ));
                process::kill(pid);
                return Err(ApiError::new(
                    504,
                    "the VMM did not build the VM in time (killed)",
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let unjailed_nets = if jail.is_none() { bridges } else { &[] };
        for (i, b) in unjailed_nets.iter().enumerate() {
            let tap = net::tap_name(self.name(), i);
            if let Err(e) = net::attach(b, &tap, START_TIMEOUT) {
                let _ = self.stop("stopped: its network could not be attached");
                return Err(ApiError::internal(
                    &format!("cannot add {tap} to bridge {b}"),
                    e,
                ));
            }
        }
        let uid = lock(&self.run).uid;
        self.events.publish_vmm(
            self.name(),
            "started",
            VmState::Running,
            None,
            Some((pid, uid)),
        );
        Ok(())
    }

    /// Takes a VMM found running after a `vtd` restart back under watch:
    /// the one `runtime.json` names, or else one found serving the VM's
    /// socket (`found`: from [`scan::vmms_under`]; `runtime.json` missing
    /// because vtd was killed before writing it, or corrupt). Extra VMMs
    /// for the same VM are killed: two on one disk corrupt it.
    pub fn reattach(self: &Arc<Self>, found: &[scan::Found]) {
        let (recorded, corrupt) = match store::read_json::<Runtime>(&self.dir.runtime()) {
            Ok(rt) => (rt, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let mut found = found.to_vec();
        if let Some(rt) = &recorded {
            // Recorded, released, but not yet exec'd when the last vtd
            // died: still its copy of vtd, about to become the VMM.
            // The scan may also predate its exec by a hair: look again.
            let deadline = std::time::Instant::now() + EXEC_WAIT;
            while !found.iter().any(|f| f.pid == rt.pid) {
                found = self.live_vmms();
                if found.iter().any(|f| f.pid == rt.pid)
                    || !process::is_vtd_copy(rt.pid)
                    || std::time::Instant::now() > deadline
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let mine: Vec<&scan::Found> = found
            .iter()
            .filter(|f| f.socket == self.dir.socket())
            .collect();
        let recorded = recorded.filter(|rt| mine.iter().any(|f| f.pid == rt.pid));
        let adopted = recorded.is_none();
        let rt = recorded.or_else(|| {
            let f = mine.first()?;
            Some(Runtime {
                pid: f.pid,
                started_ms: now_ms(),
                uid: f.jail_uid,
                confinement: None,
            })
        });
        for extra in mine
            .iter()
            .filter(|f| rt.as_ref().is_some_and(|r| r.pid != f.pid))
        {
            tracing::warn!(
                "VM {}: killing vt-vmm pid {}, a second VMM for it",
                self.name(),
                extra.pid
            );
            process::kill(extra.pid);
        }
        let Some(rt) = rt else {
            // No VMM runs for it.
            let last = store::read_json::<LastExit>(&self.dir.last_exit())
                .ok()
                .flatten();
            let had_pid = store::read_json::<Runtime>(&self.dir.runtime())
                .ok()
                .flatten();
            let mut r = lock(&self.run);
            if let Some(e) = corrupt {
                let _ = store::remove(&self.dir.runtime());
                r.state = Some(VmState::Stopped);
                r.reason = Some(format!("{e}; no VMM runs for the VM: stopped"));
                tracing::warn!("VM {}: {e}; no VMM runs for it", self.name());
                return;
            }
            if let Some(gone) = had_pid {
                // It recorded a VMM that has ended since.
                r.pid = Some(gone.pid);
                r.uid = gone.uid;
                drop(r);
                self.exited(gone.pid, None);
                return;
            }
            r.state = Some(last.as_ref().map_or(VmState::Stopped, |l| l.state));
            r.reason = last.map(|l| l.reason);
            return;
        };
        if let Some(e) = &corrupt {
            tracing::warn!(
                "VM {}: {e}; re-attached to vt-vmm pid {} found serving its socket",
                self.name(),
                rt.pid
            );
        }
        if adopted {
            // Recorded now, so the next vtd finds it by its runtime.json.
            let _ = store::write_json(&self.dir.runtime(), &rt);
        }
        let pid = rt.pid;
        {
            let mut r = lock(&self.run);
            r.state = Some(VmState::Running);
            r.pid = Some(pid);
            r.uid = rt.uid;
            r.confinement = rt.confinement.clone();
        }
        if let (Some(j), Some(uid)) = (&self.jail, rt.uid) {
            j.uids.mark(uid);
        }
        // Found by its socket just now; a jailed VMM is also known by its
        // uid (which it cannot change once dropped to it).
        let alive = self.is_vmm(pid, rt.uid);
        let fd = if alive {
            process::pidfd(pid).ok()
        } else {
            None
        };
        let Some(fd) = fd else {
            self.exited(pid, None);
            return;
        };
        if let Ok(info) = vmm::get::<VmmInfo>(&self.dir, proto::INFO) {
            if info.state == RunState::Paused {
                lock(&self.run).state = Some(VmState::Paused);
            }
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("watch-{pid}"))
            .spawn(move || {
                process::wait_pidfd(&fd);
                me.exited(pid, None);
            });
        if spawned.is_err() {
            lock(&self.run).reason = Some("not watched: no thread".into());
        }
        let state = self.state();
        self.events
            .publish_vmm(self.name(), "reattached", state, None, Some((pid, rt.uid)));
    }

    /// Records the end of the VMM `pid` (`status` when it was our child).
    pub fn exited(&self, pid: u32, status: Option<ExitStatus>) {
        if lock(&self.run).pid != Some(pid) {
            return;
        }
        // The VMM is gone: its network rules go before anyone waiting for
        // the end (a stop) hears of it.
        if let Some(hook) = &self.on_exit {
            hook(self.name());
        }
        let mut r = lock(&self.run);
        if r.pid != Some(pid) {
            return;
        }
        let vmm_uid = r.uid;
        let line = store::last_line(&self.dir.vmm_log()).unwrap_or_default();
        let (mut state, mut reason) = classify(r.stopping.take(), status, &line, pid);
        if std::mem::take(&mut r.starting) {
            // It never ran: not a crash of a running VM.
            state = VmState::Stopped;
            if !reason.starts_with("failed to start") {
                reason = format!("failed to start: {reason}");
            }
        }
        r.state = Some(state);
        r.pid = None;
        r.reason = Some(reason.clone());
        if let Some(j) = &self.jail {
            r.confinement = None;
            if let Some(uid) = r.uid.take() {
                j.uids.release(uid);
            }
            jail::cgroup::Cgroup::remove_stale(&j.cgroups, &j.cgroup_name(self.name()));
        }
        let _ = store::remove(&self.dir.runtime());
        let _ = store::remove(&self.dir.socket());
        let last = LastExit {
            state,
            reason: reason.clone(),
            time_ms: now_ms(),
        };
        let _ = store::write_json(&self.dir.last_exit(), &last);
        self.ended.notify_all();
        drop(r);
        let event = if state == VmState::Crashed {
            "crashed"
        } else {
            "stopped"
        };
        self.events.publish_vmm(
            self.name(),
            event,
            state,
            Some(reason),
            Some((pid, vmm_uid)),
        );
    }

    /// Waits until the VMM `pid` has ended; false on timeout.
    pub fn wait_end(&self, pid: u32, timeout: Duration) -> bool {
        let r = lock(&self.run);
        let (r, _) = self
            .ended
            .wait_timeout_while(r, timeout, |r| r.pid == Some(pid))
            .unwrap_or_else(|p| p.into_inner());
        r.pid != Some(pid)
    }

    /// Stops the VMM: asks it, then kills it after [`STOP_TIMEOUT`]. A VM
    /// whose state is unknown has its VMMs (found by socket) killed.
    pub fn stop(&self, why: &str) -> Result<(), ApiError> {
        if self.broken.is_some() {
            return self.kill_unknown();
        }
        let pid = self.active_pid()?;
        lock(&self.run).stopping = Some(why.to_string());
        // The VMM may exit before it answers: its end is what counts. One
        // that does not answer at all (hung, SIGSTOPped) is killed at once.
        let asked = vt_http::call_with_timeout(
            &self.dir.socket(),
            "PUT",
            proto::STOP,
            None,
            Some(STOP_ASK_TIMEOUT),
        );
        let patience = match asked {
            Err(vt_http::ClientError::Http(vt_http::Error::Io(e)))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Duration::ZERO
            }
            _ => STOP_TIMEOUT,
        };
        if self.wait_end(pid, patience) {
            return Ok(());
        }
        if self.is_ours(pid) {
            process::kill(pid);
        }
        if self.wait_end(pid, STOP_TIMEOUT) {
            Ok(())
        } else {
            Err(ApiError::new(500, format!("VMM pid {pid} did not end")))
        }
    }

    /// Kills every VMM serving this VM's socket (the VM's state is
    /// unknown: there is nothing to ask it through) and waits for them.
    fn kill_unknown(&self) -> Result<(), ApiError> {
        let live = self.live_vmms();
        if live.is_empty() {
            return Err(ApiError::conflict(format!(
                "VM '{}' is not running",
                self.name()
            )));
        }
        // A pidfd first: the pid cannot be reused under us, and it says
        // when the process has really ended (its command line, which the
        // scan reads, is gone a moment earlier).
        let fds: Vec<_> = live
            .iter()
            .filter_map(|f| process::pidfd(f.pid).ok())
            .collect();
        for f in &live {
            process::kill(f.pid);
        }
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        for fd in &fds {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !process::wait_pidfd_timeout(fd, left) {
                return Err(ApiError::new(500, "the VMM did not end"));
            }
        }
        Ok(())
    }

    /// Presses the ACPI power button and waits up to `timeout` for the
    /// guest to power off, then stops the VMM.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), ApiError> {
        let pid = self.active_pid()?;
        match vmm::put(&self.dir, proto::POWER_BUTTON) {
            Ok(()) if self.wait_end(pid, timeout) => Ok(()),
            Ok(()) => self.stop(&format!(
                "shut down: the guest did not power off within {}s, stopped",
                timeout.as_secs()
            )),
            Err(e) => self.stop(&format!("shut down: {}; stopped instead", e.message)),
        }
    }

    pub fn pause(&self) -> Result<(), ApiError> {
        self.active_pid()?;
        vmm::put(&self.dir, proto::PAUSE)?;
        self.set(VmState::Paused, "paused");
        Ok(())
    }

    pub fn resume(&self) -> Result<(), ApiError> {
        self.active_pid()?;
        vmm::put(&self.dir, proto::RESUME)?;
        self.set(VmState::Running, "resumed");
        Ok(())
    }

    /// A hard reset: the VMM rebuilds the VM (it runs `--on-reboot restart`).
    pub fn reboot(&self) -> Result<(), ApiError> {
        self.active_pid()?;
        vmm::put(&self.dir, proto::REBOOT)?;
        self.set(VmState::Running, "rebooted");
        Ok(())
    }

    /// Queues serial input.
    pub fn console_input(&self, bytes: Vec<u8>) -> Result<(), ApiError> {
        self.active_pid()?;
        let r = vmm::call(&self.dir, "PUT", proto::CONSOLE, Some(bytes))?;
        match r.status {
            200..=299 => Ok(()),
            s => Err(ApiError::new(s, r.text())),
        }
    }
}

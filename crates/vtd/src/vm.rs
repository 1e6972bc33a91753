//! One managed VM: its definition, its VMM process and the lifecycle
//! operations on it.
//!
//! Locks: `op` serialises lifecycle operations on this VM (start, stop,
//! pause, ...); `run` guards the runtime state and is only held briefly.
//! The supervisor thread (a `wait()` on our child, or a pidfd poll on a
//! VMM found again after a `vtd` restart) calls [`Vm::exited`], which
//! records the end and wakes whoever waits on `ended`.

use std::process::ExitStatus;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use api::control::{self as proto, RunState, VmmCounters, VmmInfo};
use api::manager::{Confinement, VmDefinition, VmState, VmStatus};
use api::usage::MemoryUsage;

use crate::error::ApiError;
use crate::events::Events;
use crate::exit::classify;
use crate::net;
use crate::process;
use crate::store::{self, now_ms, LastExit, Runtime, VmDir};
use crate::vmm;

/// How long `start` waits for the VMM's control socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);
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
}

pub struct Vm {
    pub def: VmDefinition,
    pub dir: VmDir,
    events: Arc<Events>,
    run: Mutex<Run>,
    ended: Condvar,
    op: Mutex<()>,
    /// How VMMs are confined (`None`: `vtd --jail off`).
    jail: Option<Arc<crate::cell::Jail>>,
}

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
    ) -> Arc<Self> {
        Arc::new(Vm {
            def,
            dir,
            events,
            jail,
            run: Mutex::new(Run::default()),
            ended: Condvar::new(),
            op: Mutex::new(()),
        })
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    pub fn state(&self) -> VmState {
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

    /// The VM's status; with `counters`, asks a running VMM for its counters.
    pub fn status(&self, counters: bool) -> VmStatus {
        let (state, pid, reason, confinement) = {
            let r = lock(&self.run);
            let state = r.state.unwrap_or(VmState::Stopped);
            let conf = r.confinement.clone().filter(|_| state.is_active());
            (state, r.pid, r.reason.clone(), conf)
        };
        let ask = |path: &str| {
            vt_http::call_with_timeout(
                &self.dir.socket(),
                "GET",
                path,
                None,
                Some(COUNTERS_TIMEOUT),
            )
            .ok()
        };
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
        let balloon = (live && self.def.balloon.is_some())
            .then(|| ask(proto::BALLOON))
            .flatten()
            .filter(|r| r.status == 200)
            .and_then(|r| serde_json::from_slice(&r.body).ok());
        let memory = live
            .then(|| pid.and_then(|p| MemoryUsage::read(p, self.def.memory_mib).ok()))
            .flatten();
        VmStatus {
            memory,
            balloon,
            name: self.def.name.clone(),
            state,
            pid,
            reason,
            definition: self.def.clone(),
            counters,
            confinement,
            barriers,
        }
    }

    /// Whether `pid` still is this VM's VMM: by its uid when jailed (a
    /// VMM cannot change that; its command line it could rewrite), else
    /// by its flags.
    fn is_ours(&self, pid: u32) -> bool {
        match lock(&self.run).uid {
            Some(uid) => process::uid_of(pid) == Some(uid),
            None => process::is_our_vmm(pid, &self.dir.socket()),
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

    /// Starts the VMM and waits until its control socket answers.
    pub fn start(
        self: &Arc<Self>,
        vmm: &std::path::Path,
        defaults: &crate::daemon::Defaults,
    ) -> Result<(), ApiError> {
        if self.state().is_active() {
            return Err(ApiError::conflict(format!(
                "VM '{}' is already running",
                self.name()
            )));
        }
        let kernel = self
            .def
            .kernel
            .clone()
            .ok_or_else(|| ApiError::bad_request("the definition has no kernel"))?;
        // Root's own definitions get a friendly early word; a caller's
        // files are checked only by opening them as the caller (below), so
        // nothing here tells whether a path it cannot see exists.
        let root_owned = self.def.owner.is_none_or(|o| o.uid == 0);
        for (what, p) in std::iter::once(("kernel", &kernel))
            .chain(self.def.initrd.iter().map(|i| ("initrd", i)))
            .filter(|_| root_owned)
        {
            if !p.is_file() {
                return Err(ApiError::bad_request(format!(
                    "{what} {} is not a file",
                    p.display()
                )));
            }
        }
        for n in &self.def.networks {
            if !net::bridge_exists(&n.bridge) {
                return Err(ApiError::bad_request(format!(
                    "bridge {} does not exist (create it: ip link add {} type bridge)",
                    n.bridge, n.bridge
                )));
            }
        }
        let io = |what| move |e| ApiError::internal(what, e);
        store::remove(&self.dir.socket()).map_err(io("cannot remove the old socket"))?;
        std::fs::write(self.dir.console(), b"").map_err(io("cannot reset console.log"))?;
        let (pid, confinement, wait): (u32, Option<Confinement>, Waiter) = match &self.jail {
            Some(jail) => {
                let started =
                    crate::cell::start(jail, vmm, &kernel, &self.def, defaults, &self.dir)?;
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
                if let Some(o) = self.def.owner.filter(|o| o.uid != 0) {
                    return Err(ApiError::new(
                        403,
                        format!(
                            "VM '{}' belongs to uid {}: with vtd --jail off only root's VMs start (their files would be opened as root)",
                            self.name(),
                            o.uid
                        ),
                    ));
                }
                let mut child = process::spawn(vmm, &kernel, &self.def, &self.dir)
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
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            if lock(&self.run).pid != Some(pid) {
                let reason = lock(&self.run).reason.clone().unwrap_or_default();
                return Err(ApiError::bad_request(format!(
                    "the VM failed to start: {reason}"
                )));
            }
            if vmm::get::<VmmInfo>(&self.dir, proto::INFO).is_ok() {
                break;
            }
            if std::time::Instant::now() > deadline {
                process::kill(pid);
                return Err(ApiError::new(
                    504,
                    "the VMM did not open its control socket",
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let unjailed_nets = if self.jail.is_none() {
            &self.def.networks[..]
        } else {
            &[]
        };
        for (i, n) in unjailed_nets.iter().enumerate() {
            let tap = net::tap_name(self.name(), i);
            if let Err(e) = net::attach(&n.bridge, &tap, START_TIMEOUT) {
                let _ = self.stop("stopped: its network could not be attached");
                return Err(ApiError::internal(
                    &format!("cannot add {tap} to bridge {}", n.bridge),
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

    /// Takes a VMM found running after a `vtd` restart back under watch.
    pub fn reattach(self: &Arc<Self>) {
        let Ok(Some(rt)) = store::read_json::<Runtime>(&self.dir.runtime()) else {
            let last = store::read_json::<LastExit>(&self.dir.last_exit())
                .ok()
                .flatten();
            let mut r = lock(&self.run);
            r.state = Some(last.as_ref().map_or(VmState::Stopped, |l| l.state));
            r.reason = last.map(|l| l.reason);
            return;
        };
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
        // A jailed VMM is known by its uid (which it cannot change; its
        // command line it could rewrite), an unjailed one by its flags.
        let alive = match rt.uid {
            Some(uid) => process::uid_of(pid) == Some(uid),
            None => process::is_our_vmm(pid, &self.dir.socket()),
        };
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
        let mut r = lock(&self.run);
        if r.pid != Some(pid) {
            return;
        }
        let vmm_uid = r.uid;
        let line = store::last_line(&self.dir.vmm_log()).unwrap_or_default();
        let (state, reason) = classify(r.stopping.take(), status, &line, pid);
        r.state = Some(state);
        r.pid = None;
        r.reason = Some(reason.clone());
        if let Some(j) = &self.jail {
            r.confinement = None;
            if let Some(uid) = r.uid.take() {
                j.uids.release(uid);
            }
            jail::cgroup::Cgroup::remove_stale(&j.cgroups, self.name());
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
    fn wait_end(&self, pid: u32, timeout: Duration) -> bool {
        let r = lock(&self.run);
        let (r, _) = self
            .ended
            .wait_timeout_while(r, timeout, |r| r.pid == Some(pid))
            .unwrap_or_else(|p| p.into_inner());
        r.pid != Some(pid)
    }

    /// Stops the VMM: asks it, then kills it after [`STOP_TIMEOUT`].
    pub fn stop(&self, why: &str) -> Result<(), ApiError> {
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

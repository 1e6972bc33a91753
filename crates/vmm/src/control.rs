//! The control socket (`vt-vmm --api-socket PATH`); the protocol is written
//! down in [`api::control`].
//!
//! Threads: an HTTP listener thread (plus one per connection, `vt-http`)
//! answers `info` and `counters` from [`Shared`] state itself. Commands that
//! change the VM (pause, resume, stop, reboot) go to the main thread's event
//! loop as a [`Command`] over a channel, followed by a write to an eventfd
//! that the loop watches; the loop answers on the reply channel that came
//! with the command.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::control::{
    self as proto, BalloonInfo, BalloonRequest, ErrorBody, GuestMemoryStats, RunState, VmmCounters,
    VmmInfo,
};
use api::VmConfig;
use devices::bus::lock;
use devices::virtio::balloon::BalloonControl;
use vmm_sys_util::eventfd::EventFd;
use vt_http::{Handler, Limits, Peer, Reply, Request, Response};

use crate::console::ConsoleInput;
use crate::Error;

/// How long a connection waits for the event loop to answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A command for the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Stop,
    Reboot,
    /// Press the ACPI power button (the guest decides what to do).
    PowerButton,
}

/// The loop's answer: Ok, or a status and a message.
pub type CommandResult = Result<(), (u16, String)>;

type Pending = (Command, Sender<CommandResult>);

/// State the connection threads read without asking the loop.
struct Shared {
    config: VmConfig,
    start: Instant,
    state: Mutex<RunState>,
    boots: AtomicU64,
    pauses: AtomicU64,
    /// Exits of finished boots, plus the live counter of the current one.
    io_exits_before: AtomicU64,
    io_exits_now: Mutex<Option<Arc<AtomicU64>>>,
    tx: Mutex<Sender<Pending>>,
    evt: Arc<EventFd>,
    input: ConsoleInput,
    /// The balloon, when the VM has one.
    balloon: std::sync::OnceLock<Arc<BalloonControl>>,
    /// The per-vCPU, memory and device counters.
    stats: std::sync::OnceLock<Arc<crate::counters::VmStats>>,
}

/// The VMM's end of the control socket.
pub struct Control {
    shared: Arc<Shared>,
    rx: Receiver<Pending>,
    path: PathBuf,
    /// Device and inode of the socket we bound at `path` (not a passed
    /// one): only that file is removed at the end.
    bound: Option<(u64, u64)>,
    /// A stop was taken: its answer may still be on its way out.
    stopping: std::sync::atomic::AtomicBool,
}

impl Control {
    /// Binds `path` (a stale socket there is replaced).
    pub fn bind(path: &Path) -> Result<UnixListener, Error> {
        let open = |source| Error::Open {
            what: "API socket",
            path: path.display().to_string(),
            source,
        };
        let listener = match devices::files::passed_fd(path) {
            // A listening socket bound by our manager (a jailed VMM has no
            // path to bind); it is the manager's to remove.
            Some(fd) => {
                let f = devices::files::dup(fd).map_err(open)?;
                UnixListener::from(std::os::fd::OwnedFd::from(f))
            }
            None => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() || UnixStream::connect(path).is_ok() {
                        return Err(open(std::io::ErrorKind::AlreadyExists.into()));
                    }
                    std::fs::remove_file(path).map_err(open)?;
                }
                UnixListener::bind(path).map_err(open)?
            }
        };
        Ok(listener)
    }

    /// Starts serving on `listener`, bound at `path` by [`Control::bind`].
    /// The listener thread (and so its connection threads) runs under the
    /// `api` seccomp filter.
    pub fn start(
        listener: UnixListener,
        path: &Path,
        config: &VmConfig,
        input: ConsoleInput,
    ) -> Result<Self, Error> {
        use std::os::unix::fs::MetadataExt;
        // The file we bound: its listener's own address is `path`, and the
        // inode there now is that socket unless someone replaced it in the
        // microseconds since bind (then we remove nothing, which is safe).
        let bound = match devices::files::passed_fd(path) {
            Some(_) => None,
            None => std::fs::symlink_metadata(path)
                .ok()
                .filter(|m| m.file_type().is_socket())
                .map(|m| (m.dev(), m.ino())),
        };
        let (tx, rx) = mpsc::channel();
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Io("eventfd", e))?;
        let shared = Arc::new(Shared {
            config: config.clone(),
            start: Instant::now(),
            state: Mutex::new(RunState::Starting),
            boots: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            io_exits_before: AtomicU64::new(0),
            io_exits_now: Mutex::new(None),
            tx: Mutex::new(tx),
            evt: Arc::new(evt),
            input,
            balloon: std::sync::OnceLock::new(),
            stats: std::sync::OnceLock::new(),
        });
        let handler = Arc::new(ControlHandler(shared.clone()));
        std::thread::Builder::new()
            .name("api-listener".into())
            .spawn(move || {
                crate::sandbox::enter_thread(crate::sandbox::ThreadKind::Api);
                {
                    // Only the manager (root) and the admin connect here.
                    let mut limits = vt_http::ConnectionLimits::new(32);
                    limits.per_uid = 32;
                    vt_http::serve(
                        listener,
                        handler,
                        Limits::default(),
                        vt_http::Connections::new(limits),
                    )
                }
            })
            .map_err(Error::Thread)?;
        Ok(Control {
            shared,
            rx,
            path: path.to_path_buf(),
            bound,
            stopping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Serves `GET`/`PUT /vm/balloon` through `balloon`.
    pub fn set_balloon(&self, balloon: Arc<BalloonControl>) {
        let _ = self.shared.balloon.set(balloon);
    }

    /// Serves `stats` in `GET /vm/counters`.
    pub fn set_stats(&self, stats: Arc<crate::counters::VmStats>) {
        let _ = self.shared.stats.set(stats);
    }

    /// The eventfd the event loop watches.
    pub fn event_fd(&self) -> &EventFd {
        &self.shared.evt
    }

    /// Clears the eventfd (call when it is readable, then take the
    /// commands with [`Control::next_command`]).
    pub fn clear_event(&self) {
        let _ = self.shared.evt.read();
    }

    /// Makes the event loop look at the queue again (a new VM's loop,
    /// after a reboot ended the last one with commands still queued).
    pub fn recheck(&self) {
        let _ = self.shared.evt.write(1);
    }

    /// The next queued command. Commands stay queued while the VM is
    /// rebuilt after a reset: the loop that ends a VM takes no command
    /// after the one that ended it, and the next VM's loop answers the rest.
    pub fn next_command(&self) -> Option<(Command, Sender<CommandResult>)> {
        let cmd = self.rx.try_recv().ok()?;
        if cmd.0 == Command::Stop {
            self.stopping.store(true, Ordering::Relaxed);
        }
        Some(cmd)
    }

    /// The VM is being rebuilt (after a reset): `info` says `starting`.
    pub fn rebuilding(&self) {
        *lock(&self.shared.state) = RunState::Starting;
    }

    /// A new boot starts with `io_exits` as its exit counter.
    pub fn boot(&self, io_exits: Arc<AtomicU64>) {
        self.shared.boots.fetch_add(1, Ordering::Relaxed);
        *lock(&self.shared.state) = RunState::Running;
        if let Some(old) = lock(&self.shared.io_exits_now).replace(io_exits) {
            let n = old.load(Ordering::Relaxed);
            self.shared.io_exits_before.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Records the run state after a pause or resume.
    pub fn set_state(&self, state: RunState) {
        if state == RunState::Paused {
            self.shared.pauses.fetch_add(1, Ordering::Relaxed);
        }
        *lock(&self.shared.state) = state;
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        // Give a connection thread a moment to send the answer to the stop
        // that ended the VM, then take the socket away.
        if self.stopping.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Only the socket we bound: another VMM may have bound the same
        // path since (ours unlinked by hand), and its socket is not ours.
        use std::os::unix::fs::MetadataExt;
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| Some((m.dev(), m.ino())) == self.bound);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

struct ControlHandler(Arc<Shared>);

fn json<T: serde::Serialize>(status: u16, value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => Reply::Full(Response::json(status, body)),
        Err(e) => error(500, &e.to_string()),
    }
}

fn error(status: u16, message: &str) -> Reply {
    let body = ErrorBody {
        error: message.to_string(),
    };
    Reply::Full(Response::json(
        status,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}

impl ControlHandler {
    fn command(&self, cmd: Command) -> Reply {
        let (reply_tx, reply_rx) = mpsc::channel();
        if lock(&self.0.tx).send((cmd, reply_tx)).is_err() {
            return error(503, "the VM is shutting down");
        }
        let _ = self.0.evt.write(1);
        match reply_rx.recv_timeout(COMMAND_TIMEOUT) {
            Ok(Ok(())) => Reply::Full(Response::new(204, "application/json", "")),
            Ok(Err((status, msg))) => error(status, &msg),
            Err(mpsc::RecvTimeoutError::Timeout) => error(504, "the VM did not answer in time"),
            Err(mpsc::RecvTimeoutError::Disconnected) => error(503, "the VM is shutting down"),
        }
    }

    fn counters(&self) -> VmmCounters {
        let s = &self.0;
        let now = lock(&s.io_exits_now)
            .as_ref()
            .map_or(0, |c| c.load(Ordering::Relaxed));
        VmmCounters {
            uptime_ms: s.start.elapsed().as_millis() as u64,
            boots: s.boots.load(Ordering::Relaxed),
            io_exits: s.io_exits_before.load(Ordering::Relaxed) + now,
            pauses: s.pauses.load(Ordering::Relaxed),
            detail: s.stats.get().map(|v| v.detail()).unwrap_or_default(),
        }
    }
}

/// MiB from 4 KiB pages.
fn pages_mib(pages: u64) -> u64 {
    pages >> 8
}

/// The balloon's state; asks the guest for fresh statistics for the next
/// call.
fn balloon_info(b: &BalloonControl) -> BalloonInfo {
    let s = b.state();
    b.request_stats();
    BalloonInfo {
        size_mib: pages_mib(u64::from(s.target_pages)),
        actual_mib: pages_mib(u64::from(s.actual_pages)),
        freed_mib: pages_mib(s.freed_pages),
        refused_pages: s.refused_pages,
        stats: s.stats.map(|g| GuestMemoryStats {
            swap_in: g.swap_in,
            swap_out: g.swap_out,
            major_faults: g.major_faults,
            minor_faults: g.minor_faults,
            free_memory: g.free_memory,
            total_memory: g.total_memory,
            available_memory: g.available_memory,
            disk_caches: g.disk_caches,
            hugetlb_allocations: g.hugetlb_allocations,
            hugetlb_failures: g.hugetlb_failures,
        }),
    }
}

impl ControlHandler {
    /// `PUT /vm/balloon`: a size from 0 to the guest's memory.
    fn set_balloon_size(&self, body: &[u8]) -> Reply {
        let Some(b) = self.0.balloon.get() else {
            return error(409, "this VM has no balloon (vt-vmm --balloon)");
        };
        let req: BalloonRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return error(400, &format!("bad balloon request: {e}")),
        };
        let max = self.0.config.memory_mib;
        if req.size_mib > max {
            return error(
                400,
                &format!(
                    "balloon of {} MiB exceeds the guest's {max} MiB",
                    req.size_mib
                ),
            );
        }
        // At most 1 TiB of guest RAM: its pages fit in 32 bits.
        let pages = u32::try_from(req.size_mib << 8).unwrap_or(u32::MAX);
        b.set_target(pages);
        json(200, &balloon_info(b))
    }
}

impl Handler for ControlHandler {
    fn handle(&self, req: Request, _peer: &Peer) -> Reply {
        let write = matches!(req.method.as_str(), "PUT" | "POST");
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", proto::INFO) => json(
                200,
                &VmmInfo {
                    state: *lock(&self.0.state),
                    pid: std::process::id(),
                    config: self.0.config.clone(),
                    confinement: crate::sandbox::status(),
                },
            ),
            ("GET", proto::COUNTERS) => json(200, &self.counters()),
            ("GET", proto::BALLOON) => match self.0.balloon.get() {
                Some(b) => json(200, &balloon_info(b)),
                None => error(409, "this VM has no balloon (vt-vmm --balloon)"),
            },
            ("PUT", proto::BALLOON) => self.set_balloon_size(&req.body),
            (_, proto::PAUSE) if write => self.command(Command::Pause),
            (_, proto::RESUME) if write => self.command(Command::Resume),
            (_, proto::STOP) if write => self.command(Command::Stop),
            (_, proto::REBOOT) if write => self.command(Command::Reboot),
            (_, proto::POWER_BUTTON) if write => self.command(Command::PowerButton),
            (_, proto::CONSOLE) if write => {
                let n = self.0.input.send(&req.body, Some(Duration::from_secs(1)));
                if n == req.body.len() {
                    Reply::Full(Response::new(204, "application/json", ""))
                } else {
                    error(
                        503,
                        &format!("the guest took {n} of {} bytes", req.body.len()),
                    )
                }
            }
            (
                _,
                proto::INFO
                | proto::COUNTERS
                | proto::PAUSE
                | proto::RESUME
                | proto::STOP
                | proto::REBOOT
                | proto::POWER_BUTTON
                | proto::CONSOLE
                | proto::BALLOON,
            ) => error(405, &format!("{} not allowed on {}", req.method, req.path)),
            _ => error(404, &format!("no route for {} {}", req.method, req.path)),
        }
    }

    fn error(&self, status: u16, message: &str) -> Response {
        let body = ErrorBody {
            error: message.to_string(),
        };
        Response::json(status, serde_json::to_vec(&body).unwrap_or_default())
    }
}

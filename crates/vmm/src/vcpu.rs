//! vCPU threads as typed state machines.
//!
//! Protocol: the VMM sends a [`VcpuMessage`] on the vCPU's channel, then kicks
//! the thread with [`crate::signals::kick_signal`]. The kick sets
//! `kvm_run.immediate_exit`, so KVM_RUN returns (now, or at its next entry)
//! and the thread reads its messages. The thread reports what happened as
//! [`VcpuEvent`]s on the shared event channel and writes the shared eventfd.
//!
//! ```text
//!   Running ──Pause──► Paused ──Resume──► Running
//!      │                  │
//!      └──Stop / guest exit / error──► Exited (thread ends)
//! ```

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use devices::{MmioBus, PioBus};
use hv::{Vcpu, VcpuExit};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use crate::counters::{Exit, VcpuStats};
use crate::signals;

/// KVM_SYSTEM_EVENT types.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const SYSTEM_EVENT_RESET: u32 = 2;

/// The buses a vCPU dispatches its I/O exits on.
#[derive(Default)]
pub struct Buses {
    pub pio: PioBus,
    pub mmio: MmioBus,
    /// Port I/O and MMIO exits handled (the control socket's counters).
    pub io_exits: Arc<std::sync::atomic::AtomicU64>,
    /// Firmware boot only: what to do once the OS has taken over.
    pub os_handoff: Option<OsHandoff>,
}

/// A firmware boot's hand-off to the OS, seen by vCPU 0: the first port
/// I/O exit with paging on (CR0.PG; SeaBIOS and GRUB run without paging,
/// every 64-bit OS and 32-bit Linux turn it on before their first port
/// I/O, interrupts still off). Then the 8259 PICs are masked if they still
/// have the BIOS's vectors ([`hv::Vm::mask_bios_pic`]): the ACPI tables are
/// hardware-reduced, so Linux never sets up the PIC that SeaBIOS left
/// running with its timer at vector 8 (seen: a double fault as soon as
/// Linux enabled interrupts). An OS that reprogrammed the PIC keeps it.
pub struct OsHandoff {
    vm: Arc<hv::Vm>,
    done: std::sync::atomic::AtomicBool,
}

impl OsHandoff {
    /// Watches for the hand-off of the guest of `vm`.
    pub fn new(vm: Arc<hv::Vm>) -> Self {
        OsHandoff {
            vm,
            done: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Checks vCPU 0's CR0 after a port I/O exit; once paging is on,
    /// masks the PICs if they still have the BIOS's vectors.
    fn check(&self, vcpu: &Vcpu) {
        use std::sync::atomic::Ordering;
        if self.done.load(Ordering::Relaxed) {
            return;
        }
        let Ok(sregs) = vcpu.sregs() else { return };
        if sregs.cr0 & (1 << 31) == 0 {
            return;
        }
        self.done.store(true, Ordering::Relaxed);
        match self.vm.mask_bios_pic() {
            Ok(true) => {
                tracing::debug!("firmware boot: the OS runs with paging on; 8259 PICs masked")
            }
            Ok(false) => tracing::debug!("firmware boot: the OS reprogrammed the 8259 PICs"),
            Err(e) => tracing::warn!("firmware boot: cannot mask the 8259 PICs: {e}"),
        }
    }
}

/// Messages from the VMM to one vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuMessage {
    Pause,
    Resume,
    Stop,
}

/// The vCPU's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuState {
    Running,
    Paused,
    Exited,
}

/// Why a vCPU stopped running the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuExitReason {
    /// The VMM asked it to stop.
    Stopped,
    /// The guest asked KVM for a power-off (KVM_SYSTEM_EVENT_SHUTDOWN).
    PowerOff,
    /// The guest asked KVM for a reset (KVM_SYSTEM_EVENT_RESET).
    Reset,
    /// The guest or KVM failed; the text says how.
    Crashed(String),
}

/// Reports from vCPU threads to the VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEvent {
    Paused(u8),
    Resumed(u8),
    Exited(u8, VcpuExitReason),
}

/// Where a vCPU thread reports.
#[derive(Clone)]
pub struct EventSink {
    pub tx: Sender<VcpuEvent>,
    pub evt: Arc<EventFd>,
}

impl EventSink {
    fn send(&self, e: VcpuEvent) {
        // The VMM may already be gone during teardown; nothing to report to then.
        let _ = self.tx.send(e);
        let _ = self.evt.write(1);
    }
}

/// The VMM's handle on a running vCPU thread.
pub struct VcpuHandle {
    tx: Sender<VcpuMessage>,
    thread: Option<JoinHandle<()>>,
}

impl VcpuHandle {
    /// Starts `vcpu` on its own thread.
    pub fn spawn(
        vcpu: Vcpu,
        bus: Arc<Buses>,
        events: EventSink,
        stats: &crate::counters::VmStats,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let stats = stats.vcpu(vcpu.id());
        let name = format!("vcpu{}", vcpu.id());
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            crate::sandbox::enter_thread(crate::sandbox::ThreadKind::Vcpu);
            VcpuThread {
                vcpu,
                bus,
                rx,
                events,
                stats,
            }
            .run()
        })?;
        Ok(VcpuHandle {
            tx,
            thread: Some(thread),
        })
    }

    /// Sends `msg` and kicks the thread out of the guest.
    pub fn send(&self, msg: VcpuMessage) {
        if self.tx.send(msg).is_ok() {
            if let Some(t) = &self.thread {
                let _ = t.kill(signals::kick_signal());
            }
        }
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.send(VcpuMessage::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct VcpuThread {
    vcpu: Vcpu,
    bus: Arc<Buses>,
    rx: Receiver<VcpuMessage>,
    events: EventSink,
    stats: Arc<VcpuStats>,
}

impl VcpuThread {
    fn run(mut self) {
        signals::set_immediate_exit_ptr(self.vcpu.immediate_exit_ptr());
        self.stats.thread_started();
        let reason = self.run_loop();
        self.stats.thread_ending();
        signals::set_immediate_exit_ptr(std::ptr::null_mut());
        self.events.send(VcpuEvent::Exited(self.vcpu.id(), reason));
    }

    /// Handles pending messages; returns the new state.
    fn handle_messages(&mut self, mut state: VcpuState) -> VcpuState {
        loop {
            let msg = if state == VcpuState::Paused {
                self.rx.recv().unwrap_or(VcpuMessage::Stop)
            } else {
                match self.rx.try_recv() {
                    Ok(m) => m,
                    Err(std::sync::mpsc::TryRecvError::Empty) => return state,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => VcpuMessage::Stop,
                }
            };
            let id = self.vcpu.id();
            state = match (msg, state) {
                (VcpuMessage::Stop, _) => return VcpuState::Exited,
                (VcpuMessage::Pause, VcpuState::Running) => {
                    self.events.send(VcpuEvent::Paused(id));
                    VcpuState::Paused
                }
                (VcpuMessage::Resume, VcpuState::Paused) => {
                    self.events.send(VcpuEvent::Resumed(id));
                    VcpuState::Running
                }
                (_, s) => s,
            };
        }
    }

    /// Where the vCPU was, for a crash report: `, at CS:RIP` and its mode.
    fn where_at(&self) -> String {
        match (self.vcpu.regs(), self.vcpu.sregs()) {
            (Ok(r), Ok(s)) => format!(
                ", at {:#x}:{:#x} (CS base {:#x}, CR0 {:#x}, RSP {:#x})",
                s.cs.selector, r.rip, s.cs.base, s.cr0, r.rsp
            ),
            _ => String::new(),
        }
    }

    fn run_loop(&mut self) -> VcpuExitReason {
        let id = self.vcpu.id();
        let mut state = VcpuState::Running;
        loop {
            state = self.handle_messages(state);
            if state == VcpuState::Exited {
                return VcpuExitReason::Stopped;
            }
            let handled = match self.vcpu.run() {
                Ok(exit) => {
                    let pio = matches!(exit, VcpuExit::IoIn(..) | VcpuExit::IoOut(..));
                    Ok((pio, handle_exit(id, exit, &self.bus, &self.stats)))
                }
                Err(e) => Err(e),
            };
            match handled {
                Ok((pio, Handled::Continue)) => {
                    if let (0, true, Some(h)) = (id, pio, &self.bus.os_handoff) {
                        h.check(&self.vcpu);
                    }
                }
                Ok((_, Handled::End(VcpuExitReason::Crashed(m)))) => {
                    return VcpuExitReason::Crashed(format!("{m}{}", self.where_at()))
                }
                Ok((_, Handled::End(reason))) => return reason,
                Ok((_, Handled::InternalError)) => {
                    let (sub, data) = self.vcpu.internal_error();
                    return VcpuExitReason::Crashed(format!(
                        "KVM internal error on vCPU {id}: suberror {sub}, data {data:x?}"
                    ));
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.stats.exit(Exit::Intr);
                    self.vcpu.set_immediate_exit(false);
                }
                Err(e) => {
                    return VcpuExitReason::Crashed(format!("KVM_RUN failed on vCPU {id}: {e}"))
                }
            }
        }
    }
}

/// What to do after one exit.
enum Handled {
    Continue,
    End(VcpuExitReason),
    /// KVM_EXIT_INTERNAL_ERROR: the caller reads the details from `kvm_run`.
    InternalError,
}

/// Handles one exit.
fn handle_exit(id: u8, exit: VcpuExit<'_>, bus: &Buses, stats: &VcpuStats) -> Handled {
    stats.exit(match exit {
        VcpuExit::IoIn(..) => Exit::IoIn,
        VcpuExit::IoOut(..) => Exit::IoOut,
        VcpuExit::MmioRead(..) => Exit::MmioRead,
        VcpuExit::MmioWrite(..) => Exit::MmioWrite,
        VcpuExit::Intr => Exit::Intr,
        VcpuExit::SystemEvent(..) => Exit::SystemEvent,
        _ => Exit::Other,
    });
    if matches!(
        exit,
        VcpuExit::IoIn(..) | VcpuExit::IoOut(..) | VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..)
    ) {
        bus.io_exits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let crashed = |msg: String| Handled::End(VcpuExitReason::Crashed(msg));
    match exit {
        VcpuExit::IoIn(port, data) => {
            bus.pio.read(port.into(), data);
            Handled::Continue
        }
        VcpuExit::IoOut(port, data) => {
            bus.pio.write(port.into(), data);
            Handled::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            bus.mmio.read(addr, data);
            Handled::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            bus.mmio.write(addr, data);
            Handled::Continue
        }
        VcpuExit::Intr => Handled::Continue,
        VcpuExit::Shutdown => crashed(format!("triple fault on vCPU {id} (KVM_EXIT_SHUTDOWN)")),
        VcpuExit::Hlt => crashed(format!("vCPU {id} halted with no way to wake up")),
        VcpuExit::InternalError => Handled::InternalError,
        VcpuExit::FailEntry(reason, cpu) => crashed(format!(
            "VM entry failed on vCPU {id} (host CPU {cpu}): hardware reason {reason:#x}"
        )),
        VcpuExit::SystemEvent(SYSTEM_EVENT_SHUTDOWN, _) => Handled::End(VcpuExitReason::PowerOff),
        VcpuExit::SystemEvent(SYSTEM_EVENT_RESET, _) => Handled::End(VcpuExitReason::Reset),
        other => crashed(format!("unexpected exit on vCPU {id}: {other:?}")),
    }
}

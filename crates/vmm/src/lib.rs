//! `vmm`: builds one VM from a [`VmConfig`] and runs it to its end.
//!
//! Threads and how they talk:
//!
//! - the **main thread** builds the VM, then sits in [`vm::Vm::run`]'s epoll
//!   loop waiting for: a power request from a device ([`devices::PowerSignal`]),
//!   an event from a vCPU ([`vcpu::VcpuEvent`] over a channel plus an eventfd),
//!   or SIGTERM/SIGINT (a signalfd; those signals are blocked in every thread);
//! - one **vCPU thread** per vCPU ([`vcpu`]), a state machine driven by
//!   [`vcpu::VcpuMessage`]s; a message is followed by a kick signal that makes
//!   `KVM_RUN` return;
//! - one **console input thread** ([`console`]) copying stdin into the UART;
//! - with `--api-socket`, the **control socket** threads ([`control`]), whose
//!   commands reach the event loop over a channel and an eventfd.
//!
//! Each thread confines itself with the seccomp filter of its kind, and the
//! whole process with Landlock ([`sandbox`]; `vt-vmm --seccomp`,
//! `--landlock`).
//!
//! When the loop sees the end of the VM it stops every vCPU, joins them, and
//! returns a [`VmExit`].

pub mod console;
pub mod control;
pub mod counters;
mod error;
pub mod firmware;
pub mod memory;
mod pci_devices;
pub mod sandbox;
mod setup;
mod signals;
pub mod vcpu;
pub mod vm;

pub use api::VmConfig;
pub use error::Error;
pub use vm::VmExit;

use std::path::Path;
use std::sync::Arc;

use api::OnReboot;

pub use hv::preopen_kvm;

/// Runs the VM described by `config` until it powers off, reboots (with
/// [`OnReboot::Exit`]), crashes or is stopped by a signal.
pub fn run(config: &VmConfig) -> Result<VmExit, Error> {
    run_with_api(config, None)
}

/// [`run`], with a control socket at `api_socket` ([`control`]).
pub fn run_with_api(config: &VmConfig, api_socket: Option<&Path>) -> Result<VmExit, Error> {
    run_confined(config, api_socket, sandbox::Policy::off())
}

/// [`run_with_api`], confined as `policy` says ([`sandbox`]). Once per
/// process: the confinement cannot be lifted.
///
/// Order: everything opened once (serial file, control socket) is opened
/// first; then Landlock restricts the process and every filter is
/// compiled, before any thread starts; each thread installs its filter as
/// it starts; the main thread installs its own once the first VM is built.
pub fn run_confined(
    config: &VmConfig,
    api_socket: Option<&Path>,
    policy: sandbox::Policy,
) -> Result<VmExit, Error> {
    config.validate().map_err(Error::Config)?;
    memory::check_host(config.memory_mib)?;
    if let Some(size) = config.memory.hugepages {
        memory::check_hugepages(config.memory_mib, size)?;
    }
    setup::check_boot_files(config)?;
    signals::init()?;
    let console = console::Console::new(&config.serial)?;
    let listener = api_socket.map(control::Control::bind).transpose()?;
    devices::virtio::worker::set_thread_start_hook(sandbox::enter_worker_thread);
    sandbox::Confinement::enter(config, policy)?;
    console.start_threads()?;
    let control = match (api_socket, listener) {
        (Some(p), Some(l)) => Some(control::Control::start(l, p, config, console.input())?),
        _ => None,
    };
    // The balloon's target outlives a guest reboot (the device is rebuilt).
    let balloon = match config.balloon {
        Some(_) => Some(Arc::new(
            devices::virtio::balloon::BalloonControl::new().map_err(|e| Error::Io("eventfd", e))?,
        )),
        None => None,
    };
    if let (Some(c), Some(b)) = (&control, &balloon) {
        c.set_balloon(b.clone());
    }
    // The counters outlive a guest reboot too.
    let stats = Arc::new(counters::VmStats::new(config));
    if let Some(c) = &control {
        c.set_stats(stats.clone());
    }
    let mut main_confined = false;
    let result = loop {
        let vm = match vm::Vm::build(config, &console, balloon.as_ref(), &stats) {
            Ok(vm) => vm,
            Err(e) => break Err(e),
        };
        if !main_confined {
            sandbox::enter_thread(sandbox::ThreadKind::Main);
            main_confined = true;
        }
        // At debug: by default a VMM's stderr stays its one-line verdict.
        tracing::debug!(
            vcpus = config.cpus,
            memory_mib = config.memory_mib,
            disks = config.disks.len(),
            nets = config.nets.len(),
            "VM built"
        );
        match vm.run(control.as_ref()) {
            Ok(VmExit::Reboot) if config.on_reboot == OnReboot::Restart => continue,
            other => break other,
        }
    };
    let lost = console.drain();
    if lost > 0 {
        tracing::warn!("console: {lost} bytes of serial output lost (nobody read the console)");
    }
    result
}

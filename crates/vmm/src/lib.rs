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
//! When the loop sees the end of the VM it stops every vCPU, joins them, and
//! returns a [`VmExit`].

pub mod console;
pub mod control;
mod error;
pub mod memory;
mod pci_devices;
mod setup;
mod signals;
pub mod vcpu;
pub mod vm;

pub use api::VmConfig;
pub use error::Error;
pub use vm::VmExit;

use std::path::Path;

use api::OnReboot;

pub use hv::preopen_kvm;

/// Runs the VM described by `config` until it powers off, reboots (with
/// [`OnReboot::Exit`]), crashes or is stopped by a signal.
pub fn run(config: &VmConfig) -> Result<VmExit, Error> {
    run_with_api(config, None)
}

/// [`run`], with a control socket at `api_socket` ([`control`]).
pub fn run_with_api(config: &VmConfig, api_socket: Option<&Path>) -> Result<VmExit, Error> {
    config.validate().map_err(Error::Config)?;
    signals::init()?;
    let console = console::Console::new(&config.serial)?;
    let control = match api_socket {
        Some(p) => Some(control::Control::start(p, config, console.input())?),
        None => None,
    };
    loop {
        let vm = vm::Vm::build(config, &console)?;
        match vm.run(control.as_ref())? {
            VmExit::Reboot if config.on_reboot == OnReboot::Restart => continue,
            exit => return Ok(exit),
        }
    }
}

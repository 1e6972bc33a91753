//! `devices`: the port-I/O bus and the devices on it.
//!
//! - [`bus`]: maps port or MMIO ranges to devices; the vCPU threads dispatch exits through it;
//! - [`pci`]: configuration spaces, the root bus with its host bridge, and the
//!   two ways to reach them (ports 0xCF8/0xCFC and ECAM);
//! - [`legacy`]: the 8250 UART (vm-superio), the i8042 reset line (vm-superio),
//!   the ACPI sleep/reset registers and the CMOS RTC;
//! - [`firmware`]: fw_cfg (with the ACPI table-loader) and the debug port,
//!   for booting through SeaBIOS;
//! - [`power`]: how a device asks the VMM to power off or reset the VM.
//!
//! Every device method takes guest-controlled values (offsets, data sizes)
//! and must not panic on any of them.

pub mod bus;
pub mod files;
pub mod firmware;
pub mod legacy;
pub mod pci;
pub mod power;
pub mod rate_limiter;
pub mod stats;
pub mod virtio;

pub use bus::{Bus, BusDevice, MmioBus, PioBus};
pub use power::{PowerRequest, PowerSignal};

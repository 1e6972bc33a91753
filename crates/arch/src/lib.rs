//! `arch`: the x86_64 platform a VT System guest boots on.
//!
//! - [`layout`]: fixed guest-physical addresses and the RAM/e820 map;
//! - [`gdt`] and [`paging`]: the CPU state a 64-bit (or PVH 32-bit) entry needs;
//! - [`boot`]: loading bzImage / ELF kernels, initramfs and command line, and
//!   writing the zero page or the PVH start info;
//! - [`acpi`]: RSDP, XSDT, FADT, MADT and DSDT.
//!
//! Nothing here touches KVM: it writes guest memory and returns register values.

pub mod acpi;
pub mod boot;
pub mod gdt;
pub mod layout;
pub mod paging;

pub use vm_memory::GuestMemoryMmap;

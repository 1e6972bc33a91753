//! PCI: bus 0 with a host bridge, reached through the legacy configuration
//! ports ([`PciConfigIo`], 0xCF8–0xCFF) and ECAM ([`PciConfigMmio`]).
//!
//! Only bus 0, function 0 of each of the 32 slots is populated; every other
//! address reads as all ones, which is how an empty slot looks.

mod config;
pub mod msix;
mod root;

pub use config::{BarKind, Error, PciConfig, PciHeader, NUM_BARS, NUM_REGS};
pub use root::{
    HostBridge, PciConfigIo, PciConfigMmio, PciFunction, PciMmioWindow, PciRoot, ECAM_BUS_SIZE,
};

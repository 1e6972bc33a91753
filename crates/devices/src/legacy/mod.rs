//! Legacy PC devices.

pub mod acpi;
pub mod cmos;
pub mod i8042;
pub mod serial;

pub use acpi::AcpiPower;
pub use cmos::{Cmos, CmosConfig};
pub use i8042::I8042;
pub use serial::{IrqTrigger, Serial};

//! Devices PC firmware (SeaBIOS) talks to: the fw_cfg interface with the
//! ACPI table-loader script it carries, and the debug console port.

pub mod debugcon;
pub mod fw_cfg;
pub mod table_loader;

pub use debugcon::DebugCon;
pub use fw_cfg::FwCfg;

//! Devices PC firmware (SeaBIOS) talks to: the fw_cfg interface with the
//! ACPI table-loader script it carries, and the debug console port.

/// The debug console port (0x402) SeaBIOS logs to.
pub mod debugcon;
/// The fw_cfg device (ports 0x510..=0x51b) the firmware reads the VM's
/// description from.
pub mod fw_cfg;
/// The ACPI table-loader script (`etc/table-loader`) carried over fw_cfg.
pub mod table_loader;

pub use debugcon::DebugCon;
pub use fw_cfg::FwCfg;

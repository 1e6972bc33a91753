//! `api`: the types every layer of VT System agrees on.
//!
//! One serde struct per resource, shared by the `vt-vmm` command line, config
//! files, the `vt-vmm` control socket ([`control`]) and the `vtd` REST API
//! ([`manager`]). Unknown fields are rejected.

mod boot;
pub mod control;
pub mod counters;
mod devices;
pub mod manager;
pub mod network;
pub mod stats;
pub mod usage;
mod vm;

pub use boot::BootMode;
pub use devices::{
    canonical_mac, format_mac, parse_disk, parse_mac, parse_net, parse_size, CacheMode, DiskConfig,
    DiskFormat, NetConfig, RateLimit, SpecError, MAX_SERIAL_LEN,
};

pub use vm::{
    parse_balloon, BalloonConfig, ConfigError, HugePageSize, MemoryOptions, OnReboot, SerialConfig,
    VmConfig, MAX_MEMORY_MIB, MAX_PCI_DEVICES, MAX_VCPUS, MIN_MEMORY_MIB,
};

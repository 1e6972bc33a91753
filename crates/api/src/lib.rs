//! `api`: the types every layer of VT System agrees on.
//!
//! One serde struct per resource, shared by the `vt-vmm` command line, config
//! files and (later) the REST API. Unknown fields are rejected.

mod vm;

pub use vm::{
    ConfigError, OnReboot, SerialConfig, VmConfig, MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB,
};

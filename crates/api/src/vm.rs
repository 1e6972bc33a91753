//! The configuration of one VM.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::devices::{DiskConfig, NetConfig, SpecError};

/// Most vCPUs a VM may have (xAPIC IDs 0..=253; 255 is broadcast).
pub const MAX_VCPUS: u32 = 254;
/// Smallest guest memory, in MiB.
pub const MIN_MEMORY_MIB: u64 = 8;
/// Largest guest memory, in MiB (1 TiB).
pub const MAX_MEMORY_MIB: u64 = 1 << 20;

/// Where the serial console (COM1) goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SerialConfig {
    /// The VMM's stdin/stdout.
    #[default]
    Stdio,
    /// Appended to a file (created if missing); no input.
    File(PathBuf),
    /// Discarded.
    Null,
}

/// What a guest-initiated reboot does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnReboot {
    /// The VMM exits with status 0.
    #[default]
    Exit,
    /// The VM is rebuilt and boots again.
    Restart,
}

/// A VM as `vt-vmm` runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// bzImage or ELF vmlinux.
    pub kernel: PathBuf,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    #[serde(default)]
    pub cmdline: String,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    #[serde(default)]
    pub serial: SerialConfig,
    #[serde(default)]
    pub on_reboot: OnReboot,
    /// virtio-blk disks, in PCI slot order.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// virtio-net NICs, in PCI slot order.
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// A virtio-rng device fed by the host's getrandom.
    #[serde(default)]
    pub rng: bool,
}

fn default_cpus() -> u32 {
    1
}

fn default_memory_mib() -> u64 {
    256
}

/// A configuration that cannot describe a VM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("vCPU count must be between 1 and {MAX_VCPUS}, got {0}")]
    Cpus(u32),
    #[error("memory must be between {MIN_MEMORY_MIB} MiB and {MAX_MEMORY_MIB} MiB, got {0} MiB")]
    Memory(u64),
    #[error("kernel path is empty")]
    NoKernel,
    #[error("disk {0}: {1}")]
    Disk(usize, SpecError),
    #[error("NIC {0}: {1}")]
    Net(usize, SpecError),
    #[error("too many PCI devices: {0} (at most {MAX_PCI_DEVICES})")]
    TooManyDevices(usize),
    #[error("tap '{0}' is used by two NICs")]
    SharedTap(String),
}

/// PCI slots left for devices (slot 0 is the host bridge).
pub const MAX_PCI_DEVICES: usize = 31;

impl VmConfig {
    /// A configuration with the defaults: 1 vCPU, 256 MiB, serial on stdio.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
            cpus: default_cpus(),
            memory_mib: default_memory_mib(),
            serial: SerialConfig::Stdio,
            on_reboot: OnReboot::Exit,
            disks: Vec::new(),
            nets: Vec::new(),
            rng: false,
        }
    }

    /// Checks what can be checked without touching the host.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kernel.as_os_str().is_empty() {
            return Err(ConfigError::NoKernel);
        }
        if self.cpus == 0 || self.cpus > MAX_VCPUS {
            return Err(ConfigError::Cpus(self.cpus));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::Memory(self.memory_mib));
        }
        for (i, d) in self.disks.iter().enumerate() {
            d.validate().map_err(|e| ConfigError::Disk(i, e))?;
        }
        for (i, n) in self.nets.iter().enumerate() {
            n.validate().map_err(|e| ConfigError::Net(i, e))?;
            if self.nets[..i].iter().any(|m| m.tap == n.tap) {
                return Err(ConfigError::SharedTap(n.tap.clone()));
            }
        }
        let count = self.disks.len() + self.nets.len() + usize::from(self.rng);
        if count > MAX_PCI_DEVICES {
            return Err(ConfigError::TooManyDevices(count));
        }
        Ok(())
    }

    /// Guest memory in bytes (valid after [`VmConfig::validate`]).
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(1 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = VmConfig::new("/k");
        assert_eq!((c.cpus, c.memory_mib), (1, 256));
        c.validate().unwrap();
    }

    #[test]
    fn bounds_are_enforced() {
        let mut c = VmConfig::new("/k");
        for cpus in [0, 255, u32::MAX] {
            c.cpus = cpus;
            assert_eq!(c.validate(), Err(ConfigError::Cpus(cpus)));
        }
        c.cpus = 254;
        c.validate().unwrap();
        for mem in [0, 7, MAX_MEMORY_MIB + 1, u64::MAX] {
            c.memory_mib = mem;
            assert_eq!(c.validate(), Err(ConfigError::Memory(mem)));
        }
        assert!(ConfigError::Memory(0).to_string().contains("between 8 MiB"));
    }

    #[test]
    fn json_rejects_unknown_fields_and_fills_defaults() {
        let c: VmConfig = serde_json::from_str(r#"{"kernel":"/k"}"#).unwrap();
        assert_eq!(c, VmConfig::new("/k"));
        let e = serde_json::from_str::<VmConfig>(r#"{"kernel":"/k","cpu":2}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"));
        let c: VmConfig = serde_json::from_str(
            r#"{"kernel":"/k","serial":{"file":"/tmp/x"},"on_reboot":"restart"}"#,
        )
        .unwrap();
        assert_eq!(c.serial, SerialConfig::File("/tmp/x".into()));
        assert_eq!(c.on_reboot, OnReboot::Restart);
    }
}

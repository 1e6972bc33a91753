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
    /// bzImage or ELF vmlinux; empty when `firmware` boots the VM.
    #[serde(default)]
    pub kernel: PathBuf,
    /// A firmware image (SeaBIOS `bios-256k.bin`) booting the VM from its
    /// disks instead of a kernel; mapped to end at 4 GiB.
    #[serde(default)]
    pub firmware: Option<PathBuf>,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    #[serde(default)]
    pub cmdline: String,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// How guest RAM is backed and what the host kernel is told about it.
    #[serde(default)]
    pub memory: MemoryOptions,
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
    /// A virtio-balloon device.
    #[serde(default)]
    pub balloon: Option<BalloonConfig>,
}

/// The virtio-balloon device (`vt-vmm --balloon`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonConfig {
    /// Offer `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`: the guest takes pages back
    /// from the balloon rather than run out of memory (Linux then keeps
    /// ballooned pages in its `MemTotal`).
    #[serde(default)]
    pub deflate_on_oom: bool,
    /// Offer `VIRTIO_BALLOON_F_REPORTING`: pages the guest frees go back
    /// to the host.
    #[serde(default)]
    pub free_page_reporting: bool,
    /// Offer `VIRTIO_BALLOON_F_STATS_VQ`: the guest's memory statistics in
    /// `GET /vm/balloon`.
    #[serde(default)]
    pub stats: bool,
}

/// Parses `--balloon on` or
/// `--balloon [deflate_on_oom=on][,free_page_reporting=on][,stats=on]`.
pub fn parse_balloon(spec: &str) -> Result<BalloonConfig, String> {
    let mut b = BalloonConfig::default();
    if spec == "on" {
        return Ok(b);
    }
    for piece in spec.split(',') {
        let (k, v) = piece
            .split_once('=')
            .ok_or_else(|| format!("'{piece}': expected key=on|off"))?;
        let on = match v {
            "on" => true,
            "off" => false,
            _ => return Err(format!("{k}={v}: expected on or off")),
        };
        match k {
            "deflate_on_oom" => b.deflate_on_oom = on,
            "free_page_reporting" => b.free_page_reporting = on,
            "stats" => b.stats = on,
            _ => return Err(format!("unknown balloon option '{k}'")),
        }
    }
    Ok(b)
}

/// Guest RAM options (`vt-vmm --memory-merge`, `--memory-thp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryOptions {
    /// Kernel same-page merging: guest RAM is advised `MADV_MERGEABLE`,
    /// so `ksmd` (when the host runs it) may share identical pages with
    /// other processes that opted in. Off by default: merging is a timing
    /// side channel between the VMs that share pages.
    #[serde(default)]
    pub merge: bool,
    /// Transparent huge pages: guest RAM is advised `MADV_HUGEPAGE`, so the
    /// host backs it with 2 MiB pages where it can (when
    /// /sys/kernel/mm/transparent_hugepage/enabled is `always` or
    /// `madvise`). On by default.
    #[serde(default = "yes")]
    pub thp: bool,
    /// Back guest RAM with pages of the host's hugetlbfs pool
    /// (`memfd_create(MFD_HUGETLB)`), reserved and populated before boot.
    /// `None`: ordinary anonymous memory.
    #[serde(default)]
    pub hugepages: Option<HugePageSize>,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            merge: false,
            thp: true,
            hugepages: None,
        }
    }
}

/// A hugetlbfs page size (`vt-vmm --memory-hugepages 2M|1G`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePageSize {
    /// 2 MiB pages.
    #[serde(rename = "2M")]
    Size2M,
    /// 1 GiB pages.
    #[serde(rename = "1G")]
    Size1G,
}

impl HugePageSize {
    /// The page size in KiB, as /sys/kernel/mm/hugepages names it.
    pub fn kib(self) -> u64 {
        match self {
            HugePageSize::Size2M => 2048,
            HugePageSize::Size1G => 1 << 20,
        }
    }

    /// The page size in MiB.
    pub fn mib(self) -> u64 {
        self.kib() >> 10
    }
}

impl MemoryOptions {
    /// Whether these are the defaults (left out of definitions).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the options against `memory_mib` of guest RAM: huge pages
    /// must divide it, and exclude merging.
    pub fn validate(&self, memory_mib: u64) -> Result<(), ConfigError> {
        if let Some(size) = self.hugepages {
            if !memory_mib.is_multiple_of(size.mib()) {
                return Err(ConfigError::HugePageMultiple(memory_mib, size.mib()));
            }
            if self.merge {
                return Err(ConfigError::MergeWithHugePages);
            }
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
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
    #[error("kernel path is empty (give a kernel or a firmware)")]
    NoKernel,
    #[error("a firmware boots from the disks: a kernel, initramfs or command line through the firmware (fw_cfg) is not supported")]
    FirmwareWithKernel,
    #[error("disk {0}: {1}")]
    Disk(usize, SpecError),
    #[error("NIC {0}: {1}")]
    Net(usize, SpecError),
    #[error("too many PCI devices: {0} (at most {MAX_PCI_DEVICES})")]
    TooManyDevices(usize),
    #[error("tap '{0}' is used by two NICs")]
    SharedTap(String),
    #[error("memory of {0} MiB is not a multiple of the {1} MiB huge page size")]
    HugePageMultiple(u64, u64),
    #[error(
        "memory merging (KSM) and huge pages exclude each other: hugetlbfs pages are never merged"
    )]
    MergeWithHugePages,
}

/// PCI slots left for devices (slot 0 is the host bridge).
pub const MAX_PCI_DEVICES: usize = 31;

impl VmConfig {
    /// A configuration with the defaults: 1 vCPU, 256 MiB, serial on stdio.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            kernel: kernel.into(),
            firmware: None,
            initrd: None,
            cmdline: String::new(),
            cpus: default_cpus(),
            memory_mib: default_memory_mib(),
            memory: MemoryOptions::default(),
            serial: SerialConfig::Stdio,
            on_reboot: OnReboot::Exit,
            disks: Vec::new(),
            nets: Vec::new(),
            rng: false,
            balloon: None,
        }
    }

    /// Checks what can be checked without touching the host.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.firmware, self.kernel.as_os_str().is_empty()) {
            (None, true) => return Err(ConfigError::NoKernel),
            (Some(_), false) => return Err(ConfigError::FirmwareWithKernel),
            (Some(_), true) if self.initrd.is_some() || !self.cmdline.is_empty() => {
                return Err(ConfigError::FirmwareWithKernel)
            }
            _ => {}
        }
        if self.cpus == 0 || self.cpus > MAX_VCPUS {
            return Err(ConfigError::Cpus(self.cpus));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::Memory(self.memory_mib));
        }
        self.memory.validate(self.memory_mib)?;
        for (i, d) in self.disks.iter().enumerate() {
            d.validate().map_err(|e| ConfigError::Disk(i, e))?;
        }
        for (i, n) in self.nets.iter().enumerate() {
            n.validate().map_err(|e| ConfigError::Net(i, e))?;
            if self.nets[..i].iter().any(|m| m.tap == n.tap) {
                return Err(ConfigError::SharedTap(n.tap.clone()));
            }
        }
        let count = self.disks.len()
            + self.nets.len()
            + usize::from(self.rng)
            + usize::from(self.balloon.is_some());
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
    fn firmware_replaces_the_kernel() {
        let mut c = VmConfig::new("");
        assert_eq!(c.validate(), Err(ConfigError::NoKernel));
        c.firmware = Some("/bios.bin".into());
        c.validate().unwrap();
        c.initrd = Some("/i".into());
        assert_eq!(c.validate(), Err(ConfigError::FirmwareWithKernel));
        c.initrd = None;
        c.cmdline = "console=ttyS0".into();
        assert_eq!(c.validate(), Err(ConfigError::FirmwareWithKernel));
        c.cmdline.clear();
        c.kernel = "/k".into();
        assert_eq!(c.validate(), Err(ConfigError::FirmwareWithKernel));
        let j: VmConfig = serde_json::from_str(r#"{"firmware":"/bios.bin"}"#).unwrap();
        assert_eq!(
            j.firmware.as_deref(),
            Some(std::path::Path::new("/bios.bin"))
        );
        j.validate().unwrap();
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

    #[test]
    fn memory_options_default_to_thp_without_merging() {
        let c: VmConfig = serde_json::from_str(r#"{"kernel":"/k","memory":{}}"#).unwrap();
        assert_eq!(c.memory, MemoryOptions::default());
        assert!(!c.memory.merge && c.memory.thp && c.memory.hugepages.is_none());
        let c: VmConfig =
            serde_json::from_str(r#"{"kernel":"/k","memory":{"merge":true,"thp":false}}"#).unwrap();
        assert!(c.memory.merge && !c.memory.thp);
        let e = serde_json::from_str::<VmConfig>(r#"{"kernel":"/k","memory":{"ksm":true}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field"));
    }

    #[test]
    fn balloon_specs() {
        assert_eq!(parse_balloon("on"), Ok(BalloonConfig::default()));
        let b = parse_balloon("deflate_on_oom=on,free_page_reporting=on").unwrap();
        assert!(b.deflate_on_oom && b.free_page_reporting);
        assert!(parse_balloon("free_page_reporting=yes").is_err());
        assert!(parse_balloon("stats=on").unwrap().stats);
        assert!(parse_balloon("hinting=on").is_err());
        assert!(parse_balloon("").is_err());
    }

    #[test]
    fn huge_pages_need_a_multiple_and_no_merging() {
        let mut c: VmConfig =
            serde_json::from_str(r#"{"kernel":"/k","memory_mib":256,"memory":{"hugepages":"2M"}}"#)
                .unwrap();
        assert_eq!(c.memory.hugepages, Some(HugePageSize::Size2M));
        c.validate().unwrap();
        c.memory_mib = 255;
        assert_eq!(c.validate(), Err(ConfigError::HugePageMultiple(255, 2)));
        c.memory_mib = 1024;
        c.memory.hugepages = Some(HugePageSize::Size1G);
        c.validate().unwrap();
        c.memory_mib = 1536;
        assert_eq!(c.validate(), Err(ConfigError::HugePageMultiple(1536, 1024)));
        c.memory_mib = 1024;
        c.memory.merge = true;
        assert_eq!(c.validate(), Err(ConfigError::MergeWithHugePages));
        assert!(serde_json::from_str::<HugePageSize>(r#""4M""#).is_err());
    }
}

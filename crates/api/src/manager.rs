//! The `vtd` REST API types (the routes are in `vtd`'s OpenAPI document).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::control::VmmCounters;
use crate::{MemoryOptions, MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB};

/// Longest VM name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest kernel command line, in bytes, without its NUL (the boot
/// protocol's 2048-byte buffer; a kernel may accept less, checked at start).
pub const MAX_CMDLINE_LEN: usize = 2047;
/// Largest disk `vt create` makes, in GiB (64 TiB).
pub const MAX_DISK_GIB: u64 = 64 * 1024;

/// A disk of a VM definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Absolute path of the image.
    pub path: PathBuf,
    #[serde(default)]
    pub readonly: bool,
    /// The image format, decided once when the disk is added (`vt create`
    /// probes it) and passed to the VMM as `format=`; unset (definitions
    /// from before formats) lets the VMM probe, which refuses a writable
    /// image that is not raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<crate::DiskFormat>,
    /// `writeback` (the default) or `none` (O_DIRECT).
    #[serde(default)]
    pub cache: crate::CacheMode,
    /// The image may be used by several VMs at once (libvirt's
    /// `<shareable/>`); allowed only while the `vm_shared_disks` switch is on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shareable: bool,
}

/// A network interface of a VM definition: on a host bridge the admin
/// made (`bridge`, unfiltered) or on a `vtd` network (`network`, with
/// anti-spoofing and VM-to-VM rules). Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// The host bridge to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// The `vtd` network to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The NIC's MAC; on a `network`, `vtd` picks one (52:54:00:…) when
    /// absent and stores it.
    #[serde(default)]
    pub mac: Option<String>,
    /// The NIC's IPv4 address on a `network` with a subnet: the only source
    /// address it may use, and its fixed DHCP lease. `vtd` picks a free
    /// one when absent and stores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::Ipv4Addr>,
    /// VMs this NIC may exchange traffic with on a network that denies
    /// VM-to-VM traffic (either side naming the other is enough).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

/// A VM as `vtd` keeps it (`POST /vms` body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDefinition {
    pub name: String,
    #[serde(default = "one")]
    pub vcpus: u32,
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// Guest RAM options: `merge` (KSM), `thp`, `hugepages`.
    #[serde(default, skip_serializing_if = "MemoryOptions::is_default")]
    pub memory: MemoryOptions,
    /// A virtio-balloon device (`vt setmem` resizes the guest through it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<crate::BalloonConfig>,
    /// How the VM boots: `kernel` (direct kernel boot, the default; left
    /// out when stored), `bios` or `uefi` (a firmware boots from the
    /// disks; no kernel, initrd or command line then).
    #[serde(default, skip_serializing_if = "crate::BootMode::is_kernel")]
    pub boot: crate::BootMode,
    /// Absolute path of the kernel (bzImage or ELF vmlinux). When absent
    /// from a `POST /vms` with `boot` `kernel`, `vtd` fills in its
    /// `--default-kernel` (and `--default-initrd`); a stored definition
    /// booting a kernel always has one.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// virtio-blk disks, in this order.
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// virtio-net NICs, each on a tap that vtd adds to the bridge.
    #[serde(default)]
    pub networks: Vec<NetworkSpec>,
    /// Start when `vtd` starts for the first time since host boot.
    #[serde(default)]
    pub autostart: bool,
    /// Who defined the VM (set by `vtd` from the caller's credentials;
    /// its paths are opened as this user). `None`: root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// CPU limits of the VM's cgroup; unset: weight 100, no quota. A
    /// limit asked for here that the host cannot enforce (no cpu
    /// controller) fails the start.
    #[serde(default, skip_serializing_if = "CpuTune::is_default")]
    pub cpu: CpuTune,
    /// Run this VM's VMM without its cell (no own uid, namespaces or
    /// cgroup); allowed only while the `vm_unconfined` switch is on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unconfined: bool,
}

/// CPU share and cap of a VM (libvirt's `<cputune>` `shares`/`quota`,
/// cgroup v2 `cpu.weight`/`cpu.max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CpuTune {
    /// Relative weight against other VMs, 1–10000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// At most this much CPU time, in percent of one host CPU (e.g. 150:
    /// one and a half CPUs), 1–100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_percent: Option<u32>,
}

impl CpuTune {
    /// Nothing asked for.
    pub fn is_default(&self) -> bool {
        *self == CpuTune::default()
    }
}

/// A user and group, as `SO_PEERCRED` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

fn one() -> u32 {
    1
}

fn default_memory() -> u64 {
    256
}

fn default_cmdline() -> String {
    "console=ttyS0".into()
}

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Defined, no VMM process.
    Stopped,
    Running,
    Paused,
    /// The VMM ended on its own with a failure (see the reason).
    Crashed,
    /// `vtd` cannot tell: a state file is corrupt (the reason names the
    /// file, the position and the parse error, and the way out). Start is
    /// refused; undefine too while a VMM for it may be alive.
    Unknown,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Stopped => "stopped",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Crashed => "crashed",
            VmState::Unknown => "unknown",
        }
    }

    /// Whether a VMM process is there.
    pub fn is_active(self) -> bool {
        matches!(self, VmState::Running | VmState::Paused)
    }
}

/// A VM with its state (`GET /vms`, `GET /vms/{name}`, action answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStatus {
    pub name: String,
    pub state: VmState,
    /// The VMM's process id while active.
    #[serde(default)]
    pub pid: Option<u32>,
    /// How the last run ended (or why the VM is in its state).
    #[serde(default)]
    pub reason: Option<String>,
    pub definition: VmDefinition,
    /// From the VMM, in `GET /vms/{name}` while active.
    #[serde(default)]
    pub counters: Option<VmmCounters>,
    /// How the running VMM is confined; `None` when it is not running or
    /// runs unconfined (`vtd --jail off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<Confinement>,
    /// The VMM's own barriers (seccomp, Landlock), from its `GET /vm/info`,
    /// in `GET /vms/{name}` while active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barriers: Option<crate::control::Confinement>,
    /// The running VMM's memory as the host counts it (guest RAM, the
    /// VMM's own, huge pages, KSM), in `GET /vms/{name}` while active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<crate::usage::MemoryUsage>,
    /// The running VM's balloon (from its VMM), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<crate::control::BalloonInfo>,
    /// Each NIC's tap, MAC and bridge as the host has them, in
    /// `GET /vms/{name}` (in definition order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<NicStatus>,
    /// Definition changes (`PATCH /vms/{name}`) made while the VM runs:
    /// they apply at its next start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_changes: bool,
}

/// One NIC of a VM as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicStatus {
    /// The tap interface (`vt` + hash of the VM name + `n` + index).
    pub tap: String,
    /// The guest's MAC: the defined one, else the one the VMM derives
    /// from the tap name.
    pub mac: String,
    /// The bridge the NIC belongs on (its network's, or `bridge=`).
    #[serde(default)]
    pub bridge: Option<String>,
    /// The tap exists, is up and is a port of `bridge` (checked with
    /// `ip link` when asked); false while the VM is stopped.
    pub attached: bool,
}

/// The cell a running VMM is in (see README, "Isolation").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Confinement {
    /// The VMM's own uid (and gid).
    pub uid: u32,
    /// The cgroup limits in force, as `file=value` (`memory.max=…`,
    /// `memory.limit_in_bytes=…`, `pids.max=…`, `cpu.weight=…`).
    pub cgroup_limits: Vec<String>,
    /// Controllers this host lacks, so those limits are not in force.
    #[serde(default)]
    pub cgroup_missing: Vec<String>,
}

/// One line of `GET /events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub vm: String,
    /// What happened: `defined`, `started`, `paused`, `resumed`, `stopped`,
    /// `crashed`, `rebooted`, `undefined`, `reattached`, `repaired`,
    /// `edited`, `rebooting` (a graceful reboot waits for the guest),
    /// `reboot-failed` (its restart failed; `reason` says why).
    pub event: String,
    pub state: VmState,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A definition that cannot describe a VM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error(
        "name must be 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ - and not start with . or -"
    )]
    Name,
    #[error("vCPU count must be between 1 and {MAX_VCPUS}, got {0}")]
    Vcpus(u32),
    #[error("memory must be between {MIN_MEMORY_MIB} MiB and {MAX_MEMORY_MIB} MiB, got {0} MiB")]
    Memory(u64),
    #[error("{0} path must be absolute: {1}")]
    NotAbsolute(&'static str, String),
    #[error("disk path must not contain ',': {0}")]
    DiskComma(String),
    #[error(
        "bridge name must be 1-15 characters of A-Z a-z 0-9 _ . - not starting with '-': {0:?}"
    )]
    Bridge(String),
    #[error("{0}")]
    Mac(String),
    #[error("{0}")]
    Nic(String),
    #[error("cpu.weight must be 1-10000, cpu.quota_percent 1-100000")]
    CpuTune,
    #[error("the kernel command line is {0} bytes; at most {MAX_CMDLINE_LEN} fit")]
    CmdlineLength(usize),
    #[error("the kernel command line must not contain a NUL byte")]
    CmdlineNul,
    #[error("the kernel command line must not begin with '-' (it would be read as a vt-vmm flag)")]
    CmdlineDash,
    #[error("{0} path must not contain a NUL byte")]
    PathNul(&'static str),
    #[error("memory: {0}")]
    MemoryOptions(crate::ConfigError),
    #[error("boot {0}: the firmware boots the disk's own bootloader; a kernel, initrd or command line needs boot kernel")]
    FirmwareWithKernel(&'static str),
    #[error("boot {0}: the firmware boots from a disk, and the VM has none")]
    FirmwareWithoutDisk(&'static str),
}

/// Whether `b` may name a bridge (an interface name that is also safe as
/// an argument of `ip` and a value in dnsmasq's configuration: 1-15 bytes
/// of `A-Z a-z 0-9 _ . -`, not starting with '-', not `.` or `..`).
pub fn check_bridge_name(b: &str) -> Result<(), String> {
    let chars = b
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
    if b.is_empty() || b.len() > 15 || !chars || b.starts_with('-') || b == "." || b == ".." {
        return Err(format!(
            "bridge name must be 1-15 characters of A-Z a-z 0-9 _ . - not starting with '-': {b:?}"
        ));
    }
    Ok(())
}

/// Whether `name` may name a VM (it also names a directory and a socket).
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl VmDefinition {
    /// Checks what can be checked without touching the host.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        if !valid_name(&self.name) {
            return Err(DefinitionError::Name);
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(DefinitionError::Vcpus(self.vcpus));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(DefinitionError::Memory(self.memory_mib));
        }
        self.memory
            .validate(self.memory_mib)
            .map_err(DefinitionError::MemoryOptions)?;
        let weight_ok = self.cpu.weight.is_none_or(|w| (1..=10_000).contains(&w));
        let quota_ok = self
            .cpu
            .quota_percent
            .is_none_or(|q| (1..=100_000).contains(&q));
        if !weight_ok || !quota_ok {
            return Err(DefinitionError::CpuTune);
        }
        if self.cmdline.len() > MAX_CMDLINE_LEN {
            return Err(DefinitionError::CmdlineLength(self.cmdline.len()));
        }
        if self.cmdline.contains('\0') {
            return Err(DefinitionError::CmdlineNul);
        }
        if self.cmdline.starts_with('-') {
            return Err(DefinitionError::CmdlineDash);
        }
        if self.boot.is_firmware() {
            let b = self.boot.as_str();
            // The serde default ("console=ttyS0") stands for "not given".
            let cmdline = !self.cmdline.is_empty() && self.cmdline != default_cmdline();
            if self.kernel.is_some() || self.initrd.is_some() || cmdline {
                return Err(DefinitionError::FirmwareWithKernel(b));
            }
            if self.disks.is_empty() {
                return Err(DefinitionError::FirmwareWithoutDisk(b));
            }
        }
        let abs = |what, p: &PathBuf| {
            if p.as_os_str().as_encoded_bytes().contains(&0) {
                return Err(DefinitionError::PathNul(what));
            }
            if p.is_absolute() {
                Ok(())
            } else {
                Err(DefinitionError::NotAbsolute(what, p.display().to_string()))
            }
        };
        if let Some(k) = &self.kernel {
            abs("kernel", k)?;
        }
        if let Some(i) = &self.initrd {
            abs("initrd", i)?;
        }
        for d in &self.disks {
            abs("disk", &d.path)?;
            if d.path.to_string_lossy().contains(',') {
                return Err(DefinitionError::DiskComma(d.path.display().to_string()));
            }
        }
        for n in &self.networks {
            match (&n.bridge, &n.network) {
                (Some(b), None) => {
                    check_bridge_name(b).map_err(|_| DefinitionError::Bridge(b.clone()))?
                }
                (None, Some(net)) if valid_name(net) => {}
                (None, Some(net)) => {
                    return Err(DefinitionError::Nic(format!("bad network name {net:?}")))
                }
                _ => {
                    return Err(DefinitionError::Nic(
                        "a NIC needs exactly one of bridge= and network=".into(),
                    ))
                }
            }
            if n.bridge.is_some() && (n.ip.is_some() || !n.peers.is_empty()) {
                return Err(DefinitionError::Nic(
                    "ip= and peers= need network= (a bridge= NIC is not filtered)".into(),
                ));
            }
            if let Some(p) = n.peers.iter().find(|p| !valid_name(p)) {
                return Err(DefinitionError::Nic(format!("peers: bad VM name {p:?}")));
            }
            if let Some(mac) = &n.mac {
                crate::parse_mac(mac).map_err(|e| DefinitionError::Mac(e.to_string()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> VmDefinition {
        serde_json::from_str(r#"{"name":"a","kernel":"/k"}"#).unwrap()
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let d = def();
        assert_eq!(
            (d.vcpus, d.memory_mib, d.cmdline.as_str()),
            (1, 256, "console=ttyS0")
        );
        d.validate().unwrap();
        let e = serde_json::from_str::<VmDefinition>(r#"{"name":"a","kernel":"/k","ram":1}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `ram`"), "{e}");
    }

    #[test]
    fn firmware_boot_needs_a_disk_and_no_kernel() {
        // A definition from before boot modes boots its kernel.
        assert_eq!(def().boot, crate::BootMode::Kernel);
        let j = r#"{"name":"a","boot":"bios","disks":[{"path":"/d.img"}]}"#;
        let mut d: VmDefinition = serde_json::from_str(j).unwrap();
        assert_eq!(d.boot, crate::BootMode::Bios);
        d.validate().unwrap();
        let stored = serde_json::to_string(&d).unwrap();
        assert!(stored.contains(r#""boot":"bios""#), "{stored}");
        assert!(!serde_json::to_string(&def()).unwrap().contains("boot"));
        d.cmdline = "root=/dev/vda1".into();
        assert_eq!(
            d.validate(),
            Err(DefinitionError::FirmwareWithKernel("bios"))
        );
        d.cmdline.clear();
        d.kernel = Some("/k".into());
        let e = d.validate().unwrap_err();
        assert_eq!(e, DefinitionError::FirmwareWithKernel("bios"));
        assert!(e.to_string().contains("needs boot kernel"), "{e}");
        d.kernel = None;
        d.initrd = Some("/i".into());
        assert_eq!(
            d.validate(),
            Err(DefinitionError::FirmwareWithKernel("bios"))
        );
        d.initrd = None;
        d.boot = crate::BootMode::Uefi;
        d.disks.clear();
        let e = d.validate().unwrap_err();
        assert_eq!(e, DefinitionError::FirmwareWithoutDisk("uefi"));
        assert!(e.to_string().contains("has none"), "{e}");
        assert!(serde_json::from_str::<VmDefinition>(r#"{"name":"a","boot":"cdrom"}"#).is_err());
    }

    #[test]
    fn names() {
        for ok in ["a", "my-vm.1_x", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".a",
            "-a",
            "a/b",
            "a b",
            "ä",
            &"x".repeat(65),
            "..",
            "a%2f",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn bounds_and_paths() {
        let mut d = def();
        d.vcpus = 0;
        assert_eq!(d.validate(), Err(DefinitionError::Vcpus(0)));
        d.vcpus = 2;
        d.memory_mib = 1;
        assert_eq!(d.validate(), Err(DefinitionError::Memory(1)));
        d.memory_mib = 64;
        d.kernel = Some("k".into());
        assert!(matches!(
            d.validate(),
            Err(DefinitionError::NotAbsolute("kernel", _))
        ));
        d.kernel = Some("/k".into());
        d.networks.push(NetworkSpec {
            bridge: Some("a/b".into()),
            ..Default::default()
        });
        assert!(matches!(d.validate(), Err(DefinitionError::Bridge(_))));
    }

    #[test]
    fn command_lines_and_nul_bytes_are_checked_at_definition() {
        let mut d = def();
        d.cmdline = "x".repeat(MAX_CMDLINE_LEN);
        d.validate().unwrap();
        d.cmdline = "x".repeat(100_000);
        assert_eq!(d.validate(), Err(DefinitionError::CmdlineLength(100_000)));
        d.cmdline = "console=ttyS0\0x".into();
        assert_eq!(d.validate(), Err(DefinitionError::CmdlineNul));
        d.cmdline = "-x".into();
        assert_eq!(d.validate(), Err(DefinitionError::CmdlineDash));
        d.cmdline = "console=ttyS0".into();
        d.kernel = Some("/k\0".into());
        assert_eq!(d.validate(), Err(DefinitionError::PathNul("kernel")));
    }

    #[test]
    fn bridge_names_are_plain_interface_names() {
        for good in [
            "br0",
            "vtbr-lan",
            "virbr0.10",
            "a_b",
            "x".repeat(15).as_str(),
        ] {
            check_bridge_name(good).unwrap();
        }
        for bad in [
            "",
            "-br",
            "br0\nlisten-address=0.0.0.0",
            "br 0",
            "br:0",
            "br\u{e9}",
            ".",
            "..",
            "x".repeat(16).as_str(),
        ] {
            assert!(check_bridge_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}

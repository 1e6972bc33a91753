//! The `vt-vmm` control socket (`--api-socket PATH`): JSON over HTTP/1.1.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/vm/info` | — | 200 [`VmmInfo`] |
//! | GET | `/vm/counters` | — | 200 [`VmmCounters`] |
//! | PUT | `/vm/pause` | — | 204; 409 when already paused |
//! | PUT | `/vm/resume` | — | 204; 409 when not paused |
//! | PUT | `/vm/stop` | — | 204, then the VMM exits with status 0 |
//! | PUT | `/vm/reboot` | — | 204: a hard reset (the VM is rebuilt with `--on-reboot restart`, else the VMM exits 0) |
//! | PUT | `/vm/power-button` | — | 204: the ACPI power button was pressed (GED interrupt); the guest decides |
//! | PUT | `/vm/console` | bytes | 204: the bytes are queued as serial input |
//!
//! Errors are [`ErrorBody`] with a 4xx/5xx status. `POST` is accepted
//! wherever `PUT` is.

use serde::{Deserialize, Serialize};

use crate::VmConfig;

pub const INFO: &str = "/vm/info";
pub const COUNTERS: &str = "/vm/counters";
pub const PAUSE: &str = "/vm/pause";
pub const RESUME: &str = "/vm/resume";
pub const STOP: &str = "/vm/stop";
pub const REBOOT: &str = "/vm/reboot";
pub const POWER_BUTTON: &str = "/vm/power-button";
pub const CONSOLE: &str = "/vm/console";
/// `GET` (a [`BalloonInfo`]) and `PUT` (a [`BalloonRequest`]) the balloon.
pub const BALLOON: &str = "/vm/balloon";

/// Whether the vCPUs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// The VMM is building the VM (first boot, or a rebuild after a
    /// reset): no guest code runs yet, commands wait until it is built.
    Starting,
    Running,
    Paused,
}

/// `GET /vm/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmInfo {
    pub state: RunState,
    /// The VMM's process id.
    pub pid: u32,
    pub config: VmConfig,
    /// Which of the VMM's own barriers are in force.
    #[serde(default)]
    pub confinement: Confinement,
}

/// `vt-vmm --seccomp`: what a system call outside a thread's allow-list does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// The process is killed (SIGSYS).
    On,
    /// The call is allowed and logged by the kernel (audit / kernel log).
    Log,
    /// No filter at all (debugging; also what a VMM that does not report
    /// its confinement had).
    #[default]
    Off,
}

/// Whether the VMM's Landlock ruleset is in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockState {
    /// `--landlock off`.
    #[default]
    Off,
    /// Every restriction asked for is enforced.
    Enforced,
    /// Enforced with what this kernel's Landlock ABI supports (best effort).
    PartiallyEnforced,
    /// The kernel has no Landlock (the VMM runs without it and said so).
    Unsupported,
}

/// The barriers a VMM put up around itself (`GET /vm/info`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confinement {
    /// The seccomp mode every thread's filter uses.
    pub seccomp: SeccompMode,
    /// The Landlock ruleset's state.
    pub landlock: LandlockState,
    /// The kernel's Landlock ABI version (0 when it has none).
    pub landlock_abi: u8,
}

/// `GET /vm/counters`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmCounters {
    /// Milliseconds since the VMM started.
    pub uptime_ms: u64,
    /// Times the VM was built (1 + guest reboots with `--on-reboot restart`).
    pub boots: u64,
    /// Port I/O and MMIO exits handled, all vCPUs, all boots.
    pub io_exits: u64,
    /// Pause requests served.
    pub pauses: u64,
    /// Per vCPU, memory, per disk and per NIC counters.
    #[serde(default)]
    pub detail: crate::counters::CounterDetail,
}

/// `PUT /vm/balloon`: the balloon's new target size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonRequest {
    /// MiB of guest RAM the guest should hand back (0: all of it back to
    /// the guest); at most the guest's memory.
    pub size_mib: u64,
}

/// `GET /vm/balloon`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonInfo {
    /// The target the host set, MiB.
    pub size_mib: u64,
    /// What the guest's driver says the balloon holds, MiB.
    pub actual_mib: u64,
    /// Guest RAM given back to the host since the VMM started (inflated
    /// and reported pages), MiB.
    pub freed_mib: u64,
    /// 4 KiB pages the driver named outside guest RAM (ignored).
    pub refused_pages: u64,
    /// The guest's memory statistics, as its driver last sent them (with
    /// `--balloon stats=on`; each `GET` also asks for fresh ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<GuestMemoryStats>,
}

/// The guest's memory statistics (virtio-balloon statistics queue, spec
/// 5.5.6.3): sizes in bytes, the rest counts; absent when the guest did
/// not send them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestMemoryStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_faults: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor_faults: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_caches: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_allocations: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_failures: Option<u64>,
}

/// Any error answer (the control socket and `vtd` alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: String,
}

//! `GET /vms/{name}/stats` on `vtd` (like `virsh domstats`): one VM's
//! statistics at one moment: host CPU time, the host's view of its memory,
//! and its VMM's counters ([`crate::control::VmmCounters`]). Two of them
//! a known time apart give rates (`vt top`).

use serde::{Deserialize, Serialize};

use crate::control::VmmCounters;
use crate::manager::VmState;
use crate::usage::MemoryUsage;

/// Where [`VmStats::cpu_time_ns`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuSource {
    /// The VM's cgroup v2 `cpu.stat` (`usage_usec`): every process of its
    /// cell.
    Cgroup,
    /// The VMM process: `/proc/PID/stat` (`utime` + `stime`, clock
    /// ticks) or, when more, its threads' `/proc/PID/task/*/schedstat`
    /// run times (ns).
    Proc,
}

/// One VM's statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStats {
    /// The VM's name.
    pub name: String,
    /// Its lifecycle state when these were read.
    pub state: VmState,
    /// When these were read: milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The number of vCPUs in the VM's definition.
    pub vcpus: u32,
    /// The guest RAM in the VM's definition, MiB.
    pub memory_mib: u64,
    /// The disks' names as the guest sees them (`vda`, `vdb`, ...), in the
    /// order of the counters' `disks`.
    pub disk_names: Vec<String>,
    /// Host CPU time the VM used since its VMM started, ns (while active).
    #[serde(default)]
    pub cpu_time_ns: Option<u64>,
    /// Where `cpu_time_ns` was read (present exactly when it is).
    #[serde(default)]
    pub cpu_source: Option<CpuSource>,
    /// The VMM process's memory as the host counts it (while active).
    #[serde(default)]
    pub memory: Option<MemoryUsage>,
    /// The VMM's counters (while active and answering).
    #[serde(default)]
    pub counters: Option<VmmCounters>,
}

/// The guest's name of disk `index`: `vda`, ..., `vdz`, `vdaa`, ...
/// (Linux's virtio_blk naming).
pub fn disk_name(index: usize) -> String {
    let mut n = index;
    let mut letters = Vec::new();
    loop {
        letters.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    letters.reverse();
    format!("vd{}", String::from_utf8_lossy(&letters))
}

#[cfg(test)]
mod tests {
    #[test]
    fn disk_names_follow_linux() {
        let names: Vec<String> = [0, 1, 25, 26, 27, 701]
            .iter()
            .map(|&i| super::disk_name(i))
            .collect();
        assert_eq!(names, ["vda", "vdb", "vdz", "vdaa", "vdab", "vdzz"]);
    }
}

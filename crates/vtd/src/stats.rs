//! One VM's statistics ([`api::stats::VmStats`]): its VMM's counters, the
//! host's view of its memory (`/proc/PID/smaps`) and its CPU time (its
//! cgroup's `cpu.stat`, else `/proc/PID/stat`).

use api::control::{self as proto, VmmCounters};
use api::stats::{disk_name, CpuSource, VmStats};
use api::usage::MemoryUsage;

use crate::vm::Vm;

/// Reads VM `vm`'s statistics now.
pub fn read(vm: &Vm) -> VmStats {
    let (state, pid) = vm.run_state();
    let def = vm.def();
    let live = state.is_active();
    let timestamp_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let pid = pid.filter(|_| live);
    let counters = live
        .then(|| vm.ask_vmm(proto::COUNTERS))
        .flatten()
        .filter(|r| r.status == 200)
        .and_then(|r| serde_json::from_slice::<VmmCounters>(&r.body).ok());
    let memory = pid.and_then(|p| MemoryUsage::read(p, def.memory_mib).ok());
    let cpu = pid.and_then(cpu_time);
    VmStats {
        name: def.name.clone(),
        state,
        timestamp_ms,
        vcpus: def.vcpus,
        memory_mib: def.memory_mib,
        disk_names: (0..def.disks.len()).map(disk_name).collect(),
        cpu_time_ns: cpu.map(|c| c.0),
        cpu_source: cpu.map(|c| c.1),
        memory,
        counters,
    }
}

/// CPU time of VMM `pid` (ns) and where it was read.
fn cpu_time(pid: u32) -> Option<(u64, CpuSource)> {
    if let Some(ns) = cgroup_cpu_ns(pid) {
        return Some((ns, CpuSource::Cgroup));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = proc_cpu_ns(&stat)?;
    // Clock ticks are 10 ms: the live threads' schedstat run times (ns)
    // are finer; the ticks also count threads that ended.
    let live: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Some((ticks.max(live), CpuSource::Proc))
}

/// `usage_usec` of the process's own cgroup v2 group, when that is a VM's
/// (`/vt/...`): the whole cell, not only the VMM.
fn cgroup_cpu_ns(pid: u32) -> Option<u64> {
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = groups.lines().find_map(|l| l.strip_prefix("0::"))?;
    if !path.starts_with("/vt/") {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cpu.stat")).ok()?;
    let usec: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))?
        .trim()
        .parse()
        .ok()?;
    Some(usec * 1000)
}

/// `utime + stime` of a `/proc/PID/stat` text, ns (fields 14 and 15, in
/// clock ticks; the command name, field 2, may hold spaces and parens).
fn proc_cpu_ns(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some((utime + stime) * (1_000_000_000 / hz))
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_stat_cpu_time_survives_odd_names() {
        let stat = "42 (vt vmm) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0";
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(super::proc_cpu_ns(stat), Some(300 * (1_000_000_000 / hz)));
        assert_eq!(super::proc_cpu_ns("garbage"), None);
        assert_eq!(super::proc_cpu_ns("1 (a) S 1"), None);
    }
}

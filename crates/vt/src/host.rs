//! `vt host memory`: this host's memory-sharing settings as its kernel
//! states them in sysfs (KSM, transparent huge pages, hugetlbfs pools),
//! read where `vt` runs (the host of `vtd`'s Unix socket).

use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;

use crate::cmd::output::{print_json, Format};

const KSM: &str = "/sys/kernel/mm/ksm";
const THP: &str = "/sys/kernel/mm/transparent_hugepage";
const HUGE: &str = "/sys/kernel/mm/hugepages";

/// `vt host ...`.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// KSM (same-page merging) state, transparent huge page mode and the
    /// huge page pools, with how to change them.
    Memory,
}

/// The host's memory settings.
#[derive(Debug, Serialize)]
struct HostMemory {
    /// `ksmd` state from /sys/kernel/mm/ksm/run: `stopped`, `running`,
    /// `unmerging` (`None`: no KSM in this kernel).
    ksm: Option<&'static str>,
    /// /sys/kernel/mm/ksm's counters (pages_sharing, pages_shared, ...).
    ksm_counters: Vec<(String, String)>,
    /// The THP mode in force (`always`, `madvise`, `never`).
    thp: Option<String>,
    /// Huge page pools: (size in KiB, total, free).
    hugepage_pools: Vec<(u64, u64, u64)>,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn host_memory() -> HostMemory {
    let ksm = read(&format!("{KSM}/run")).map(|r| match r.as_str() {
        "0" => "stopped",
        "1" => "running",
        _ => "unmerging",
    });
    let ksm_counters = [
        "pages_sharing",
        "pages_shared",
        "pages_unshared",
        "full_scans",
        "general_profit",
        "pages_to_scan",
        "sleep_millisecs",
    ]
    .iter()
    .filter_map(|k| read(&format!("{KSM}/{k}")).map(|v| (k.to_string(), v)))
    .collect();
    // `always [madvise] never`: the bracketed one is in force.
    let thp = read(&format!("{THP}/enabled")).and_then(|s| {
        s.split_whitespace()
            .find_map(|w| w.strip_prefix('[')?.strip_suffix(']').map(String::from))
    });
    let mut hugepage_pools: Vec<(u64, u64, u64)> = std::fs::read_dir(HUGE)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kib = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let n = |f: &str| read(&format!("{HUGE}/{name}/{f}")).and_then(|v| v.parse().ok());
            Some((kib, n("nr_hugepages")?, n("free_hugepages")?))
        })
        .collect();
    hugepage_pools.sort();
    HostMemory {
        ksm,
        ksm_counters,
        thp,
        hugepage_pools,
    }
}

/// Runs a `vt host` command.
pub fn run(cmd: HostCommand, output: Format) -> anyhow::Result<ExitCode> {
    let HostCommand::Memory = cmd;
    let m = host_memory();
    if output == Format::Json {
        print_json(&m);
        return Ok(ExitCode::SUCCESS);
    }
    match m.ksm {
        None => println!("KSM:        not in this kernel"),
        Some(state) => {
            println!("KSM:        {state} (VMs opt in with `vt create --memory MIB,merge=on`)");
            for (k, v) in &m.ksm_counters {
                println!("  {k:<16} {v}");
            }
            if state != "running" {
                println!("  turn ksmd on: echo 1 > {KSM}/run");
            }
        }
    }
    match &m.thp {
        None => println!("THP:        not in this kernel"),
        Some(mode) => {
            println!("THP:        {mode} (guest RAM is advised MADV_HUGEPAGE unless thp=off)")
        }
    }
    if m.hugepage_pools.is_empty() {
        println!("Huge pages: no pools");
    }
    for (kib, total, free) in &m.hugepage_pools {
        println!(
            "Huge pages: {} MiB pages: {total} in the pool, {free} free (grow: echo N > {HUGE}/hugepages-{kib}kB/nr_hugepages)",
            kib / 1024
        );
    }
    Ok(ExitCode::SUCCESS)
}

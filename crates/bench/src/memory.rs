//! `vt-bench memory`: what guests cost the host in memory, in the lab,
//! vt-vmm against QEMU (microvm) in one lab run (see `memory/l1.sh`).
//!
//! - density: N identical idle Linux guests at once with page merging
//!   (KSM) off, on, and on with virtio-balloon free page reporting; host
//!   memory as the VMMs' summed PSS and as the drop of the lab host's
//!   `MemFree`;
//! - VMM overhead: each VMM's RSS minus the RSS of its guest RAM mapping;
//! - faults: one guest writes a tmpfs file twice (first touch of guest
//!   pages, then a rewrite of the same pages) with THP, without, and on
//!   hugetlbfs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use lab::CpioWriter;

use crate::host::{self, Scratch};
use crate::stats::{summarize, Series, Table};

const L1_SCRIPT: &str = include_str!("../memory/l1.sh");
const GUEST_SCRIPT: &str = include_str!("../memory/guest.sh");

#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// Idle guests at once in the density cases
    #[arg(long, default_value_t = 4)]
    pub guests: u32,
    /// Memory of each density guest, MiB
    #[arg(long, default_value_t = 256)]
    pub guest_mib: u32,
    /// Rounds of the density cases (each: off, on, on + reporting; vt-vmm then QEMU)
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Longest wait for ksmd per merging case, seconds (else 3 full scans)
    #[arg(long, default_value_t = 60)]
    pub ksm_wait: u32,
    /// Rounds of the fault cases (THP, no THP, hugetlbfs; vt-vmm then QEMU)
    #[arg(long, default_value_t = 3)]
    pub fault_rounds: u32,
    /// Our VMM [default: vt-vmm next to vt-bench]
    #[arg(long, value_name = "PATH")]
    pub vmm: Option<PathBuf>,
    /// Lab time limit in seconds
    #[arg(long, default_value_t = 1500)]
    pub timeout: u64,
    /// Write the section into this report (e.g. BENCHMARKS.md) instead of stdout
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Render the section from a saved lab output (target/vt-bench-memory.log)
    /// instead of running the lab; the other options must be the run's
    #[arg(long, value_name = "FILE")]
    pub from_log: Option<PathBuf>,
}

/// `VT-BENCH who case key=value` lines → (who, case, key) → samples.
type Samples = BTreeMap<(String, String, String), Vec<f64>>;

pub fn parse(stdout: &str) -> Samples {
    let mut out = Samples::new();
    for line in stdout.lines() {
        let Some(rest) = line.trim_end_matches('\r').strip_prefix("VT-BENCH ") else {
            continue;
        };
        let mut words = rest.splitn(3, ' ');
        let (Some(who), Some(case), Some(kv)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        if let Ok(v) = v.trim().parse::<f64>() {
            out.entry((who.into(), case.into(), k.into()))
                .or_default()
                .push(v);
        }
    }
    out
}

/// The guest initramfs plus `/vt-test.sh`.
fn initramfs(dir: &Path) -> anyhow::Result<PathBuf> {
    let arts = lab::artifacts::ensure(None)?;
    let mut bytes = std::fs::read(&arts.initramfs).context("reading the guest initramfs")?;
    // The kernel wants each appended archive 4-byte aligned.
    bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    let mut cpio = CpioWriter::new(Vec::new());
    cpio.file("vt-test.sh", 0o755, GUEST_SCRIPT.as_bytes())?;
    bytes.extend(cpio.finish()?);
    let path = dir.join("initramfs-memory.cpio.gz");
    std::fs::write(&path, bytes)?;
    Ok(path)
}

const CASES: [(&str, &str); 3] = [
    ("off", "merge off"),
    ("on", "merge on"),
    ("fpr", "merge on + free page reporting"),
];

const FAULTS: [(&str, &str); 3] = [
    ("thp", "THP advised"),
    ("nothp", "no THP"),
    ("huge", "hugetlbfs 2M"),
];

/// Runs the lab and returns the Markdown section (unwrapped).
pub fn run(a: &MemoryArgs) -> anyhow::Result<String> {
    anyhow::ensure!(
        a.guests >= 1 && a.guest_mib >= 128,
        "--guests ≥ 1, --guest-mib ≥ 128"
    );
    if let Some(log) = &a.from_log {
        let text =
            std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
        return render(a, &text);
    }
    let vmm = a.vmm.clone().unwrap_or_else(host::default_vmm);
    let dir = Scratch::new("memory")?;
    let initrd = initramfs(dir.path())?;
    let l1 = dir.path().join("l1.sh");
    std::fs::write(&l1, L1_SCRIPT)?;
    let script = format!(
        "N={} GUEST_MIB={} ROUNDS={} KSM_WAIT={} FAULT_ROUNDS={} sh \"$VTLAB_ROOT/vt/l1.sh\"",
        a.guests, a.guest_mib, a.rounds, a.ksm_wait, a.fault_rounds
    );
    let lab = host::lab_side_by_side(&vmm, &initrd, &l1, a.timeout);
    let t0 = Instant::now();
    let out = lab.run_auto(&script).context("lab run")?;
    let lab_s = t0.elapsed().as_secs();
    let log = lab::artifacts::repo_root().join("target/vt-bench-memory.log");
    let text = format!("{}\n{LAB_SECONDS}{lab_s}\n", out.stdout);
    if std::fs::write(&log, &text).is_ok() {
        eprintln!("vt-bench: lab output in {}", log.display());
    }
    anyhow::ensure!(
        out.exit_code == 0,
        "lab exit {}:\n{}",
        out.exit_code,
        out.stdout
    );
    render(a, &text)
}

/// The line the lab's wall-clock time is saved in, in the saved output.
const LAB_SECONDS: &str = "VT-LAB-SECONDS ";

/// The section from the lab's output (with its [`LAB_SECONDS`] line).
fn render(a: &MemoryArgs, stdout: &str) -> anyhow::Result<String> {
    let s = parse(stdout);
    anyhow::ensure!(
        s.contains_key(&("vt".into(), "off".into(), "complete".into())),
        "no complete vt-vmm density case in the lab output:\n{stdout}"
    );
    let info: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("VT-INFO "))
        .filter(|l| *l != "done")
        .map(str::to_string)
        .collect();
    let lab_s = stdout
        .lines()
        .find_map(|l| l.strip_prefix(LAB_SECONDS))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .context("no lab time in the output")?;
    Ok(report(a, &s, &info, lab_s))
}

fn get(s: &Samples, who: &str, case: &str, key: &str) -> Vec<f64> {
    s.get(&(who.to_string(), case.to_string(), key.to_string()))
        .cloned()
        .unwrap_or_default()
}

fn mib(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|x| x / 1024.0).collect()
}

fn median(v: &[f64]) -> String {
    summarize(v).map_or_else(|| "–".into(), |m| format!("{:.0}", m.median))
}

fn report(a: &MemoryArgs, s: &Samples, info: &[String], lab_s: u64) -> String {
    let command = format!(
        "vt-bench memory --guests {} --guest-mib {} --rounds {} --ksm-wait {} --fault-rounds {}",
        a.guests, a.guest_mib, a.rounds, a.ksm_wait, a.fault_rounds
    );
    let mut density = Table {
        title: format!(
            "Density: {} idle identical Linux guests of {} MiB at once (lab, lower is better)",
            a.guests, a.guest_mib
        ),
        command: command.clone(),
        ours_cmd: format!(
            "vt-vmm --memory {} --memory-merge off|on [--balloon free_page_reporting=on] (unjailed; see crates/bench/memory/l1.sh)",
            a.guest_mib
        ),
        qemu_cmd: format!(
            "qemu-system-x86_64 -M microvm,pcie=on,mem-merge=off|on -m {} -smp 1 [-device virtio-balloon-pci,free-page-reporting=on]",
            a.guest_mib
        ),
        notes: Vec::new(),
        series: Vec::new(),
    };
    for (case, label) in CASES {
        let mut sum = Series::new(&format!("{label}: host memory, VMMs' PSS summed"), "MiB");
        sum.ours = mib(get(s, "vt", case, "pss_sum_kb"));
        sum.qemu = mib(get(s, "qemu", case, "pss_sum_kb"));
        let mut drop = Series::new(
            &format!("{label}: host MemFree drop (KVM's kernel memory too)"),
            "MiB",
        );
        drop.ours = mib(get(s, "vt", case, "free_drop_kb"));
        drop.qemu = mib(get(s, "qemu", case, "free_drop_kb"));
        let mut per = Series::new(&format!("{label}: PSS per VM"), "MiB");
        per.ours = mib(get(s, "vt", case, "pss_kb"));
        per.qemu = mib(get(s, "qemu", case, "pss_kb"));
        density.series.extend([sum, drop, per]);
        if case != "off" {
            let k = |who: &str, key: &str| median(&get(s, who, case, key));
            density.notes.push(format!(
                "{label}: ksmd ran {} s ({} full scans) for vt-vmm, {} s ({}) for QEMU; \
                 pages_sharing {} vs {}, pages_shared {} vs {}",
                k("vt", "ksm_wait_s"),
                k("vt", "ksm_full_scans"),
                k("qemu", "ksm_wait_s"),
                k("qemu", "ksm_full_scans"),
                k("vt", "ksm_pages_sharing"),
                k("qemu", "ksm_pages_sharing"),
                k("vt", "ksm_pages_shared"),
                k("qemu", "ksm_pages_shared"),
            ));
        }
    }
    let boot = |who: &str| {
        let all: Vec<f64> = CASES
            .iter()
            .flat_map(|(c, _)| get(s, who, c, "boot_all_s"))
            .collect();
        summarize(&all).map_or_else(|| "–".into(), |m| format!("{:.1}", m.median))
    };
    density.notes.push(format!(
        "all {} guests up (median over cases): vt-vmm {} s, QEMU {} s; then 10 s idle before ksmd starts",
        a.guests,
        boot("vt"),
        boot("qemu")
    ));
    let mut over = Table {
        title: "VMM overhead: RSS minus the guest RAM mapping's RSS (idle guest, merge off)".into(),
        command: command.clone(),
        ours_cmd: density.ours_cmd.clone(),
        qemu_cmd: density.qemu_cmd.clone(),
        notes: vec![format!(
            "one sample per VM ({} per round); the target for vt-vmm is ≤ 3 MiB",
            a.guests
        )],
        series: Vec::new(),
    };
    for (case, label) in CASES {
        let mut o = Series::new(&format!("overhead, {label}"), "MiB");
        o.ours = mib(get(s, "vt", case, "overhead_kb"));
        o.qemu = mib(get(s, "qemu", case, "overhead_kb"));
        over.series.push(o);
    }
    let mut guest = Series::new("guest RAM resident (merge off)", "MiB");
    guest.ours = mib(get(s, "vt", "off", "guest_rss_kb"));
    guest.qemu = mib(get(s, "qemu", "off", "guest_rss_kb"));
    over.series.push(guest);
    let mut faults = Table {
        title: "Guest writes 256 MiB to tmpfs, twice (512 MiB guest, lab, lower is better)".into(),
        command,
        ours_cmd: "vt-vmm --memory 512 --memory-thp on|off | --memory-hugepages 2M".into(),
        qemu_cmd: "qemu-system-x86_64 -M microvm -m 512 [-object memory-backend-memfd,hugetlb=on,hugetlbsize=2M]; no THP: the lab host's THP set to never (QEMU always advises it)".into(),
        notes: vec![
            "hugetlbfs: vt-vmm maps guest RAM with MAP_POPULATE (all huge pages taken at start, \
             no SIGBUS later), QEMU without -mem-prealloc faults them on first touch"
                .into(),
        ],
        series: Vec::new(),
    };
    for (case, label) in FAULTS {
        let c = format!("fault-{case}");
        let mut f1 = Series::new(&format!("{label}: first write (host faults)"), "ms");
        f1.ours = get(s, "vt", &c, "fill1_ms");
        f1.qemu = get(s, "qemu", &c, "fill1_ms");
        let mut f2 = Series::new(&format!("{label}: rewrite of the same pages"), "ms");
        f2.ours = get(s, "vt", &c, "fill2_ms");
        f2.qemu = get(s, "qemu", &c, "fill2_ms");
        faults.series.extend([f1, f2]);
        let k = |who: &str, key: &str| median(&mib(get(s, who, &c, key)));
        faults.notes.push(format!(
            "{label}: AnonHugePages {} MiB vt-vmm, {} MiB QEMU; HugetlbPages {} vs {} MiB",
            k("vt", "anon_huge_kb"),
            k("qemu", "anon_huge_kb"),
            k("vt", "hugetlb_kb"),
            k("qemu", "hugetlb_kb"),
        ));
    }
    let mut md = String::from("## Memory: density, VMM overhead, huge pages (lab)\n\n");
    md.push_str(&format!(
        "Generated {} by `{}` at revision {}, one lab run of {} s (QEMU TCG with nested SVM, \
         3 GiB, 2 vCPUs; lab host: {}). Our VMM and QEMU 'microvm' boot the same kernel and \
         initramfs, one vCPU each, one case after the other.\n\n",
        host::utc_now(),
        density.command,
        host::git_revision().unwrap_or_else(|| "unknown".into()),
        lab_s,
        info.join("; ")
    ));
    for t in [&density, &over, &faults] {
        md.push_str(&crate::stats::markdown(t));
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_keyed_by_vmm_case_and_key() {
        let s = parse(
            "VT-BENCH vt off pss_kb=100\r\nVT-BENCH vt off pss_kb=300\nVT-BENCH qemu fault-thp fill1_ms=7\nVT-BENCH vt on x=notanumber\nnoise\n",
        );
        assert_eq!(get(&s, "vt", "off", "pss_kb"), vec![100.0, 300.0]);
        assert_eq!(get(&s, "qemu", "fault-thp", "fill1_ms"), vec![7.0]);
        assert!(get(&s, "vt", "on", "x").is_empty());
        assert_eq!(mib(vec![2048.0]), vec![2.0]);
    }
}

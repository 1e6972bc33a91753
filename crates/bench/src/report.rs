//! `vt-bench all`: every benchmark, then BENCHMARKS.md.

use crate::host::{self, Facts};
use crate::linux::{self, LinuxArgs};
use crate::rss::{self, RssArgs};
use crate::stats::{self, summarize, Table};
use crate::tiny::{self, TinyArgs};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct AllArgs {
    /// Where to write the report
    #[arg(long, value_name = "FILE", default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 20)]
    pub tiny_runs: usize,
    #[arg(long, default_value_t = 7)]
    pub rss_runs: usize,
    #[arg(long, default_value_t = 5)]
    pub linux_runs: usize,
    /// Hand-written analysis (Markdown) to include at the end
    #[arg(long, value_name = "FILE")]
    pub notes: Option<PathBuf>,
    /// Skip the lab (Linux) benchmark
    #[arg(long)]
    pub no_linux: bool,
    /// Our VMM [default: vt-vmm next to vt-bench]
    #[arg(long, value_name = "PATH")]
    pub vmm: Option<PathBuf>,
    /// QEMU binary (host runs; the lab always carries /usr/bin/qemu-system-x86_64)
    #[arg(long, value_name = "PATH", default_value = host::DEFAULT_QEMU)]
    pub qemu: String,
}

/// The targets (Firecracker's published figures, not measured here).
const FC_START_MS: f64 = 12.0;
const FC_OVERHEAD_MIB: f64 = 4.0;

pub fn all(args: &AllArgs) -> anyhow::Result<()> {
    let vmm = args.vmm.clone().unwrap_or_else(host::default_vmm);
    let notes = match &args.notes {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let date = host::utc_now();
    let facts = Facts::gather(&args.qemu);
    eprintln!("vt-bench: tiny ({} runs each)", args.tiny_runs);
    let tiny = tiny::run(&TinyArgs {
        runs: args.tiny_runs,
        warmup: 2,
        vmm: Some(vmm.clone()),
        qemu: args.qemu.clone(),
    })?;
    eprintln!("vt-bench: rss ({} runs each)", args.rss_runs);
    let rss = rss::run(&RssArgs {
        runs: args.rss_runs,
        settle_ms: 200,
        vmm: Some(vmm.clone()),
        qemu: args.qemu.clone(),
    })?;
    let linux = if args.no_linux {
        None
    } else {
        eprintln!("vt-bench: linux in the lab ({} runs each)", args.linux_runs);
        Some(linux::run(&LinuxArgs {
            runs: args.linux_runs,
            warmup: 1,
            vmm: Some(vmm.clone()),
            jail: false,
            lab_memory: 3072,
            timeout: 1500,
        })?)
    };
    let (lab_facts, linux_tables) = match linux {
        Some(r) => (Some(r.facts), r.tables),
        None => (None, Vec::new()),
    };
    let md = render(&Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        date,
        revision: host::git_revision(),
        host: facts,
        lab: lab_facts,
        tiny,
        rss,
        linux: linux_tables,
        notes,
    });
    // Keep the `vt-bench io` and `api` sections, which this run does not measure.
    let mut md = md;
    for name in ["io", "api"] {
        if let Some(s) = crate::section::existing(&args.out, name) {
            md = md + "\n" + &s;
        }
    }
    std::fs::write(&args.out, md).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("vt-bench: wrote {}", args.out.display());
    Ok(())
}

pub struct Report {
    pub command: String,
    pub date: String,
    pub revision: Option<String>,
    pub host: Facts,
    pub lab: Option<Facts>,
    pub tiny: Table,
    pub rss: Table,
    pub linux: Vec<Table>,
    pub notes: Option<String>,
}

type FactField = fn(&Facts) -> String;

fn median(t: &Table, metric: &str, ours: bool) -> Option<f64> {
    let s = t.series(metric)?;
    summarize(if ours { &s.ours } else { &s.qemu }).map(|s| s.median)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**NOT met**"
    }
}

pub fn render(r: &Report) -> String {
    let mut m = String::from("# VT System benchmarks\n\n");
    m.push_str(&format!(
        "Generated {} by `{}` (crate `crates/bench`){}. Every number below comes from that one \
         run; rerun the command to refresh the whole file.\n\n",
        r.date,
        r.command,
        r.revision
            .as_ref()
            .map_or(String::new(), |v| format!(" at revision {v}"))
    ));
    m.push_str(
        "Method: each benchmark runs our VMM (`vt-vmm`) and QEMU side by side in the same run, \
         interleaved (ours, QEMU, ours, QEMU, ...), after unmeasured warm-up runs. Cells give the \
         **median**, the p90 (nearest rank) and min–max; `ours / QEMU` is the ratio of the \
         medians (below 1 = VT System is faster or smaller). Times run from a monotonic clock \
         read just before the VMM is spawned. These machines are noisy (2 cores, nested or \
         software virtualization), so only ratios from the same run mean much.\n\n",
    );
    m.push_str("## Machines\n\n| | host (tiny, rss) | lab L1 (Linux) |\n|---|---|---|\n");
    let lab = |f: FactField| r.lab.as_ref().map_or("not run".into(), f);
    let rows: [(&str, FactField); 6] = [
        ("CPU", |f| f.cpu_model.clone()),
        ("cores", |f| f.cpus.to_string()),
        ("kernel", |f| f.kernel.clone()),
        ("/dev/kvm", |f| f.kvm.clone()),
        ("QEMU", |f| f.qemu_version.clone()),
        ("load average at start", |f| f.load.clone()),
    ];
    for (name, get) in rows {
        m.push_str(&format!("| {name} | {} | {} |\n", get(&r.host), lab(get)));
    }
    m.push_str(
        "\nThe host's /dev/kvm is PVM (software virtualization): tiny guests run on it, stock \
         Linux does not, so Linux is measured in the lab: QEMU TCG emulating an AMD EPYC-Milan \
         with SVM + NPT, whose kvm_amd gives a real (emulated, slow) hardware /dev/kvm. Lab times \
         are therefore many times longer than on real hardware; compare the ratios.\n\n",
    );
    m.push_str("## 1. Tiny guest: start to first output, and to exit\n\n");
    m.push_str(&stats::markdown(&r.tiny));
    m.push_str("\n## 2. Memory: VMM RSS minus guest memory touched\n\n");
    m.push_str(&stats::markdown(&r.rss));
    m.push_str("\n## 3. Stock Linux to init (in the lab)\n\n");
    if r.linux.is_empty() {
        m.push_str("Not run (`--no-linux`).\n");
    }
    for t in &r.linux {
        m.push_str(&stats::markdown(t));
        m.push('\n');
    }
    m.push_str(&targets(r));
    m.push_str(&losses(r));
    if let Some(n) = &r.notes {
        m.push('\n');
        m.push_str(n.trim_end());
        m.push('\n');
    }
    m
}

fn targets(r: &Report) -> String {
    let mut m = String::from("\n## Targets\n\n");
    m.push_str(
        "Firecracker was **not run here**; its figures are only cited from its published \
         SPECIFICATION.md (measured by its authors on an i3.metal host): VMM start ~12 ms \
         wall-clock typical (up to its API socket, 6–60 ms spread), VMM memory overhead \
         ≤ 5 MiB. The issue's targets round these to ~12 ms and ~4 MB. Note Firecracker's 12 ms \
         ends when its API socket is up, before any guest runs; ours below ends at the guest's \
         first serial byte, which is a later point.\n\n| target | measured (median) | result |\n|---|---|---|\n",
    );
    let first = median(&r.tiny, "start → first serial byte", true);
    if let Some(v) = first {
        m.push_str(&format!(
            "| start → first guest output < ~{FC_START_MS} ms (host, tiny guest) | {v:.2} ms | {} |\n",
            verdict(v < FC_START_MS)
        ));
    }
    let over = median(&r.rss, "VMM overhead = total − guest", true);
    if let Some(v) = over {
        m.push_str(&format!(
            "| VMM RSS overhead < ~{FC_OVERHEAD_MIB} MB (taken as MiB) | {v:.2} MiB | {} |\n",
            verdict(v < FC_OVERHEAD_MIB)
        ));
    }
    for t in &r.linux {
        let metric = "start → `VT-GUEST init-reached`";
        if let (Some(o), Some(q)) = (median(t, metric, true), median(t, metric, false)) {
            m.push_str(&format!(
                "| {}: Linux to init no slower than QEMU microvm | {o:.0} ms vs QEMU {q:.0} ms ({:.2}×) | {} |\n",
                t.title,
                o / q,
                verdict(o <= q)
            ));
        }
    }
    m
}

/// Every metric where our median is above QEMU's, said plainly.
fn losses(r: &Report) -> String {
    let mut m = String::from("\n## Where VT System loses\n\n");
    let mut any = false;
    let tables = [&r.tiny, &r.rss].into_iter().chain(r.linux.iter());
    for t in tables {
        for s in &t.series {
            if let Some(ratio) = s.ratio().filter(|x| *x > 1.0) {
                any = true;
                m.push_str(&format!(
                    "- **{}** — {}: ours is {ratio:.2}× QEMU's median.\n",
                    t.title, s.metric
                ));
            }
        }
        for n in t.notes.iter().filter(|n| n.contains("FAILED")) {
            any = true;
            m.push_str(&format!("- **{}**: {n}\n", t.title));
        }
    }
    if !any {
        m.push_str("Nowhere in this run: every median of ours is at or below QEMU's.\n");
    } else if r.notes.is_some() {
        m.push_str("\nCauses, as far as we know them: see the analysis below.\n");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Series;

    fn table(title: &str, metric: &str, ours: f64, qemu: f64) -> Table {
        let mut s = Series::new(metric, "ms");
        s.ours = vec![ours; 3];
        s.qemu = vec![qemu; 3];
        Table {
            title: title.into(),
            command: "vt-bench x".into(),
            ours_cmd: "vt-vmm".into(),
            qemu_cmd: "qemu".into(),
            notes: vec![],
            series: vec![s],
        }
    }

    #[test]
    fn targets_and_losses_are_stated() {
        let facts = Facts {
            cpu_model: "cpu".into(),
            cpus: 2,
            kernel: "6.18".into(),
            kvm: "PVM".into(),
            qemu_version: "QEMU 7.2".into(),
            load: "0.1 0.1 0.1".into(),
        };
        let r = Report {
            command: "vt-bench all".into(),
            date: "2026-01-01 00:00 UTC".into(),
            revision: None,
            host: facts,
            lab: None,
            tiny: table("Tiny", "start → first serial byte", 8.0, 40.0),
            rss: table("RSS", "VMM overhead = total − guest", 5.0, 30.0),
            linux: vec![table(
                "Linux",
                "start → `VT-GUEST init-reached`",
                900.0,
                800.0,
            )],
            notes: Some("## Analysis\n\nhand-written".into()),
        };
        let md = render(&r);
        assert!(md.contains("| 8.00 ms | **met** |"), "{md}");
        assert!(md.contains("| 5.00 MiB | **NOT met** |"), "{md}");
        assert!(
            md.contains("900 ms vs QEMU 800 ms (1.12×) | **NOT met** |"),
            "{md}"
        );
        assert!(md.contains("- **Linux** — start → `VT-GUEST init-reached`: ours is 1.12×"));
        assert!(md.contains("| lab L1 (Linux) |") && md.contains("not run"));
        assert!(md.trim_end().ends_with("hand-written"));
    }
}

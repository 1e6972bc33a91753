//! `vt-bench hang`: the stress loop of issue 15 case 7, in one lab boot.
//!
//! - Network: `--rounds` guests under vt-vmm and as many under QEMU
//!   (interleaved, the set-up of `vt-bench io --net-only`), each running
//!   `--bursts` short iperf3 transfers alternating direction. A guest whose
//!   console is silent for `--secs` + 40 s is a hang: the lab prints the
//!   VMM's thread states and a sample of KVM events (`VT-HANG`) and kills it.
//! - SMP boots: `--boots` boots of the guest kernel with 2 vCPUs and 1 GiB
//!   to init under each VMM, interleaved, each classified (init, triple
//!   fault, reset, crash, hang, or L1 wedged: the VMM outlived its SIGKILL,
//!   stuck in the lab's kernel; the loop stops there).
//!
//! See `hang/l1.sh` and `hang/guest.sh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::host;
use crate::host::MICROVM_BIOS;
use crate::io::{self, IPERF3};

const L1_SCRIPT: &str = include_str!("../hang/l1.sh");
const GUEST_SCRIPT: &str = include_str!("../hang/guest.sh");

#[derive(Debug, Clone, Args)]
pub struct HangArgs {
    /// Guests per VMM for the network loop (0: none)
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// iperf3 transfers per guest
    #[arg(long, default_value_t = 20)]
    pub bursts: u32,
    /// Seconds per transfer
    #[arg(long, default_value_t = 2)]
    pub secs: u32,
    /// SMP boots (2 vCPUs, 1 GiB) per VMM (0: none)
    #[arg(long, default_value_t = 0)]
    pub boots: u32,
    /// Our VMM [default: vt-vmm next to vt-bench]
    #[arg(long, value_name = "PATH")]
    pub vmm: Option<PathBuf>,
    /// Another vt-vmm build (e.g. before a fix) to run a third guest with
    /// in each round of the network loop
    #[arg(long, value_name = "PATH")]
    pub baseline: Option<PathBuf>,
    /// Lab time limit in seconds
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Write the section into this report (e.g. BENCHMARKS.md) instead of stdout
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// What one VMM did over the loop.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Guests run in the network loop.
    pub guests: u32,
    pub bursts_ok: u32,
    pub bursts_stuck: u32,
    /// Guests that went silent (the hang of case 7).
    pub hangs: u32,
    /// Receive length errors the guests' driver counted (a frame whose
    /// buffers it did not find all used, or too short).
    pub rx_length_errors: u64,
    /// Guests the VMM reported crashed (triple fault, KVM error).
    pub crashes: u32,
    /// SMP boot outcome → count.
    pub boots: BTreeMap<String, u32>,
}

/// `VT-HANGRUN who round ok stuck hung` and `VT-SMPBOOT who n outcome`
/// lines → who → tally.
pub fn parse(stdout: &str) -> BTreeMap<String, Tally> {
    let mut out: BTreeMap<String, Tally> = BTreeMap::new();
    for line in stdout.lines().map(|l| l.trim_end_matches('\r')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["VT-HANGRUN", who, _round, ok, stuck, hung, rest @ ..] => {
                let (Ok(ok), Ok(stuck), Ok(hung)) =
                    (ok.parse::<u32>(), stuck.parse::<u32>(), hung.parse::<u32>())
                else {
                    continue;
                };
                let t = out.entry((*who).into()).or_default();
                t.guests += 1;
                t.bursts_ok += ok;
                t.bursts_stuck += stuck;
                t.hangs += hung;
                t.rx_length_errors += rest
                    .first()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                t.crashes += rest.get(1).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
            }
            ["VT-SMPBOOT", who, _n, outcome, ..] => {
                *out.entry((*who).into())
                    .or_default()
                    .boots
                    .entry((*outcome).into())
                    .or_default() += 1;
            }
            _ => {}
        }
    }
    out
}

/// The Markdown section for `tally`.
pub fn report(args: &HangArgs, tally: &BTreeMap<String, Tally>, took: Duration) -> String {
    let mut s = format!(
        "## Hang stress loop (lab, issue 15 case 7)\n\nGenerated {} at revision {}, in {:.0} s \
         of one lab boot by `vt-bench hang --rounds {} --bursts {} --secs {} --boots {}{}`.\n\n",
        host::utc_now(),
        host::git_revision().unwrap_or_else(|| "unknown".into()),
        took.as_secs_f64(),
        args.rounds,
        args.bursts,
        args.secs,
        args.boots,
        args.baseline
            .as_ref()
            .map(|p| format!(" --baseline {}", p.display()))
            .unwrap_or_default()
    );
    let who = [("vt", "vt-vmm"), ("qemu", "QEMU")];
    if args.rounds > 0 {
        s.push_str(
            "| VMM | guests | iperf3 transfers | completed | stuck | guest hangs | guest crashed | guest rx length errors |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let base = args
            .baseline
            .as_ref()
            .map(|p| ("base", format!("vt-vmm baseline ({})", p.display())));
        let rows = who.iter().map(|(k, n)| (*k, n.to_string())).chain(base);
        for (k, name) in rows {
            let t = tally.get(k).cloned().unwrap_or_default();
            s.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {} | {} |\n",
                t.guests,
                t.bursts_ok + t.bursts_stuck,
                t.bursts_ok,
                t.bursts_stuck,
                t.hangs,
                t.crashes,
                t.rx_length_errors
            ));
        }
        s.push('\n');
    }
    if args.boots > 0 {
        s.push_str(
            "| VMM | SMP boots (2 vCPUs, 1 GiB) | to init | triple fault | reset | crashed | hang | L1 wedged |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (k, name) in who {
            let t = tally.get(k).cloned().unwrap_or_default();
            let n = |o: &str| t.boots.get(o).copied().unwrap_or(0);
            s.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {} | {} |\n",
                t.boots.values().sum::<u32>(),
                n("init"),
                n("triple_fault"),
                n("reset"),
                n("crashed"),
                n("hang"),
                n("l1_wedged")
            ));
        }
        s.push('\n');
    }
    s
}

/// Runs the loop; the Markdown section.
pub fn run(args: &HangArgs) -> anyhow::Result<String> {
    let vmm = args.vmm.clone().unwrap_or_else(host::default_vmm);
    anyhow::ensure!(
        Path::new(IPERF3).exists(),
        "{IPERF3} missing (apt-get install iperf3)"
    );
    let dir = std::env::temp_dir().join(format!("vt-bench-hang-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let initrd = io::guest_initramfs(
        &dir,
        "initramfs-hang.cpio.gz",
        GUEST_SCRIPT,
        &[(Path::new(IPERF3), IPERF3)],
    )?;
    let l1 = dir.join("l1.sh");
    std::fs::write(&l1, L1_SCRIPT)?;
    let script = format!(
        "ROUNDS={} BURSTS={} SECS={} BOOTS={} sh \"$VTLAB_ROOT/vt/l1.sh\"",
        args.rounds, args.bursts, args.secs, args.boots
    );
    let mut lab = lab::Lab::new()
        .memory_mib(3072)
        .cpus(2)
        .retries(0)
        .timeout(Duration::from_secs(args.timeout))
        .with_guest_artifacts()
        .with_qemu()
        .add_binary(&vmm, "/vt/vt-vmm")
        .add_binary(IPERF3, "/vt/iperf3")
        .add_file(&initrd, "/vt/initramfs.cpio.gz")
        .add_file(MICROVM_BIOS, "/vt/bios-microvm.bin")
        .add_file(&l1, "/vt/l1.sh");
    if let Some(base) = &args.baseline {
        lab = lab.add_binary(base, "/vt/vt-vmm-base");
    }
    let start = Instant::now();
    let out = lab.run_auto(&script);
    let took = start.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.context("lab run")?;
    let log = lab::artifacts::repo_root().join("target/vt-bench-hang.log");
    if std::fs::write(&log, &out.stdout).is_ok() {
        eprintln!("vt-bench: lab output in {}", log.display());
    }
    for line in out
        .stdout
        .lines()
        .filter(|l| l.starts_with("VT-HANG") || l.starts_with("VT-SMP") || l.contains("VT-BURST"))
    {
        eprintln!("{}", line.trim_end());
    }
    anyhow::ensure!(
        out.exit_code == 0,
        "lab exit {}:\n{}",
        out.exit_code,
        out.stdout
    );
    let tally = parse(&out.stdout);
    anyhow::ensure!(
        !tally.is_empty(),
        "no results in the lab output:\n{}",
        out.stdout
    );
    Ok(report(args, &tally, took))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_tallied_per_vmm() {
        let out = "VT-HANGRUN vt 1 19 1 0 7 1\r\nVT-HANGRUN vt 2 3 0 1\nVT-HANGRUN qemu 1 20 0 0\n\
                   VT-SMPBOOT vt 1 init 1\nVT-SMPBOOT qemu 1 reset 0\nVT-SMPBOOT vt 2 triple_fault 0\n\
                   VT-HANGRUN vt x y z w\nnoise\n";
        let t = parse(out);
        let vt = &t["vt"];
        assert_eq!(
            (vt.guests, vt.bursts_ok, vt.bursts_stuck, vt.hangs),
            (2, 22, 1, 1)
        );
        assert_eq!(vt.rx_length_errors, 7);
        assert_eq!(vt.crashes, 1);
        assert_eq!(vt.boots["init"], 1);
        assert_eq!(vt.boots["triple_fault"], 1);
        assert_eq!(t["qemu"].boots["reset"], 1);
        assert_eq!(t["qemu"].bursts_ok, 20);
    }
}

//! `vt-bench confinement`: what the VMM's own barriers cost. The tiny guest
//! under `vt-vmm --seccomp on --landlock on` and `--seccomp off --landlock
//! off`, interleaved on this host's /dev/kvm: start → first serial byte,
//! → exit, peak RSS; medians and the difference (on − off).

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;

use crate::host::{self, Scratch};
use crate::run;
use crate::stats::summarize;
use crate::tiny::{once, write_guest, OURS};

#[derive(Debug, Clone, Args)]
pub struct ConfineArgs {
    /// Measured runs per side
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// Unmeasured runs per side first
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Our VMM [default: vt-vmm next to vt-bench]
    #[arg(long, value_name = "PATH")]
    pub vmm: Option<PathBuf>,
    /// Write the section into this Markdown file (else print it)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

const MEMORY_MIB: u32 = 128;
const ON: &[&str] = &["--seccomp", "on", "--landlock", "on"];
const OFF: &[&str] = &["--seccomp", "off", "--landlock", "off"];
/// The cell too (`vt-vmm --jail`, as run by hand: open, unshare, fork,
/// pivot_root, drop to this uid), then seccomp and Landlock.
const JAILED: &[&str] = &[
    "--seccomp",
    "on",
    "--landlock",
    "on",
    "--jail",
    "--jail-uid",
    "1879048192",
];

fn cmd(vmm: &Path, kernel: &Path, barriers: &[&str]) -> Command {
    let mut c = crate::tiny::ours_cmd(vmm, kernel, MEMORY_MIB);
    c.args(barriers);
    c
}

/// Runs the comparison and returns its Markdown section (unwrapped).
pub fn run(args: &ConfineArgs) -> anyhow::Result<String> {
    let vmm = args.vmm.clone().unwrap_or_else(host::default_vmm);
    let dir = Scratch::new("confine")?;
    let elf = write_guest(&dir)?;
    let mut sides: Vec<(&str, &[&str])> = vec![("off", OFF), ("seccomp + Landlock", ON)];
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        sides.push(("+ jail", JAILED));
    }
    let mut samples: Vec<[Vec<f64>; 3]> = vec![Default::default(); sides.len()];
    for i in 0..args.warmup + args.runs {
        // Rotate which side goes first, so none always follows another.
        for j in 0..sides.len() {
            let side = (i + j) % sides.len();
            let r = once(&OURS, cmd(&vmm, &elf, sides[side].1))?;
            if i >= args.warmup {
                for k in 0..3 {
                    samples[side][k].push(r[k]);
                }
            }
        }
    }
    let mut m =
        String::from("### Confinement cost: the cell, seccomp and Landlock (tiny guest)\n\n");
    m.push_str(&format!(
        "Command: `vt-bench confinement --runs {} --warmup {}` ({} runs a side, interleaved, \
         the first side rotating; {MEMORY_MIB} MiB, 1 vCPU, the tiny guest prints a line \
         then powers off; the jailed side only as root)\n\n",
        args.runs, args.warmup, args.runs
    ));
    for (name, flags) in &sides {
        m.push_str(&format!(
            "- {name}: `{}`\n",
            run::describe(&cmd(&vmm, Path::new("tiny-pvh.elf"), flags))
        ));
    }
    m.push_str("\n| metric | ");
    for (name, _) in &sides {
        m.push_str(&format!("{name}: median (p90, min–max) | "));
    }
    for (name, _) in sides.iter().skip(1) {
        m.push_str(&format!("{name} − off | "));
    }
    let header_end = m.trim_end().len();
    m.truncate(header_end);
    m.push('\n');
    m.push_str(&"|---".repeat(1 + 2 * sides.len() - 1));
    m.push_str("|\n");
    for (k, (name, unit)) in [
        ("start → first serial byte", "ms"),
        ("start → process exit", "ms"),
        ("peak RSS (ru_maxrss)", "MiB"),
    ]
    .into_iter()
    .enumerate()
    {
        let cell = |s: Option<crate::stats::Summary>| {
            s.map_or_else(
                || "–".to_string(),
                |s| {
                    format!(
                        "{:.2} {unit} ({:.2}, {:.2}–{:.2})",
                        s.median, s.p90, s.min, s.max
                    )
                },
            )
        };
        let sums: Vec<_> = samples.iter().map(|s| summarize(&s[k])).collect();
        m.push_str(&format!("| {name} |"));
        for s in &sums {
            m.push_str(&format!(" {} |", cell(*s)));
        }
        for s in sums.iter().skip(1) {
            let diff = match (s, &sums[0]) {
                (Some(a), Some(b)) => format!("{:+.2} {unit}", a.median - b.median),
                _ => "–".into(),
            };
            m.push_str(&format!(" {diff} |"));
        }
        m.push('\n');
    }
    Ok(m)
}

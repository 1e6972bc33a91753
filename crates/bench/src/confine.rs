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
const ON: [&str; 4] = ["--seccomp", "on", "--landlock", "on"];
const OFF: [&str; 4] = ["--seccomp", "off", "--landlock", "off"];

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
    let mut on: [Vec<f64>; 3] = Default::default();
    let mut off: [Vec<f64>; 3] = Default::default();
    for i in 0..args.warmup + args.runs {
        // Alternate which side goes first, so neither always follows the other.
        let (a, b) = if i % 2 == 0 { (ON, OFF) } else { (OFF, ON) };
        let ra = once(&OURS, cmd(&vmm, &elf, &a))?;
        let rb = once(&OURS, cmd(&vmm, &elf, &b))?;
        if i < args.warmup {
            continue;
        }
        let (r_on, r_off) = if i % 2 == 0 { (ra, rb) } else { (rb, ra) };
        for k in 0..3 {
            on[k].push(r_on[k]);
            off[k].push(r_off[k]);
        }
    }
    let mut m = String::from("### Confinement cost: seccomp + Landlock on vs off (tiny guest)\n\n");
    m.push_str(&format!(
        "Command: `vt-bench confinement --runs {} --warmup {}` ({} runs a side, interleaved, \
         the first side alternating; {MEMORY_MIB} MiB, 1 vCPU, the tiny guest prints a line \
         then powers off)\n\n",
        args.runs, args.warmup, args.runs
    ));
    m.push_str(&format!(
        "- on: `{}`\n- off: `{}`\n\n",
        run::describe(&cmd(&vmm, Path::new("tiny-pvh.elf"), &ON)),
        run::describe(&cmd(&vmm, Path::new("tiny-pvh.elf"), &OFF))
    ));
    m.push_str("| metric | on: median (p90, min–max) | off: median (p90, min–max) | on − off (medians) |\n");
    m.push_str("|---|---|---|---|\n");
    for (k, (name, unit)) in [
        ("start → first serial byte", "ms"),
        ("start → process exit", "ms"),
        ("peak RSS (ru_maxrss)", "MiB"),
    ]
    .into_iter()
    .enumerate()
    {
        let (a, b) = (summarize(&on[k]), summarize(&off[k]));
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
        let diff = match (a, b) {
            (Some(a), Some(b)) => format!("{:+.2} {unit}", a.median - b.median),
            _ => "–".into(),
        };
        m.push_str(&format!(
            "| {name} | {} | {} | {diff} |\n",
            cell(a),
            cell(b)
        ));
    }
    Ok(m)
}

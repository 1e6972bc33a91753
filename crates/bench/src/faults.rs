//! `vt-bench faults`: the fault-injection loop of `vtd`
//! (`crates/vtd/tests/fault_injection.rs`) run longer than CI runs it:
//! `--runs` runs of `--iterations` steps each, for each of its two loops
//! (VMMs jailed, and `vtd --jail off`) (random define / start /
//! stop / undefine, `kill -9` of `vtd` mid-request and of VMMs, corrupt
//! state files; the invariant checked against `/proc` after every step).
//! It runs the test through `cargo test` from the workspace root (the
//! current directory) and records each run's seed, time and verdict.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct FaultsArgs {
    /// Steps per run
    #[arg(long, default_value_t = 5000)]
    pub iterations: u64,
    /// Runs (each with its own seed)
    #[arg(long, default_value_t = 4)]
    pub runs: u32,
    /// Markdown file to put the section in (else printed)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// One run: its summary line (or the failure), and whether it passed.
fn one(iterations: u64) -> anyhow::Result<(bool, String, String)> {
    let out = Command::new("cargo")
        .args([
            "test",
            "-q",
            "-p",
            "vtd",
            "--test",
            "fault_injection",
            "--",
            "--nocapture",
        ])
        .env("VT_FAULT_ITERATIONS", iterations.to_string())
        .output()
        .context("running cargo test")?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // One seed per loop.
    let seed = text
        .lines()
        .filter(|l| l.starts_with("fault injection (") && !l.contains(" in "))
        .filter_map(|l| l.split("VT_FAULT_SEED=").nth(1))
        .collect::<Vec<_>>()
        .join(", ");
    // Each loop's closing line (jailed and unjailed VMMs), and a failure's
    // line naming the step and what broke.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            (l.starts_with("fault injection (") && l.contains(" iterations in "))
                || l.starts_with("iteration ")
        })
        .collect();
    let summary = if lines.is_empty() {
        "no summary".to_string()
    } else {
        lines.join("; ")
    };
    Ok((out.status.success(), seed, summary))
}

/// Runs the loop `runs` times; the Markdown section.
pub fn run(a: &FaultsArgs) -> anyhow::Result<String> {
    if a.runs == 0 || a.iterations == 0 {
        bail!("--runs and --iterations must be at least 1");
    }
    let mut rows = Vec::new();
    let mut failed = 0;
    for i in 0..a.runs {
        let (ok, seed, summary) = one(a.iterations)?;
        eprintln!(
            "run {}: {}: {summary}",
            i + 1,
            if ok { "ok" } else { "FAILED" }
        );
        failed += u32::from(!ok);
        rows.push(format!(
            "| {} | {seed} | {} | {} |",
            i + 1,
            if ok { "no violation" } else { "**violation**" },
            summary.replace('|', "/")
        ));
    }
    let mut md = String::from("## vtd under faults (`vt-bench faults`)\n\n");
    md.push_str(&format!(
        "Generated {} by `vt-bench faults --iterations {} --runs {}` at revision {} (debug build, as CI runs it). ",
        crate::host::utc_now(),
        a.iterations,
        a.runs,
        crate::host::git_revision().unwrap_or_else(|| "unknown".into())
    ));
    md.push_str(&format!(
        "{} runs of {} steps of each loop of `crates/vtd/tests/fault_injection.rs` (jailed VMMs, and `vtd --jail off`; random define/start/stop/undefine, `kill -9` of vtd mid-request and of VMMs, corrupt and truncated state files; the invariant checked against /proc after every step, no name wedged every 50 steps and at the end). Runs with a violation: {failed}.\n\n",
        a.runs, a.iterations
    ));
    md.push_str("| run | VT_FAULT_SEED (one per loop) | result | summary |\n|---|---|---|---|\n");
    md.push_str(&rows.join("\n"));
    md.push('\n');
    Ok(crate::section::wrap("faults", &md))
}

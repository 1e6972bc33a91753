//! `vt-bench linux`: stock Debian Linux (bzImage, and the ELF vmlinux via
//! PVH) to its init under our VMM and QEMU microvm, interleaved, in the lab
//! (a hardware-virtualization /dev/kvm; see the `lab` crate). The lab runs
//! this same binary as `vt-bench linux-inner`, which prints one
//! `VTBENCH-RESULT <json>` line that the outer half turns into tables.

use crate::host::{self, Facts};
use crate::run::{self, Exit};
use crate::stats::{Series, Table};
use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct LinuxArgs {
    /// Measured boots per VMM and kernel
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Unmeasured boots per VMM and kernel first
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Our VMM [default: vt-vmm next to vt-bench]
    #[arg(long, value_name = "PATH")]
    pub vmm: Option<PathBuf>,
    /// Run our VMM in its cell (`vt-vmm --jail`), to measure what the
    /// jail costs against the same QEMU runs
    #[arg(long)]
    pub jail: bool,
    /// Lab (L1) memory
    #[arg(long, value_name = "MIB", default_value_t = 3072)]
    pub lab_memory: u32,
    /// Give up on the whole lab run after this long
    #[arg(long, value_name = "SECS", default_value_t = 1500)]
    pub timeout: u64,
}

#[derive(Debug, Clone, Args)]
pub struct InnerArgs {
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, value_name = "PATH")]
    pub vmm: PathBuf,
    #[arg(long, value_name = "PATH", default_value = host::DEFAULT_QEMU)]
    pub qemu: String,
    /// Where vmlinuz, vmlinux and initramfs.cpio.gz are
    #[arg(long, value_name = "DIR")]
    pub guest_dir: PathBuf,
    /// `vt-vmm --jail --jail-uid` JAIL_UID
    #[arg(long)]
    pub jail: bool,
    /// QEMU firmware (`-bios`) for microvm, when QEMU cannot find its own
    #[arg(long, value_name = "PATH")]
    pub bios: Option<PathBuf>,
}

/// What the lab half reports.
#[derive(Debug, Serialize, Deserialize)]
pub struct InnerResult {
    pub facts: Facts,
    pub tables: Vec<Table>,
}

const MARKER: &[u8] = b"VT-GUEST init-reached";
const RESULT: &str = "VTBENCH-RESULT ";
const CMDLINE: &str = "console=ttyS0 quiet";
const MEMORY_MIB: u32 = 256;
const BOOT_TIMEOUT: Duration = Duration::from_secs(150);
/// The stock microvm firmware (qboot), which `Lab::with_qemu` does not carry.
const MICROVM_BIOS: &str = "/usr/share/qemu/bios-microvm.bin";

/// The uid of a jailed run (the first of vtd's default range).
const JAIL_UID: &str = "1879048192";

fn ours_cmd(vmm: &Path, kernel: &Path, initrd: &Path, jail: bool) -> Command {
    let mut c = Command::new(vmm);
    c.args(["--memory", &MEMORY_MIB.to_string(), "--cpus", "1"])
        .arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .args(["--cmdline", CMDLINE]);
    if jail {
        c.args(["--jail", "--jail-uid", JAIL_UID]);
    }
    c
}

fn qemu_cmd(qemu: &str, bios: Option<&Path>, kernel: &Path, initrd: &Path) -> Command {
    let mut c = Command::new(qemu);
    c.args(["-M", "microvm,accel=kvm", "-cpu", "host", "-smp", "1"])
        .args(["-m", &MEMORY_MIB.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot"]);
    if let Some(b) = bios {
        c.arg("-bios").arg(b);
    }
    c.arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", CMDLINE]);
    c
}

/// One boot: (first byte, init reached, exit) in ms, peak RSS in MiB, and
/// the first line the guest printed.
fn boot(name: &str, mut cmd: Command) -> anyhow::Result<([f64; 4], String)> {
    let what = format!("{name}: {}", run::describe(&cmd));
    let f = run::measure(&mut cmd, MARKER, BOOT_TIMEOUT).context(what.clone())?;
    if f.exit != Exit::Code(0) {
        bail!("{what}: {}\n{}", f.exit, f.tail());
    }
    let (Some(first), Some(init)) = (f.first_byte, f.marker) else {
        bail!(
            "{what}: no `VT-GUEST init-reached` on the serial\n{}",
            f.tail()
        );
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let values = [
        ms(first),
        ms(init),
        ms(f.exit_at),
        f.maxrss_kib as f64 / 1024.0,
    ];
    Ok((values, first_line(&f.stdout)))
}

/// The first non-blank line of `out`, without ANSI escape sequences or
/// control characters, cut at 100 characters.
fn first_line(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    let clean = |l: &str| {
        let (mut s, mut esc) = (String::new(), false);
        for c in l.chars() {
            match (esc, c) {
                (false, '\x1b') => esc = true,
                (true, c) if c.is_ascii_alphabetic() => esc = false,
                (true, _) => {}
                (false, c) if !c.is_control() => s.push(c),
                (false, _) => {}
            }
        }
        s
    };
    let line = text
        .lines()
        .map(clean)
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    line.trim().chars().take(100).collect()
}

/// In the lab: every kernel, ours and QEMU alternately.
pub fn inner(args: &InnerArgs) -> anyhow::Result<()> {
    let facts = Facts::gather(&args.qemu);
    let initrd = args.guest_dir.join("initramfs.cpio.gz");
    let bios = args.bios.as_deref();
    let mut tables = Vec::new();
    for (file, title) in [
        ("vmlinuz", "Stock Linux to init, bzImage (lab)"),
        (
            "vmlinux",
            "Stock Linux to init, ELF vmlinux via PVH entry (lab)",
        ),
    ] {
        let kernel = args.guest_dir.join(file);
        let mut series = [
            Series::new("start → first serial byte", "ms"),
            Series::new("start → `VT-GUEST init-reached`", "ms"),
            Series::new("start → process exit (guest `poweroff -f`)", "ms"),
            Series::new("peak RSS (ru_maxrss)", "MiB"),
        ];
        let mut notes = vec![format!(
            "{MEMORY_MIB} MiB, 1 vCPU, cmdline `{CMDLINE}`; Debian's kernel and the lab's busybox \
             initramfs (init prints the marker, then `poweroff -f`); runs interleaved, {} warm-up \
             boot(s) each first",
            args.warmup
        )];
        let mut failed = None;
        let mut first_lines = (String::new(), String::new());
        for i in 0..args.warmup + args.runs {
            let n = format!("{file} run {}/{}", i + 1, args.warmup + args.runs);
            eprintln!("vt-bench: {n}: vt-vmm");
            let o = boot("vt-vmm", ours_cmd(&args.vmm, &kernel, &initrd, args.jail));
            eprintln!("vt-bench: {n}: QEMU");
            let q = boot("QEMU", qemu_cmd(&args.qemu, bios, &kernel, &initrd));
            let (o, q) = match (o, q) {
                (Ok((o, ol)), Ok((q, ql))) => {
                    eprintln!("vt-bench: {n}: init at {:.0} ms vs {:.0} ms", o[1], q[1]);
                    first_lines = (ol, ql);
                    (o, q)
                }
                (o, q) => {
                    failed = o.err().or(q.err());
                    break;
                }
            };
            if i < args.warmup {
                continue;
            }
            for (s, (o, q)) in series.iter_mut().zip(o.into_iter().zip(q)) {
                s.ours.push(o);
                s.qemu.push(q);
            }
        }
        notes.push(format!(
            "first serial line (last run): vt-vmm `{}`, QEMU `{}`; with `quiet` the kernel \
             prints only warnings, so \"first serial byte\" is when the first of those (or \
             init's own output) appears",
            first_lines.0.replace('`', "'"),
            first_lines.1.replace('`', "'")
        ));
        if let Some(e) = failed {
            notes.push(format!("**FAILED, series incomplete:** {e:#}").replace('\n', " "));
        }
        let shown = |f: &str| PathBuf::from("/guest").join(f);
        let bios_shown = bios.map(|_| Path::new(MICROVM_BIOS));
        tables.push(Table {
            title: title.into(),
            command: String::new(),
            ours_cmd: run::describe(&ours_cmd(
                Path::new("vt-vmm"),
                &shown(file),
                &shown("initramfs.cpio.gz"),
                args.jail,
            )),
            qemu_cmd: run::describe(&qemu_cmd(
                &args.qemu,
                bios_shown,
                &shown(file),
                &shown("initramfs.cpio.gz"),
            )),
            notes,
            series: series.to_vec(),
        });
    }
    eprintln!("vt-bench: all boots done");
    let result = InnerResult { facts, tables };
    println!("{RESULT}{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Finds and decodes the inner half's result line.
pub fn parse_result(stdout: &str) -> anyhow::Result<InnerResult> {
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.trim_end().split_once(RESULT).map(|(_, json)| json))
        .context("no VTBENCH-RESULT line in the lab output")?;
    serde_json::from_str(line).context("decoding VTBENCH-RESULT")
}

/// On the host: boots the lab and runs the inner half there.
pub fn run(args: &LinuxArgs) -> anyhow::Result<InnerResult> {
    let vmm = args.vmm.clone().unwrap_or_else(host::default_vmm);
    let exe = std::env::current_exe().context("locating vt-bench")?;
    let mut lab = lab::Lab::new()
        .memory_mib(args.lab_memory)
        .timeout(Duration::from_secs(args.timeout))
        .with_guest_artifacts()
        .with_qemu()
        .add_binary(&exe, "/vt/vt-bench")
        .add_binary(&vmm, "/vt/vt-vmm");
    let mut bios_arg = String::new();
    if let Ok(bios) = std::fs::canonicalize(MICROVM_BIOS) {
        lab = lab.add_file(bios, "/vt/bios-microvm.bin");
        bios_arg = " --bios \"$R/vt/bios-microvm.bin\"".into();
    }
    let script = format!(
        "R=\"$VTLAB_ROOT\"; \"$R/vt/vt-bench\" linux-inner --runs {} --warmup {} \
         --vmm \"$R/vt/vt-vmm\" --guest-dir \"$R/guest\"{bios_arg}{jail}",
        args.runs,
        args.warmup,
        jail = if args.jail { " --jail" } else { "" }
    );
    // The lab (nested SVM under TCG) has been seen to wedge, rarely, in a
    // long run: a second attempt, said so in the notes, beats losing the run.
    let mut failures = Vec::new();
    let (out, mut result) = loop {
        let attempt =
            lab.run_auto(&script)
                .context("lab run")
                .and_then(|out| match out.exit_code {
                    0 => parse_result(&out.stdout).map(|r| (out, r)),
                    code => {
                        let tail: Vec<&str> = out.stdout.lines().rev().take(30).collect();
                        let tail: Vec<&str> = tail.into_iter().rev().collect();
                        bail!("linux-inner failed (exit {code}):\n{}", tail.join("\n"))
                    }
                });
        match attempt {
            Ok(done) => break done,
            Err(e) if failures.is_empty() => {
                eprintln!("vt-bench: lab attempt 1 failed, retrying: {e:#}");
                failures.push(format!("{e:#}"));
            }
            Err(e) => return Err(e.context(format!("second attempt; first: {}", failures[0]))),
        }
    };
    let where_ = match out.boot {
        Some(b) => format!(
            "ran in the lab: L1 = QEMU TCG `-cpu EPYC-Milan,+svm,+npt`, {} MiB, 2 vCPUs, \
             kvm_amd nested=0; lab boot {:.1} s, whole lab run {:.0} s",
            args.lab_memory,
            b.as_secs_f64(),
            out.duration.as_secs_f64()
        ),
        None => "ran directly on this host's hardware /dev/kvm".into(),
    };
    for t in &mut result.tables {
        t.command = format!(
            "vt-bench linux --runs {} --warmup {} --vmm {}",
            args.runs,
            args.warmup,
            vmm.display()
        );
        t.notes.push(where_.clone());
        for f in &failures {
            let f: String = f.chars().take(300).collect();
            t.notes.push(format!(
                "lab attempt 1 failed and was retried: {}",
                f.replace('\n', " ")
            ));
        }
        if bios_arg.is_empty() {
            continue;
        }
        t.notes.push(format!(
            "`-bios` is QEMU's own default microvm firmware ({MICROVM_BIOS}, qboot), \
             named because the lab carries it to another path"
        ));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_result_line() {
        let r = InnerResult {
            facts: Facts {
                cpu_model: "AMD EPYC-Milan Processor".into(),
                cpus: 2,
                kernel: "6.1".into(),
                kvm: "kvm_amd".into(),
                qemu_version: "QEMU 7.2".into(),
                load: "0.00 0.01 0.05".into(),
            },
            tables: vec![],
        };
        let line = serde_json::to_string(&r).unwrap();
        let out = format!("noise\nvt-bench: vmlinuz run 1/6\n{RESULT}{line}\r\nVTLAB tail\n");
        let back = parse_result(&out).unwrap();
        assert_eq!(back.facts.cpu_model, "AMD EPYC-Milan Processor");
        assert!(parse_result("nothing here\n").is_err());
    }

    #[test]
    fn first_line_skips_blanks_and_escapes() {
        assert_eq!(
            first_line(b"\r\n\x1b[2J\r\nVT-GUEST init-reached\r\n"),
            "VT-GUEST init-reached"
        );
        assert_eq!(first_line(b""), "");
    }
}

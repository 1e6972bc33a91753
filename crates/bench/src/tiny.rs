//! `vt-bench tiny`: the tiny guest (prints a line on COM1, powers off) under
//! our VMM and under QEMU microvm, on this host's /dev/kvm, interleaved.

use crate::host::{self, Scratch};
use crate::run::{self, Exit};
use crate::stats::{Series, Table};
use anyhow::{bail, Context};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct TinyArgs {
    /// Measured runs per VMM
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Unmeasured runs per VMM first (page cache, lazy binding)
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Our VMM [default: vt-vmm next to vt-bench]
    #[arg(long, value_name = "PATH")]
    pub vmm: Option<PathBuf>,
    /// QEMU binary
    #[arg(long, value_name = "PATH", default_value = host::DEFAULT_QEMU)]
    pub qemu: String,
}

const MEMORY_MIB: u32 = 128;
const TIMEOUT: Duration = Duration::from_secs(20);

/// Our VMM's command line for `kernel`.
pub fn ours_cmd(vmm: &Path, kernel: &Path, memory_mib: u32) -> Command {
    let mut c = Command::new(vmm);
    c.args(["--memory", &memory_mib.to_string(), "--kernel"])
        .arg(kernel);
    c
}

/// QEMU microvm with the tiny guest and isa-debug-exit (exit status 1 =
/// the guest wrote 0 there).
pub fn qemu_cmd(qemu: &str, kernel: &Path, memory_mib: u32) -> Command {
    let mut c = Command::new(qemu);
    c.args(["-M", "microvm,accel=kvm", "-cpu", "host"])
        .args(["-m", &memory_mib.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(kernel);
    c
}

/// One VMM under test and the exit status its tiny-guest run must end with.
pub struct Side {
    /// The name in error messages.
    pub name: &'static str,
    /// The expected exit.
    pub expect: Exit,
}

/// Our VMM: status 0 after the guest's power-off.
pub const OURS: Side = Side {
    name: "vt-vmm",
    expect: Exit::Code(0),
};
const QEMU: Side = Side {
    name: "QEMU",
    expect: Exit::Code(1),
};

/// One run: (first byte ms, exit ms, peak RSS MiB).
pub fn once(side: &Side, mut cmd: Command) -> anyhow::Result<[f64; 3]> {
    let f = run::measure(&mut cmd, b"", TIMEOUT)
        .with_context(|| format!("{}: {}", side.name, run::describe(&cmd)))?;
    let shown = String::from_utf8_lossy(&f.stdout);
    if f.exit != side.expect || !shown.contains(tinyguest::DEFAULT_MESSAGE.trim_end()) {
        bail!(
            "{}: {} (expected {}, and the guest's message)\n{}",
            side.name,
            f.exit,
            side.expect,
            f.tail()
        );
    }
    let first = f
        .first_byte
        .context("no serial output before the exit")?
        .as_secs_f64();
    Ok([
        first * 1e3,
        f.exit_at.as_secs_f64() * 1e3,
        f.maxrss_kib as f64 / 1024.0,
    ])
}

/// Writes the powering-off tiny guest (PVH) into `dir`; returns its path.
pub fn write_guest(dir: &Scratch) -> anyhow::Result<PathBuf> {
    let elf = dir.path().join("tiny-pvh.elf");
    let image = tinyguest::elf_with(
        tinyguest::DEFAULT_MESSAGE,
        true,
        tinyguest::Ending::PowerOff,
    );
    std::fs::write(&elf, image).with_context(|| format!("writing {}", elf.display()))?;
    Ok(elf)
}

pub fn run(args: &TinyArgs) -> anyhow::Result<Table> {
    let vmm = args.vmm.clone().unwrap_or_else(host::default_vmm);
    let dir = Scratch::new("tiny")?;
    let elf = write_guest(&dir)?;

    let mut series = [
        Series::new("start → first serial byte", "ms"),
        Series::new("start → process exit", "ms"),
        Series::new("peak RSS (ru_maxrss)", "MiB"),
    ];
    for i in 0..args.warmup + args.runs {
        let o = once(&OURS, ours_cmd(&vmm, &elf, MEMORY_MIB))?;
        let q = once(&QEMU, qemu_cmd(&args.qemu, &elf, MEMORY_MIB))?;
        if i < args.warmup {
            continue;
        }
        for (s, (o, q)) in series.iter_mut().zip(o.into_iter().zip(q)) {
            s.ours.push(o);
            s.qemu.push(q);
        }
    }
    let shown = Path::new("tiny-pvh.elf");
    Ok(Table {
        title: "Tiny guest on the host's /dev/kvm".into(),
        command: format!(
            "vt-bench tiny --runs {} --warmup {} --vmm {} --qemu {}",
            args.runs,
            args.warmup,
            vmm.display(),
            args.qemu
        ),
        ours_cmd: run::describe(&ours_cmd(&vmm, shown, MEMORY_MIB)),
        qemu_cmd: run::describe(&qemu_cmd(&args.qemu, shown, MEMORY_MIB)),
        notes: vec![
            format!(
                "guest: `tinyguest::elf_with(DEFAULT_MESSAGE, pvh=true, PowerOff)`, {MEMORY_MIB} MiB, \
                 1 vCPU; prints one line on COM1 then writes ACPI S5 (ours) / isa-debug-exit (QEMU)"
            ),
            format!(
                "runs interleaved ours, QEMU, ours, ...; {} unmeasured warm-up pair(s) first; \
                 clock = CLOCK_MONOTONIC read just before fork/exec; exit = `waitid` \
                 return; RSS from `wait4` (includes guest pages touched)",
                args.warmup
            ),
        ],
        series: series.to_vec(),
    })
}

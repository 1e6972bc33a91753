//! `vt-bench rss`: resident memory of a running VM, split into guest RAM the
//! guest has touched and the VMM's own overhead, read from /proc/PID/smaps
//! while the spinning tiny guest is alive.

use crate::host::{self, Scratch};
use crate::run::{self, Exit, Running};
use crate::stats::{Series, Table};
use crate::tiny;
use anyhow::{bail, Context};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct RssArgs {
    /// Measured runs per VMM
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Wait this long after the guest's message before reading smaps
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub settle_ms: u64,
    /// Our VMM [default: vt-vmm next to vt-bench]
    #[arg(long, value_name = "PATH")]
    pub vmm: Option<PathBuf>,
    /// QEMU binary
    #[arg(long, value_name = "PATH", default_value = host::DEFAULT_QEMU)]
    pub qemu: String,
}

const MEMORY_MIB: u32 = 128;
pub const MESSAGE: &str = "VT rss guest: spinning\n";

/// One mapping of /proc/PID/smaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// Path or `[heap]`-style name; empty for anonymous memory.
    pub name: String,
    pub size_kib: u64,
    pub rss_kib: u64,
    /// Resident anonymous (not file-backed) pages, KiB.
    pub anon_kib: u64,
}

impl Mapping {
    pub fn anonymous(&self) -> bool {
        self.name.is_empty() || self.name.starts_with("[anon:")
    }
}

/// Parses smaps text: a header line per mapping (`start-end perms offset
/// dev inode [name]`) followed by `Key: value kB` lines.
pub fn parse_smaps(text: &str) -> anyhow::Result<Vec<Mapping>> {
    let mut maps: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                // Range, perms, offset, dev, inode, then the name (may hold spaces).
                let name = name_after_fields(line, 5).unwrap_or_default();
                maps.push(Mapping {
                    start,
                    end,
                    name,
                    size_kib: 0,
                    rss_kib: 0,
                    anon_kib: 0,
                });
                continue;
            }
        }
        let (Some(m), Some(value)) = (maps.last_mut(), words.next()) else {
            continue;
        };
        let kib = || {
            value
                .parse::<u64>()
                .with_context(|| format!("smaps: bad value in {line:?}"))
        };
        match first {
            "Size:" => m.size_kib = kib()?,
            "Rss:" => m.rss_kib = kib()?,
            "Anonymous:" => m.anon_kib = kib()?,
            _ => {}
        }
    }
    Ok(maps)
}

/// The rest of `line` after `n` whitespace-separated fields, trimmed.
fn name_after_fields(line: &str, n: usize) -> Option<String> {
    let mut rest = line;
    for _ in 0..n {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    let name = rest.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The RSS split, KiB: total, guest RAM touched, overhead (total − guest),
/// and the anonymous part of that overhead (heap, stacks: no file pages).
/// Guest RAM = anonymous mappings at least as big as the guest; with
/// `largest_only`, only the largest of them (for QEMU, whose guest RAM is
/// one block and whose other big anonymous areas, if any, are not guest RAM).
pub fn split(maps: &[Mapping], guest_kib: u64, largest_only: bool) -> anyhow::Result<[u64; 4]> {
    let total: u64 = maps.iter().map(|m| m.rss_kib).sum();
    let anon: u64 = maps.iter().map(|m| m.anon_kib).sum();
    let mut guest: Vec<&Mapping> = maps
        .iter()
        .filter(|m| m.anonymous() && m.size_kib >= guest_kib)
        .collect();
    if largest_only {
        guest.sort_by_key(|m| std::cmp::Reverse(m.size_kib));
        guest.truncate(1);
    }
    if guest.is_empty() {
        bail!("no anonymous mapping of at least {guest_kib} KiB (guest RAM) in smaps");
    }
    let g: u64 = guest.iter().map(|m| m.rss_kib).sum();
    let g_anon: u64 = guest.iter().map(|m| m.anon_kib).sum();
    Ok([
        total,
        g,
        total.saturating_sub(g),
        anon.saturating_sub(g_anon),
    ])
}

fn once(
    name: &str,
    mut cmd: Command,
    largest_only: bool,
    settle: Duration,
) -> anyhow::Result<([u64; 4], Exit)> {
    let what = format!("{name}: {}", run::describe(&cmd));
    let mut r = Running::spawn(&mut cmd, Duration::from_secs(30)).context(what.clone())?;
    if r.read_until(MESSAGE.trim_end().as_bytes())?.is_none() {
        let f = r.finish()?;
        bail!(
            "{what}: ended ({}) before the guest's message\n{}",
            f.exit,
            f.tail()
        );
    }
    std::thread::sleep(settle);
    let path = format!("/proc/{}/smaps", r.pid());
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let maps = parse_smaps(&text)?;
    let split = split(&maps, u64::from(MEMORY_MIB) * 1024, largest_only).context(what.clone())?;
    r.signal(libc::SIGTERM);
    let f = r.finish()?;
    if f.timed_out {
        bail!("{what}: did not exit after SIGTERM\n{}", f.tail());
    }
    Ok((split, f.exit))
}

fn spin_cmds(vmm: &Path, qemu: &str, elf: &Path) -> (Command, Command) {
    (
        tiny::ours_cmd(vmm, elf, MEMORY_MIB),
        tiny::qemu_cmd(qemu, elf, MEMORY_MIB),
    )
}

pub fn run(args: &RssArgs) -> anyhow::Result<Table> {
    let vmm = args.vmm.clone().unwrap_or_else(host::default_vmm);
    let dir = Scratch::new("rss")?;
    let elf = dir.path().join("tiny-spin.elf");
    let image = tinyguest::elf_with(MESSAGE, true, tinyguest::Ending::Spin);
    std::fs::write(&elf, image).with_context(|| format!("writing {}", elf.display()))?;
    let settle = Duration::from_millis(args.settle_ms);

    let mut series = [
        Series::new("total RSS", "MiB"),
        Series::new("guest RAM touched (Rss of guest mapping)", "MiB"),
        Series::new("VMM overhead = total − guest", "MiB"),
        Series::new("… of which anonymous (heap, stacks; no file pages)", "MiB"),
    ];
    let mut ours_exits = Vec::new();
    for _ in 0..args.runs {
        let (ours, qemu) = spin_cmds(&vmm, &args.qemu, &elf);
        let (o, exit) = once("vt-vmm", ours, false, settle)?;
        ours_exits.push(exit);
        let (q, _) = once("QEMU", qemu, true, settle)?;
        for (s, (o, q)) in series.iter_mut().zip(o.into_iter().zip(q)) {
            s.ours.push(o as f64 / 1024.0);
            s.qemu.push(q as f64 / 1024.0);
        }
    }
    let clean = ours_exits.iter().filter(|e| **e == Exit::Code(0)).count();
    let (ours, qemu) = spin_cmds(&vmm, &args.qemu, Path::new("tiny-spin.elf"));
    Ok(Table {
        title: "Resident memory of a running VM (host /dev/kvm)".into(),
        command: format!(
            "vt-bench rss --runs {} --settle-ms {} --vmm {} --qemu {}",
            args.runs,
            args.settle_ms,
            vmm.display(),
            args.qemu
        ),
        ours_cmd: run::describe(&ours),
        qemu_cmd: run::describe(&qemu),
        notes: vec![
            format!(
                "guest: tiny guest with `Ending::Spin` ({MEMORY_MIB} MiB, 1 vCPU): prints a line, then \
                 spins; /proc/PID/smaps read {} ms after the line appears, then SIGTERM",
                args.settle_ms
            ),
            "guest RAM = anonymous mapping(s) ≥ 128 MiB (QEMU: the largest one; QEMU backs it \
             with transparent huge pages, so the guest's first touch shows as 2 MiB); total = \
             sum of Rss over all mappings (binary and shared-library pages included)"
                .into(),
            format!("vt-vmm exited 0 on SIGTERM in {clean} of {} runs", args.runs),
        ],
        series: series.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0a00000-55d0c0b00000 r-xp 00000000 08:01 1234  /usr/bin/vt-vmm
Size:               1024 kB
Rss:                 700 kB
VmFlags: rd ex mr mw me
7f0000000000-7f0008000000 rw-p 00000000 00:00 0 
Size:             131072 kB
KernelPageSize:        4 kB
Rss:                  12 kB
Anonymous:            12 kB
7f0010000000-7f0010800000 rw-p 00000000 00:00 0
Size:               8192 kB
Rss:                  40 kB
Anonymous:            40 kB
7f0020000000-7f0020001000 rw-p 00000000 00:00 0    [heap]
Size:                  4 kB
Rss:                   4 kB
7f0030000000-7f0039000000 rw-p 00000000 00:00 0
Size:             147456 kB
Rss:                 100 kB
Anonymous:           100 kB
";

    #[test]
    fn parses_smaps() {
        let m = parse_smaps(SMAPS).unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].name, "/usr/bin/vt-vmm");
        assert_eq!((m[0].start, m[0].end), (0x55d0c0a00000, 0x55d0c0b00000));
        assert_eq!((m[1].size_kib, m[1].rss_kib), (131072, 12));
        assert!(m[1].anonymous() && !m[3].anonymous());
        assert_eq!(m[3].name, "[heap]");
    }

    #[test]
    fn splits_guest_and_overhead() {
        let m = parse_smaps(SMAPS).unwrap();
        assert_eq!(split(&m, 131072, false).unwrap(), [856, 112, 744, 40]);
        assert_eq!(split(&m, 131072, true).unwrap(), [856, 100, 756, 52]);
        assert!(split(&m, 1 << 30, false).is_err());
        assert!(parse_smaps("00-10 r 0 0 0\nRss: lots kB\n").is_err());
    }
}

//! `vt-bench io`: block and network throughput in the lab, vt-vmm against
//! QEMU on the same disk and the same tap set-up, and the lab host's own
//! figures on that disk (the "≥ 90 % of the host" target).
//!
//! The lab gets a virtio disk (a sparse file here, `cache=none`) as its
//! `/dev/vda`; `vt-iobench` (this crate) measures it in the lab host and, as
//! the guest's `/dev/vda`, in each VM; `iperf3` (Debian's) measures TCP
//! between guest and lab host over the tap. See `io/l1.sh` and `io/guest.sh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use lab::CpioWriter;

use crate::host;
use crate::stats::{Series, Table};

const L1_SCRIPT: &str = include_str!("../io/l1.sh");
const GUEST_SCRIPT: &str = include_str!("../io/guest.sh");
/// Debian's iperf3, carried into the lab and the guests.
pub(crate) const IPERF3: &str = "/usr/bin/iperf3";

#[derive(Debug, Clone, Args)]
pub struct IoArgs {
    /// Runs of each VMM, interleaved
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seconds per measurement
    #[arg(long, default_value_t = 5)]
    pub secs: u32,
    /// Our VMM [default: vt-vmm next to vt-bench]
    #[arg(long, value_name = "PATH")]
    pub vmm: Option<PathBuf>,
    /// Lab time limit in seconds
    #[arg(long, default_value_t = 2400)]
    pub timeout: u64,
    /// Write the section into this report (e.g. BENCHMARKS.md) instead of stdout
    #[arg(long, value_name = "FILE", conflicts_with = "net_only")]
    pub out: Option<PathBuf>,
    /// Network only (no disk figures): quicker, for working on the NIC
    #[arg(long)]
    pub net_only: bool,
    /// Disk only (no network figures)
    #[arg(long, conflicts_with = "net_only")]
    pub block_only: bool,
    /// The guest disk's format: raw, or qcow2 (made by qemu-img; both VMMs
    /// then open it as qcow2, and the lab host's own figures are skipped,
    /// since they would write over the image)
    #[arg(long, default_value = "raw", value_parser = ["raw", "qcow2"])]
    pub disk_format: String,
    /// The VMMs' cache mode on the guest disk: none (O_DIRECT) or
    /// writeback (qcow2 is writeback only in vt-vmm)
    #[arg(long, default_value = "none", value_parser = ["none", "writeback"])]
    pub cache: String,
    /// Run our VMM in its cell (`vt-vmm --jail`): the jail's cost against
    /// the same QEMU runs (per-thread CPU lines then show the outside
    /// process only)
    #[arg(long)]
    pub jail: bool,
    /// The peer is the same vt-vmm with its device counters off
    /// (`VT_VMM_COUNTERS=off`) instead of QEMU: the counters' hot-path
    /// cost, counters on against off in one run
    #[arg(long)]
    pub counters_cost: bool,
}

/// The counters-cost section (`--counters-cost`): the QEMU column is
/// vt-vmm with its counters off.
pub fn counters_report(t: &Table) -> String {
    let table = crate::stats::markdown(t)
        .replace("| QEMU median", "| counters off median")
        .replace("| vt-vmm median", "| counters on median")
        .replace("| ours / QEMU |", "| on / off |")
        .replace("- QEMU: `", "- counters off: `")
        .replace("- ours: `", "- counters on: `");
    format!(
        "## Counters' hot-path cost: block and network I/O (lab)\n\nGenerated {} at revision {}. \
         The same vt-vmm binary, device counters on (default) and off (`VT_VMM_COUNTERS=off`), \
         interleaved runs in one lab boot. In the lab (QEMU TCG with nested SVM) every guest I/O \
         pays for emulated VM exits, which dwarf an atomic add: read the ratio, and the spread \
         between runs of one side, together.\n\n{table}",
        host::utc_now(),
        host::git_revision().unwrap_or_else(|| "unknown".into()),
    )
}

/// The section: a heading, how it was run, the table.
pub fn report(t: &Table) -> String {
    format!(
        "## Block and network I/O (lab)\n\nGenerated {} at revision {}. In the lab (QEMU TCG \
         with nested SVM), so every guest I/O pays for emulated VM exits: compare vt-vmm with \
         QEMU, measured in the same run on the same disk, more than with the lab host.\n\n{}",
        host::utc_now(),
        host::git_revision().unwrap_or_else(|| "unknown".into()),
        crate::stats::markdown(t)
    )
}

/// (metric key, label, unit); all higher-is-better.
const METRICS: [(&str, &str, &str); 6] = [
    ("seq_read_mbs", "sequential read, 1 MiB O_DIRECT", "MB/s"),
    ("seq_write_mbs", "sequential write, 1 MiB O_DIRECT", "MB/s"),
    ("rand_read_iops", "random read, 4 KiB O_DIRECT QD1", "IOPS"),
    (
        "rand_write_iops",
        "random write, 4 KiB O_DIRECT QD1",
        "IOPS",
    ),
    ("net_tx_mbits", "TCP guest → lab host (iperf3)", "Mbit/s"),
    ("net_rx_mbits", "TCP lab host → guest (iperf3 -R)", "Mbit/s"),
];

/// An archive of files at given paths, with their parent directories.
struct Tree {
    cpio: CpioWriter<Vec<u8>>,
    seen: std::collections::HashSet<String>,
}

impl Tree {
    fn file(&mut self, name: &str, data: &[u8]) -> anyhow::Result<()> {
        let name = name.trim_start_matches('/').to_string();
        let parents: Vec<String> = Path::new(&name)
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| p.to_string_lossy().to_string())
            .collect();
        for d in parents.into_iter().rev() {
            if self.seen.insert(d.clone()) {
                self.cpio.dir(&d, 0o755)?;
            }
        }
        if self.seen.insert(name.clone()) {
            self.cpio.file(&name, 0o755, data)?;
        }
        Ok(())
    }

    /// `binary` at `name`, and the libraries it needs at their host paths.
    fn binary(&mut self, binary: &Path, name: &str) -> anyhow::Result<()> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        self.file(name, &read(binary)?)?;
        for lib in lab::libs::needed(binary)? {
            self.file(&lib.to_string_lossy(), &read(&lib)?)?;
        }
        Ok(())
    }
}

/// The guest initramfs plus `script` as `/vt-test.sh` and `binaries`
/// (host path, guest path) with their libraries, written as `dir/name`.
pub(crate) fn guest_initramfs(
    dir: &Path,
    name: &str,
    script: &str,
    binaries: &[(&Path, &str)],
) -> anyhow::Result<PathBuf> {
    let arts = lab::artifacts::ensure(None)?;
    let mut bytes = std::fs::read(&arts.initramfs).context("reading the guest initramfs")?;
    bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    let mut tree = Tree {
        cpio: CpioWriter::new(Vec::new()),
        seen: Default::default(),
    };
    tree.file("vt-test.sh", script.as_bytes())?;
    for (host, guest) in binaries {
        tree.binary(host, guest)?;
    }
    bytes.extend(tree.cpio.finish()?);
    let path = dir.join(name);
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// `VT-BENCH who key=value` lines → who → key → samples.
pub fn parse(stdout: &str) -> BTreeMap<String, BTreeMap<String, Vec<f64>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for line in stdout.lines() {
        let Some(rest) = line.trim_end_matches('\r').strip_prefix("VT-BENCH ") else {
            continue;
        };
        let Some((who, kv)) = rest.split_once(' ') else {
            continue;
        };
        if !matches!(who, "host" | "vt" | "vtoff" | "qemu") {
            continue;
        }
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        if let Ok(v) = v.trim().parse::<f64>() {
            out.entry(who.into())
                .or_default()
                .entry(k.into())
                .or_default()
                .push(v);
        }
    }
    out
}

pub fn run(args: &IoArgs) -> anyhow::Result<Table> {
    let vmm = args.vmm.clone().unwrap_or_else(host::default_vmm);
    let exe = std::env::current_exe().context("locating vt-bench")?;
    let iobench = exe.with_file_name("vt-iobench");
    anyhow::ensure!(
        iobench.exists(),
        "{} not built (cargo build --release -p bench)",
        iobench.display()
    );
    anyhow::ensure!(
        Path::new(IPERF3).exists(),
        "{IPERF3} missing (apt-get install iperf3)"
    );
    let dir = std::env::temp_dir().join(format!("vt-bench-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let disk = dir.join("lab-disk.img");
    let qcow2 = args.disk_format == "qcow2";
    anyhow::ensure!(
        !(qcow2 && args.cache == "none"),
        "vt-vmm opens qcow2 with cache=writeback only: add --cache writeback"
    );
    if qcow2 {
        // 1 GiB as the guest sees it, in a 2 GiB device (room for clusters).
        let ok = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("1G")
            .status()
            .context("qemu-img (apt-get install qemu-utils)")?
            .success();
        anyhow::ensure!(ok, "qemu-img create failed");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&disk)?
            .set_len(2 << 30)?;
    } else {
        std::fs::File::create(&disk)?.set_len(1 << 30)?;
    }
    let initrd = guest_initramfs(
        &dir,
        "initramfs-io.cpio.gz",
        GUEST_SCRIPT,
        &[
            (Path::new(IPERF3), IPERF3),
            (&iobench, "/usr/bin/vt-iobench"),
        ],
    )?;
    let script = format!(
        "RUNS={} SECS={} NETONLY={} BLOCKONLY={} DISKFMT={} DISKCACHE={} VTJAIL='{}' PEER={} sh \"$VTLAB_ROOT/vt/l1.sh\"",
        args.runs,
        args.secs,
        if args.net_only { "1" } else { "" },
        if args.block_only { "1" } else { "" },
        args.disk_format,
        args.cache,
        if args.jail { "--jail --jail-uid 1879048192" } else { "" },
        if args.counters_cost { "vtoff" } else { "qemu" },
    );
    let l1 = dir.join("l1.sh");
    std::fs::write(&l1, L1_SCRIPT)?;
    let lab = host::lab_side_by_side(&vmm, &initrd, &l1, args.timeout)
        .add_binary(&iobench, "/vt/vt-iobench")
        .add_binary(IPERF3, "/vt/iperf3")
        .qemu_arg("-drive")
        .qemu_arg(format!(
            "file={},if=virtio,format=raw,cache=none",
            disk.display()
        ));
    let out = lab.run_auto(&script).context("lab run")?;
    let _ = std::fs::remove_dir_all(&dir);
    // The whole lab output, for when a number looks odd.
    let log = lab::artifacts::repo_root().join("target/vt-bench-io.log");
    if std::fs::write(&log, &out.stdout).is_ok() {
        eprintln!("vt-bench: lab output in {}", log.display());
    }
    anyhow::ensure!(
        out.exit_code == 0,
        "lab exit {}:\n{}",
        out.exit_code,
        out.stdout
    );
    let samples = parse(&out.stdout);
    let get = |who: &str, k: &str| {
        samples
            .get(who)
            .and_then(|m| m.get(k))
            .cloned()
            .unwrap_or_default()
    };
    let mut table = Table {
        title: "Block and network I/O in the lab (higher is better)".into(),
        command: format!(
            "vt-bench io --runs {} --secs {} --disk-format {} --cache {}{}{}{}",
            args.runs,
            args.secs,
            args.disk_format,
            args.cache,
            if args.block_only { " --block-only" } else { "" },
            if args.jail { " --jail" } else { "" },
            if args.counters_cost { " --counters-cost" } else { "" }
        ),
        ours_cmd: format!(
            "vt-vmm {}--disk path=/dev/vda,format={},cache={} --net tap=vtbN --memory 512 (see crates/bench/io/l1.sh)",
            if args.jail { "--jail --jail-uid 1879048192 " } else { "" },
            args.disk_format, args.cache
        ),
        qemu_cmd: format!(
            "qemu-system-x86_64 -M microvm,pcie=on -device virtio-blk-pci (format={}, cache={}) -device virtio-net-pci (tap, vhost=off)",
            args.disk_format, args.cache
        ),
        notes: Vec::new(),
        series: Vec::new(),
    };
    if args.counters_cost {
        table.title = "Device counters on against off (higher is better)".into();
        table.qemu_cmd = format!("VT_VMM_COUNTERS=off {}", table.ours_cmd);
    }
    // Interrupts per MB moved, per direction: printed, not tabled.
    for line in out.stdout.lines().filter(|l| l.starts_with("VT-STAT ")) {
        eprintln!("{}", line.trim_end());
    }
    for (key, label, unit) in METRICS {
        if (args.net_only && !key.starts_with("net_"))
            || (args.block_only && key.starts_with("net_"))
        {
            continue;
        }
        let mut s = Series::new(label, unit);
        s.ours = get("vt", key);
        s.qemu = get(if args.counters_cost { "vtoff" } else { "qemu" }, key);
        let median = |v: &[f64]| crate::stats::summarize(v).map(|x| x.median);
        let host = get("host", key).first().copied();
        let peer = if args.counters_cost {
            "counters-off"
        } else {
            "QEMU"
        };
        if let (Some(h), Some(o), Some(q)) = (host, median(&s.ours), median(&s.qemu)) {
            table.notes.push(format!(
                "{label}: the lab host itself {h:.1} {unit} on the same disk; \
                 vt-vmm guest {:.0} % of it, {peer} guest {:.0} %",
                o / h * 100.0,
                q / h * 100.0
            ));
        }
        table.series.push(s);
    }
    let last_key = if args.block_only {
        "rand_write_iops"
    } else {
        "net_rx_mbits"
    };
    if samples.get("vt").is_none_or(|m| m.get(last_key).is_none()) {
        eprintln!("{}", out.stdout);
        anyhow::bail!("no vt-vmm results in the lab output");
    }
    Ok(table)
}

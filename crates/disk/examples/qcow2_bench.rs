//! Micro-benchmark of the disk backends outside any VM: our raw backend
//! and the qcow2 backend (imago) on a 256 MiB image, and QEMU's own qcow2
//! engine (`qemu-img bench`) on the same patterns where it has them.
//!
//! `cargo run --release -p disk --example qcow2_bench [DIR]` (DIR: where
//! the images go, default the temp dir). Prints one line per figure;
//! medians of 5 runs. The page cache is warm (this measures the format
//! layer's CPU cost, not the disk).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use disk::{open_path, DiskBackend, DiskFormat, OpenOptions};
use vm_memory::VolatileSlice;

const SIZE: u64 = 256 << 20;
const RUNS: usize = 5;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn create(path: &Path, format: &str) {
    let _ = std::fs::remove_file(path);
    let ok = Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            format,
            path.to_str().unwrap(),
            &SIZE.to_string(),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn open(path: &Path, format: DiskFormat) -> Box<dyn DiskBackend> {
    let o = OpenOptions {
        format: Some(format),
        ..Default::default()
    };
    open_path(path, &o).unwrap()
}

/// Runs `ops` transfers of `len` bytes at offsets from `at(i)`, then
/// flushes; MB/s of the transfers.
fn run(
    d: &mut dyn DiskBackend,
    write: bool,
    len: usize,
    ops: u64,
    mut at: impl FnMut(u64) -> u64,
) -> f64 {
    let mut buf = vec![0x5au8; len];
    let t = Instant::now();
    for i in 0..ops {
        let s = [VolatileSlice::from(&mut buf[..])];
        if write {
            d.write_at(at(i), &s).unwrap();
        } else {
            d.read_at(at(i), &s).unwrap();
        }
    }
    // Timed without the final flush, as `qemu-img bench` times itself
    // (an fdatasync of 256 MiB would measure the host's disk).
    let secs = t.elapsed().as_secs_f64();
    d.flush().unwrap();
    (len as u64 * ops) as f64 / secs / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The figures for one backend: (name, MB/s) pairs.
fn figures(dir: &Path, fmt: &str, format: DiskFormat) -> Vec<(&'static str, f64)> {
    let img = dir.join(format!("bench.{fmt}"));
    let mut out: Vec<(&'static str, Vec<f64>)> = [
        "seq-write-1M-fresh",
        "seq-write-1M",
        "seq-read-1M",
        "rand-read-4K",
        "rand-write-4K",
    ]
    .iter()
    .map(|n| (*n, Vec::new()))
    .collect();
    let ops1m = SIZE >> 20;
    for r in 0..RUNS {
        create(&img, fmt);
        let mut d = open(&img, format);
        out[0]
            .1
            .push(run(d.as_mut(), true, 1 << 20, ops1m, |i| i << 20));
        out[1]
            .1
            .push(run(d.as_mut(), true, 1 << 20, ops1m, |i| i << 20));
        out[2]
            .1
            .push(run(d.as_mut(), false, 1 << 20, ops1m, |i| i << 20));
        let mut rng = Rng(r as u64 + 1);
        out[3].1.push(run(d.as_mut(), false, 4096, 20000, |_| {
            rng.below(SIZE / 4096) * 4096
        }));
        out[4].1.push(run(d.as_mut(), true, 4096, 20000, |_| {
            rng.below(SIZE / 4096) * 4096
        }));
    }
    let _ = std::fs::remove_file(&img);
    out.into_iter().map(|(n, v)| (n, median(v))).collect()
}

/// `qemu-img bench` (QEMU's qcow2 driver, depth 1, writeback cache, no
/// final flush): MB/s from the time it reports.
fn qemu_bench(dir: &Path, write: bool, fresh: bool) -> f64 {
    let img = dir.join("qbench.qcow2");
    let mut v = Vec::new();
    for _ in 0..RUNS {
        create(&img, "qcow2");
        let p = img.to_str().unwrap();
        let count = (SIZE >> 20).to_string();
        let mut args = vec![
            "bench",
            "-q",
            "-f",
            "qcow2",
            "-t",
            "writeback",
            "-d",
            "1",
            "-s",
            "1M",
            "-c",
            &count,
        ];
        if !fresh {
            let fill = [
                "bench",
                "-q",
                "-f",
                "qcow2",
                "-t",
                "writeback",
                "-d",
                "1",
                "-s",
                "1M",
                "-c",
                &count,
                "-w",
                p,
            ];
            let out = Command::new("qemu-img").args(fill).output().unwrap();
            assert!(out.status.success());
        }
        if write {
            args.push("-w");
        }
        args.push(p);
        let out = Command::new("qemu-img").args(&args).output().unwrap();
        assert!(out.status.success());
        // "Run completed in 0.013 seconds."
        let text = String::from_utf8_lossy(&out.stdout);
        let secs: f64 = text
            .split("Run completed in ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        v.push(SIZE as f64 / secs / 1e6);
    }
    let _ = std::fs::remove_file(&img);
    median(v)
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir);
    let raw = figures(&dir, "raw", DiskFormat::Raw);
    let q = figures(&dir, "qcow2", DiskFormat::Qcow2);
    println!(
        "{:<22} {:>10} {:>10} {:>7}",
        "MB/s (median of 5)", "raw", "qcow2", "ratio"
    );
    for ((n, r), (_, c)) in raw.iter().zip(&q) {
        println!("{n:<22} {r:>10.0} {c:>10.0} {:>7.2}", c / r);
    }
    println!("qemu-img bench (QEMU's qcow2 engine, its own timing):");
    println!(
        "{:<22} {:>10.0}",
        "seq-write-1M-fresh",
        qemu_bench(&dir, true, true)
    );
    println!(
        "{:<22} {:>10.0}",
        "seq-write-1M",
        qemu_bench(&dir, true, false)
    );
    println!(
        "{:<22} {:>10.0}",
        "seq-read-1M",
        qemu_bench(&dir, false, false)
    );
}

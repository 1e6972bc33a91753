//! `vt-bench audit`: what the audit trail costs.
//!
//! - append: records/s into a [`audit::Trail`] (SHA-256 chain, sealed head
//!   rewritten per record, a sealed checkpoint every 1000, 8 MiB files)
//!   against the plain JSON-lines action log it replaced (one `write(2)`
//!   per record), interleaved runs;
//! - verify and search: records/s over the trail just written (seals
//!   checked), against `sha256sum` of the same files (the hashing floor);
//! - a watch on an image: 4 KiB `pread`s of a file with and without a
//!   fanotify watch (`rwa`, events read and coalesced by a watcher thread
//!   as in `vtd`), interleaved; needs root.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use audit::fanotify::{Watch, Watcher};
use audit::{Config, Entry, Filter, Key, Outcome, Trail};
use clap::Args;

use crate::host::Scratch;
use crate::stats::summarize;

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Records per append run (and in the trail verified)
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Measured runs per side
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Size of the file read for the watch cost (MiB)
    #[arg(long, default_value_t = 256)]
    pub read_mib: u64,
    /// Write the section into this Markdown file (else print it)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

fn entry(i: u64) -> Entry {
    Entry {
        uid: Some(1000),
        gid: Some(1000),
        pid: Some(4242),
        vm: Some("vm1".into()),
        ..Entry::new(
            "start",
            Outcome::Ok,
            format!("POST /vms/vm1/start: 200 ({i})"),
        )
    }
}

fn append_trail(dir: &std::path::Path, n: u64) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    let mut t = Trail::open(Config::new(dir.to_path_buf(), Key::from_bytes([1; 32])))?;
    let start = Instant::now();
    for i in 0..n {
        t.append(entry(i))?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn append_plain(path: &std::path::Path, n: u64) -> anyhow::Result<f64> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let start = Instant::now();
    for i in 0..n {
        // What the old action log did: one JSON line, one write.
        let mut line = serde_json::to_string(&entry(i))?;
        line.push('\n');
        f.write_all(line.as_bytes())?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn read_all(f: &std::fs::File, bytes: u64) -> anyhow::Result<f64> {
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    let mut off = 0;
    while off < bytes {
        f.read_exact_at(&mut buf, off)?;
        off += 4096;
    }
    Ok(bytes as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64())
}

fn med(v: &[f64]) -> f64 {
    summarize(v).map_or(0.0, |s| s.median)
}

/// Runs everything; returns the Markdown section (unwrapped).
pub fn run(a: &AuditArgs) -> anyhow::Result<String> {
    let scratch = Scratch::new("audit")?;
    let trail = scratch.path().join("trail");
    let plain = scratch.path().join("actions.log");
    let (mut chained, mut flat) = (Vec::new(), Vec::new());
    for i in 0..a.runs + 1 {
        // The first round is a warm-up.
        let (c, p) = if i % 2 == 0 {
            let c = append_trail(&trail, a.records)?;
            (c, append_plain(&plain, a.records)?)
        } else {
            let p = append_plain(&plain, a.records)?;
            (append_trail(&trail, a.records)?, p)
        };
        if i > 0 {
            chained.push(c);
            flat.push(p);
        }
    }
    let files = audit::files::list(&trail)?;
    let key = Key::from_bytes([1; 32]);
    let (mut verify, mut search, mut sha) = (Vec::new(), Vec::new(), Vec::new());
    let mut total = 0;
    for _ in 0..a.runs {
        let t = Instant::now();
        let r = audit::verify(&trail, Some(&key))?;
        anyhow::ensure!(r.ok, "the benchmark trail does not verify: {r:?}");
        total = r.records;
        verify.push(r.records as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let hits = audit::search(
            &trail,
            &Filter {
                vm: Some("vm1".into()),
                ..Filter::default()
            },
            10,
        )?;
        anyhow::ensure!(hits.len() == 10);
        search.push(r.records as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let st = std::process::Command::new("sha256sum")
            .args(files.iter().map(|f| &f.1))
            .stdout(std::process::Stdio::null())
            .status()
            .context("sha256sum")?;
        anyhow::ensure!(st.success());
        sha.push(r.records as f64 / t.elapsed().as_secs_f64());
    }
    let bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(&f.1).ok())
        .map(|m| m.len())
        .sum();
    let mut m = String::from("### Audit trail: append, verify, search, watch cost\n\n");
    m.push_str(&format!(
        "Command: `vt-bench audit --records {} --runs {} --read-mib {}` (medians of {} runs, \
         sides interleaved after a warm-up; the trail: {} records, {} files, {:.1} MiB, on the \
         scratch directory's file system).\n\n",
        a.records,
        a.runs,
        a.read_mib,
        a.runs,
        total,
        files.len(),
        bytes as f64 / (1 << 20) as f64
    ));
    m.push_str("| measure | VT System | peer | ratio |\n|---|---|---|---|\n");
    m.push_str(&format!(
        "| append, records/s (trail vs plain JSON-lines log) | {:.0} | {:.0} | {:.2} |\n",
        med(&chained),
        med(&flat),
        med(&chained) / med(&flat)
    ));
    m.push_str(&format!(
        "| verify with seals, records/s (vs `sha256sum` of the files) | {:.0} | {:.0} | {:.2} |\n",
        med(&verify),
        med(&sha),
        med(&verify) / med(&sha)
    ));
    m.push_str(&format!(
        "| search (full scan), records/s | {:.0} | - | - |\n",
        med(&search)
    ));
    match watch_cost(scratch.path(), a) {
        Ok((on, off, records)) => m.push_str(&format!(
            "| 4 KiB preads of a watched file, MiB/s (watch `rwa` vs none; {records} records) | {:.0} | {:.0} | {:.2} |\n",
            med(&on),
            med(&off),
            med(&on) / med(&off)
        )),
        Err(e) => m.push_str(&format!("| watch cost | not measured: {e} | | |\n")),
    }
    Ok(m)
}

/// (watched MiB/s, unwatched MiB/s, records the watcher produced).
fn watch_cost(dir: &std::path::Path, a: &AuditArgs) -> anyhow::Result<(Vec<f64>, Vec<f64>, u64)> {
    let w = Arc::new(Watcher::new().context("fanotify (needs root)")?);
    let img = dir.join("image.raw");
    let bytes = a.read_mib << 20;
    {
        let f = std::fs::File::create(&img)?;
        let chunk = vec![7u8; 1 << 20];
        for i in 0..a.read_mib {
            f.write_all_at(&chunk, i << 20)?;
        }
    }
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (runner, seen) = (w.clone(), count.clone());
    std::thread::spawn(move || {
        runner.run(Duration::from_secs(10), move |_| {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
    });
    let f = std::fs::File::open(&img)?;
    read_all(&f, bytes)?; // into the page cache
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..a.runs {
        off.push(read_all(&f, bytes)?);
        let watch = w.add(Watch {
            id: 0,
            path: img.clone(),
            perms: "rwa".parse().map_err(anyhow::Error::msg)?,
            key: "bench".into(),
            image_of: None,
        })?;
        on.push(read_all(&f, bytes)?);
        w.remove(watch.id);
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok((on, off, count.load(std::sync::atomic::Ordering::Relaxed)))
}

//! `vt-bench api`: the manager under load. A real `vtd` with N tiny-guest
//! VMs defined and running; C concurrent clients each send R requests of
//! `GET /vms` (list) and `GET /vms/NAME` (info: one VMM round trip for the
//! counters), one connection per request as `vt` does. Then the time from
//! running `vt start NAME` to the guest's first byte in its console log.
//!
//! The Markdown section goes into BENCHMARKS.md between markers, replacing
//! an older one (`vt-bench all` keeps it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::host::{self, Scratch};

const MESSAGE: &str = "api bench guest up\n";

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// VMs defined (and running)
    #[arg(long, default_value_t = 20)]
    pub vms: usize,
    /// Concurrent clients
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Requests per client, per operation
    #[arg(long, default_value_t = 100)]
    pub requests: usize,
    /// `vt start` → first console byte samples
    #[arg(long, default_value_t = 20)]
    pub starts: usize,
    /// Markdown file to put the section in (else printed)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Measure `GET /metrics` instead: --vms VMs defined (not started),
    /// against `GET /vms` on the same vtd (section `api-metrics`)
    #[arg(long)]
    pub metrics: bool,
}

/// Kills vtd and every VMM under the scratch directory on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
    scratch: Scratch,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let state = self.scratch.path().join("state/vms");
        for vm in std::fs::read_dir(state).into_iter().flatten().flatten() {
            let rt = std::fs::read_to_string(vm.path().join("runtime.json")).unwrap_or_default();
            let pid = serde_json::from_str::<serde_json::Value>(&rt)
                .ok()
                .and_then(|v| v["pid"].as_i64());
            if let Some(pid) = pid {
                // SAFETY: kill has no memory effects; the pid is a VMM we started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

fn sibling(name: &str) -> PathBuf {
    host::default_vmm().with_file_name(name)
}

fn call(socket: &Path, method: &str, path: &str) -> anyhow::Result<vt_http::Response> {
    let r = vt_http::call(socket, method, path, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !(200..300).contains(&r.status) {
        bail!("{method} {path}: {} {}", r.status, r.text());
    }
    Ok(r)
}

fn start_vtd() -> anyhow::Result<Daemon> {
    let scratch = Scratch::new("api")?;
    let guest = scratch.path().join("guest");
    let image = tinyguest::elf_with(MESSAGE, true, tinyguest::Ending::Halt);
    std::fs::write(&guest, image)?;
    let socket = scratch.path().join("vtd.sock");
    let child = Command::new(sibling("vtd"))
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(scratch.path().join("state"))
        .arg("--vmm")
        .arg(host::default_vmm())
        .arg("--default-kernel")
        .arg(&guest)
        .stdin(Stdio::null())
        .spawn()
        .context("running vtd (build it: cargo build --release -p vtd)")?;
    let d = Daemon {
        child,
        socket,
        scratch,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&d.socket, "GET", "/vms").is_err() {
        if Instant::now() > deadline {
            bail!("vtd did not come up");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(d)
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64) * p / 100.0).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn row(metric: &str, mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return format!("| {metric} | no samples | | | |\n");
    }
    format!(
        "| {metric} | **{:.2} ms** | **{:.2} ms** | {:.2}–{:.2} ms | {} |\n",
        pct(&v, 50.0),
        pct(&v, 99.0),
        v[0],
        v[v.len() - 1],
        v.len()
    )
}

/// C clients × R requests of `path_of(client, i)`; latencies in ms.
fn hammer(
    socket: &Path,
    args: &ApiArgs,
    path_of: fn(usize, usize, usize) -> String,
) -> anyhow::Result<(Vec<f64>, Duration)> {
    let barrier = Arc::new(Barrier::new(args.clients));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..args.clients)
        .map(|c| {
            let (socket, barrier, n, vms) = (
                socket.to_path_buf(),
                barrier.clone(),
                args.requests,
                args.vms,
            );
            std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
                barrier.wait();
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    let path = path_of(c, i, vms);
                    let t = Instant::now();
                    call(&socket, "GET", &path)?;
                    out.push(t.elapsed().as_secs_f64() * 1e3);
                }
                Ok(out)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().map_err(|_| anyhow::anyhow!("client panicked"))??);
    }
    Ok((all, t0.elapsed()))
}

fn start_to_output(d: &Daemon, args: &ApiArgs) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let vt = sibling("vt");
    let (mut first, mut returned) = (Vec::new(), Vec::new());
    call(&d.socket, "POST", "/vms/api-0/stop")?;
    for _ in 0..args.starts {
        let log = d.scratch.path().join("state/vms/api-0/console.log");
        // Empty before the clock starts: only this run's output counts.
        std::fs::write(&log, b"")?;
        let t = Instant::now();
        let mut child = Command::new(&vt)
            .args(["start", "api-0"])
            .env("VT_SOCKET", &d.socket)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("running {}", vt.display()))?;
        let mut seen = None;
        let mut done = None;
        while seen.is_none() || done.is_none() {
            if seen.is_none() && std::fs::metadata(&log).is_ok_and(|m| m.len() > 0) {
                seen = Some(t.elapsed());
            }
            if done.is_none() {
                if let Some(status) = child.try_wait()? {
                    if !status.success() {
                        bail!("vt start failed: {status}");
                    }
                    done = Some(t.elapsed());
                }
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("no console output within 10 s");
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        first.extend(seen.map(|d| d.as_secs_f64() * 1e3));
        returned.extend(done.map(|d| d.as_secs_f64() * 1e3));
        call(&d.socket, "POST", "/vms/api-0/stop")?;
    }
    Ok((first, returned))
}

/// The host's 1, 5 and 15 minute load averages, as /proc/loadavg has them.
fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--metrics`: `GET /metrics` with `--vms` VMs defined, and `GET /vms`
/// on the same daemon as the baseline.
pub fn metrics(args: &ApiArgs) -> anyhow::Result<String> {
    let load = load_average();
    let d = start_vtd()?;
    for i in 0..args.vms {
        let body = format!(r#"{{"name":"api-{i}","memory_mib":16}}"#);
        let r = vt_http::call(&d.socket, "POST", "/vms", Some(body.into_bytes()))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if r.status != 201 {
            bail!("define api-{i}: {}", r.text());
        }
    }
    let size = call(&d.socket, "GET", "/metrics")?.body.len();
    let (metrics, metrics_wall) = hammer(&d.socket, args, |_, _, _| "/metrics".into())?;
    let (list, list_wall) = hammer(&d.socket, args, |_, _, _| "/vms".into())?;
    let total = (args.clients * args.requests) as f64;
    let mut m = String::from("## API: `GET /metrics` (Prometheus exposition)\n\n");
    m.push_str(&format!(
        "Generated {} by `vt-bench api --metrics --vms {} --clients {} --requests {}` at revision {}. \
         A real `vtd` (release build) with {} VMs defined, none running (a running VM adds one \
         round trip to its VMM's control socket and a read of its /proc files); {} client threads \
         start together and each sends {} requests, one connection per request, as a scraper \
         does. The exposition is {} bytes. Baseline on the same daemon: `GET /vms` (the list, \
         JSON). Throughput: metrics {:.0} req/s, list {:.0} req/s. Host: {} cores, load \
         average at start {}.\n\n",
        host::utc_now(), args.vms, args.clients, args.requests,
        host::git_revision().unwrap_or_else(|| "unknown".into()),
        args.vms, args.clients, args.requests, size,
        total / metrics_wall.as_secs_f64(), total / list_wall.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.trim()
    ));
    m.push_str("| metric | p50 | p99 | min–max | n |\n|---|---|---|---|---|\n");
    m.push_str(&row(
        &format!(
            "`GET /metrics` ({} VMs defined), {} clients",
            args.vms, args.clients
        ),
        metrics,
    ));
    m.push_str(&row(
        &format!(
            "`GET /vms` (list of {}), {} clients",
            args.vms, args.clients
        ),
        list,
    ));
    Ok(crate::section::wrap("api-metrics", &m))
}

pub fn run(args: &ApiArgs) -> anyhow::Result<String> {
    let load = load_average();
    let d = start_vtd()?;
    for i in 0..args.vms {
        let body = format!(r#"{{"name":"api-{i}","memory_mib":16}}"#);
        let r = vt_http::call(&d.socket, "POST", "/vms", Some(body.into_bytes()))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if r.status != 201 {
            bail!("define api-{i}: {}", r.text());
        }
        call(&d.socket, "POST", &format!("/vms/api-{i}/start"))?;
    }
    eprintln!(
        "vt-bench: {} VMs running; {} clients",
        args.vms, args.clients
    );
    let (list, list_wall) = hammer(&d.socket, args, |_, _, _| "/vms".into())?;
    let (info, info_wall) = hammer(&d.socket, args, |c, i, vms| {
        format!("/vms/api-{}", (c + i) % vms.max(1))
    })?;
    let (first, returned) = start_to_output(&d, args)?;
    let total = (args.clients * args.requests) as f64;
    let mut m = String::from("## API: vtd under load, and `vt start` to first output\n\n");
    m.push_str(&format!(
        "Generated {} by `vt-bench api --vms {} --clients {} --requests {} --starts {}` at revision {}. \
         A real `vtd` (release build) with {} tiny-guest VMs defined and running on the host's /dev/kvm \
         (`Ending::Halt`, 16 MiB); {} client threads start together and each sends {} requests, one \
         Unix-socket connection per request as `vt` does. `info` includes vtd's round trip to the VMM's \
         control socket for its counters. Latency is from just before connect to the whole answer read. \
         Throughput: list {:.0} req/s, info {:.0} req/s. Host: {} cores, load average at start {}.\n\n",
        host::utc_now(), args.vms, args.clients, args.requests, args.starts,
        host::git_revision().unwrap_or_else(|| "unknown".into()),
        args.vms, args.clients, args.requests,
        total / list_wall.as_secs_f64(), total / info_wall.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.trim()
    ));
    m.push_str("| metric | p50 | p99 | min–max | n |\n|---|---|---|---|---|\n");
    m.push_str(&row(
        &format!(
            "`GET /vms` (list of {}), {} clients",
            args.vms, args.clients
        ),
        list,
    ));
    m.push_str(&row(
        &format!("`GET /vms/NAME` (info), {} clients", args.clients),
        info,
    ));
    m.push_str(&row(
        "`vt start` run → first guest byte in console.log",
        first,
    ));
    m.push_str(&row(
        "`vt start` run → `vt` exits (VM up, control socket answering)",
        returned,
    ));
    m.push_str(
        "\nThe start path: `vt` → vtd → fork/exec of `vt-vmm` in its own session → VM built → guest prints; \
         vtd answers once the VMM's control socket answers. For comparison, `vt-vmm` alone reaches the first \
         serial byte in ~2.4 ms (section 1).\n",
    );
    Ok(crate::section::wrap("api", &m))
}

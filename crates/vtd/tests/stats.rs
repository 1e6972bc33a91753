//! Statistics of a running tiny guest through `vtd`: `GET /vms/NAME/stats`,
//! `vt stats`, `GET /metrics` read by the Prometheus Python client's
//! OpenMetrics parser, and `vt top` on a terminal (tmux), its screen read
//! back, quit with `q` — the last two over the read-only socket.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use api::manager::VmState;
use api::stats::{CpuSource, VmStats};
use common::{require_kvm, sibling, wait_for, Vtd};
use serde_json::Value;

/// Parses OpenMetrics text with `prometheus_client`'s parser (strict: a
/// malformed exposition raises); prints `[family, type, sample, labels,
/// value]` rows as JSON.
const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
rows = []
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        rows.append([f.name, f.type, s.name, s.labels, s.value])
print(json.dumps(rows))
"#;

fn parse_metrics(text: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/setup-host.sh installs it with python3-prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of sample `name` with `labels` (all of them given).
fn sample(rows: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    rows.iter()
        .find(|r| {
            r[2] == name
                && r[3].as_object().is_some_and(|l| {
                    l.len() == labels.len()
                        && labels.iter().all(|(k, v)| l.get(*k) == Some(&(*v).into()))
                })
        })
        .and_then(|r| r[4].as_f64())
}

fn tmux(server: &str, args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .args(["-L", server])
        .args(args)
        .output()
        .expect("tmux (scripts/setup-host.sh installs it)")
}

#[test]
fn stats_metrics_and_top_of_a_running_guest() {
    require_kvm!();
    let vtd = Vtd::start("stats");
    let disk = vtd.dir.join("a.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let body = format!(
        r#"{{"name":"a","memory_mib":16,"disks":[{{"path":"{}","format":"raw"}}]}}"#,
        disk.display()
    );
    vtd.expect("POST", "/vms", Some(&body), 201);
    vtd.define("b");
    vtd.expect("POST", "/vms/a/start", None, 200);
    wait_for(
        || vtd.console_log("a") == "tiny guest up\n",
        "the guest's message",
    );

    // The API.
    let s: VmStats = serde_json::from_value(vtd.expect("GET", "/vms/a/stats", None, 200)).unwrap();
    assert_eq!((s.state, s.vcpus, s.memory_mib), (VmState::Running, 1, 16));
    assert_eq!(s.disk_names, ["vda"]);
    assert!(s.cpu_time_ns.is_some_and(|t| t > 0), "{s:?}");
    assert!(matches!(
        s.cpu_source,
        Some(CpuSource::Cgroup | CpuSource::Proc)
    ));
    assert!(s.memory.as_ref().is_some_and(|m| m.rss_kib > 0), "{s:?}");
    let c = s.counters.as_ref().expect("counters");
    assert!(c.detail.vcpus[0].exits.io_out >= 14, "{c:?}");
    assert_eq!(c.detail.disks.len(), 1);
    let b: VmStats = serde_json::from_value(vtd.expect("GET", "/vms/b/stats", None, 200)).unwrap();
    assert_eq!(b.state, VmState::Stopped);
    assert!(b.counters.is_none() && b.cpu_time_ns.is_none());
    vtd.expect("GET", "/vms/nope/stats", None, 404);

    // `vt stats`, text and JSON.
    let out = vtd.vt(&["stats", "a"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("Domain: 'a'"), "{text}");
    for key in [
        "state.state=running",
        "block.count=1",
        "block.0.name=vda",
        "net.count=0",
    ] {
        assert!(text.lines().any(|l| l.trim() == key), "{key} in {text}");
    }
    let exits: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("vcpu.0.exits.io_out="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(exits >= 14);
    let out = vtd.vt(&["stats", "a", "--output", "json"]);
    let j: VmStats = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j.name, "a");
    assert_eq!(vtd.vt(&["stats", "nope"]).status.code(), Some(4));

    // /metrics on the read-only socket, parsed by a real parser.
    let ro = vtd.dir.join("vtd-ro.sock");
    let r = vt_http::call(&ro, "GET", "/metrics", None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-type")
                && v.starts_with("application/openmetrics-text")),
        "{:?}",
        r.headers
    );
    let rows = parse_metrics(&r.text());
    let a = [("vm", "a")];
    assert_eq!(sample(&rows, "vt_vm_up", &a), Some(1.0));
    assert_eq!(sample(&rows, "vt_vm_up", &[("vm", "b")]), Some(0.0));
    assert_eq!(
        sample(&rows, "vt_vm_memory_bytes", &a),
        Some((16 << 20) as f64)
    );
    assert!(sample(&rows, "vt_vm_cpu_seconds_total", &a).is_some_and(|v| v > 0.0));
    assert_eq!(
        sample(&rows, "vt_vm_cpu_seconds_total", &[("vm", "b")]),
        None
    );
    assert!(sample(
        &rows,
        "vt_vm_vcpu_exits_total",
        &[("vm", "a"), ("vcpu", "0"), ("reason", "io_out")]
    )
    .is_some_and(|v| v >= 14.0));
    let vda = [("vm", "a"), ("disk", "vda")];
    assert_eq!(
        sample(&rows, "vt_vm_disk_written_bytes_total", &vda),
        Some(0.0)
    );
    assert_eq!(
        sample(&rows, "vt_vm_disk_read_bytes_total", &vda),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &rows,
            "vt_vm_disk_request_duration_seconds_bucket",
            &[("vm", "a"), ("disk", "vda"), ("le", "+Inf")]
        ),
        Some(0.0)
    );
    let types: Vec<(&str, &str)> = rows
        .iter()
        .filter_map(|r| Some((r[0].as_str()?, r[1].as_str()?)))
        .collect();
    assert!(
        types.contains(&("vt_vm_cpu_seconds", "counter")),
        "{types:?}"
    );
    assert!(types.contains(&("vt_vm_disk_request_duration_seconds", "histogram")));
    assert!(types.contains(&("vt_vm_memory_rss_bytes", "gauge")));

    // `vt top` on a terminal, on the read-only socket; `q` quits.
    let server = format!("vt-top-test-{}", std::process::id());
    let cmd = format!(
        "VT_SOCKET={} {} top --delay 0.3",
        ro.display(),
        sibling("vt").display()
    );
    let started = tmux(
        &server,
        &["new-session", "-d", "-x", "150", "-y", "30", &cmd],
    );
    assert!(started.status.success(), "{started:?}");
    let screen =
        || String::from_utf8_lossy(&tmux(&server, &["capture-pane", "-p"]).stdout).into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last;
    // The second frame has rates: a's CPU% is a number, b's a dash.
    let shown = loop {
        last = screen();
        let row_a = last.lines().find(|l| l.starts_with("a "));
        let cpu = row_a
            .and_then(|r| r.split_whitespace().nth(3))
            .and_then(|c| c.parse::<f64>().ok());
        if last.contains("vt top - 2 VMs, 1 running") && cpu.is_some() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let quit = tmux(&server, &["send-keys", "q"]);
    let gone = shown && quit.status.success() && {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            if !tmux(&server, &["has-session"]).status.success() {
                break true;
            }
            if Instant::now() > until {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let _ = tmux(&server, &["kill-server"]);
    assert!(shown, "vt top's screen:\n{last}");
    let row_b = last
        .lines()
        .find(|l| l.starts_with("b "))
        .unwrap_or_default();
    assert!(row_b.contains("stopped"), "{last}");
    assert!(gone, "vt top did not quit on q");
    vtd.expect("POST", "/vms/a/stop", None, 200);
}

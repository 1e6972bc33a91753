//! `vt stats NAME`: one VM's statistics (`GET /vms/NAME/stats`), as
//! `key=value` lines named like `virsh domstats` (`cpu.time`,
//! `block.0.rd.bytes`, `net.0.tx.pkts`, ...), or JSON.

use api::stats::VmStats;

use super::client::{CliResult, Client};
use super::output::{print_json, Format};

/// Prints VM `name`'s statistics: under `Domain: 'NAME'`, one indented
/// `key=value` line each ([`lines`]: times in ns, sizes in bytes), or the
/// [`VmStats`] as JSON with `--output json`.
pub fn run(c: &Client, name: &str, format: Format) -> CliResult {
    let s: VmStats = c.json("GET", &format!("/vms/{name}/stats"), None)?;
    match format {
        Format::Json => print_json(&s),
        Format::Table => {
            println!("Domain: '{}'", s.name);
            for (k, v) in lines(&s) {
                println!("  {k}={v}");
            }
        }
    }
    Ok(())
}

/// The `key=value` pairs of `s` (times in ns, sizes in bytes).
pub fn lines(s: &VmStats) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |k: String, v: String| out.push((k, v));
    put("state.state".into(), s.state.as_str().into());
    put("vcpu.current".into(), s.vcpus.to_string());
    put("balloon.maximum".into(), (s.memory_mib << 20).to_string());
    if let Some(t) = s.cpu_time_ns {
        put("cpu.time".into(), t.to_string());
    }
    if let Some(src) = s.cpu_source {
        put(
            "cpu.source".into(),
            serde_json::to_value(src)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        );
    }
    if let Some(m) = &s.memory {
        put("memory.rss".into(), (m.rss_kib << 10).to_string());
        put(
            "memory.guest_resident".into(),
            (m.guest_resident_kib << 10).to_string(),
        );
        put("memory.overhead".into(), (m.overhead_kib << 10).to_string());
    }
    let Some(c) = &s.counters else {
        return out;
    };
    put("vmm.uptime_ms".into(), c.uptime_ms.to_string());
    put("vmm.boots".into(), c.boots.to_string());
    let d = &c.detail;
    put(
        "memory.guest_mincore".into(),
        d.memory.guest_resident_bytes.to_string(),
    );
    for v in &d.vcpus {
        let p = format!("vcpu.{}", v.id);
        put(format!("{p}.time"), v.cpu_time_ns.to_string());
        for (k, n) in v.exits.by_reason() {
            put(format!("{p}.exits.{k}"), n.to_string());
        }
    }
    put("block.count".into(), d.disks.len().to_string());
    for k in &d.disks {
        let p = format!("block.{}", k.index);
        let name = s
            .disk_names
            .get(k.index as usize)
            .cloned()
            .unwrap_or_default();
        put(format!("{p}.name"), name);
        for (key, n) in [
            ("rd.reqs", k.read_ops),
            ("rd.bytes", k.read_bytes),
            ("wr.reqs", k.write_ops),
            ("wr.bytes", k.write_bytes),
            ("fl.reqs", k.flush_ops),
            ("discard.reqs", k.discard_ops),
            ("discard.bytes", k.discard_bytes),
            ("errors", k.errors),
            ("throttled.reqs", k.throttled),
            ("throttled.time", k.throttled_ns),
            ("interrupts", k.interrupts),
        ] {
            put(format!("{p}.{key}"), n.to_string());
        }
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            let v = k
                .latency_quantile_us(q)
                .map_or_else(|| "-".to_string(), |us| us.to_string());
            put(format!("{p}.latency.{name}_us"), v);
        }
    }
    put("net.count".into(), d.nets.len().to_string());
    for n in &d.nets {
        let p = format!("net.{}", n.index);
        put(format!("{p}.name"), n.tap.clone());
        for (key, v) in [
            ("rx.bytes", n.rx_bytes),
            ("rx.pkts", n.rx_packets),
            ("rx.drop", n.rx_dropped),
            ("tx.bytes", n.tx_bytes),
            ("tx.pkts", n.tx_packets),
            ("tx.drop", n.tx_dropped),
            ("tap_errors", n.tap_errors),
            ("rx.interrupts", n.rx_interrupts),
            ("tx.interrupts", n.tx_interrupts),
        ] {
            put(format!("{p}.{key}"), v.to_string());
        }
    }
    out
}

//! `GET /metrics`: every VM's statistics in the OpenMetrics text format
//! (Prometheus), encoded by the `prometheus-client` crate from a
//! [`Collector`] over one scrape's [`VmStats`].
//!
//! Names follow Prometheus' conventions: `vt_vm_` prefix, base units
//! (seconds, bytes), `_total` on counters. Labels: `vm` on every series;
//! `disk` (the guest's name, `vda`...), `interface` (the tap), `vcpu`,
//! `reason` (exit reason), `queue` (`rx`/`tx`) where they apply. A stopped
//! VM has only `vt_vm_up`, `vt_vm_vcpus` and `vt_vm_memory_bytes`.

use api::counters::LATENCY_BUCKETS_US;
use api::stats::VmStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

type Labels = Vec<(&'static str, String)>;

/// One sample's value.
enum Value {
    Counter(u64),
    Seconds(f64),
    Gauge(i64),
    /// A histogram: sum (seconds), and per-bucket counts (not cumulative)
    /// with their upper bounds (seconds; the last `+Inf`).
    Histogram(f64, Vec<(f64, u64)>),
}

/// One metric family: name (without unit and `_total`), help, unit,
/// type, samples.
struct Family {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, unit: Option<Unit>, kind: MetricType) -> Self {
        Family {
            name,
            help,
            unit,
            kind,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Labels, v: Value) {
        self.samples.push((labels, v));
    }
}

/// One scrape's VMs.
#[derive(Debug)]
struct Scrape(Vec<VmStats>);

fn vm(s: &VmStats) -> Labels {
    vec![("vm", s.name.clone())]
}

fn with(s: &VmStats, more: &[(&'static str, String)]) -> Labels {
    let mut l = vm(s);
    l.extend(more.iter().cloned());
    l
}

fn ns(v: u64) -> Value {
    Value::Seconds(v as f64 / 1e9)
}

impl Scrape {
    fn families(&self) -> Vec<Family> {
        use MetricType::{Counter as C, Gauge as G, Histogram as H};
        use Value::{Counter, Gauge};
        let (b, sec) = (Some(Unit::Bytes), Some(Unit::Seconds));
        let mut up = Family::new(
            "vt_vm_up",
            "1 while the VM's VMM runs (running or paused), else 0.",
            None,
            G,
        );
        let mut paused = Family::new("vt_vm_paused", "1 while the VM is paused.", None, G);
        let mut vcpus = Family::new("vt_vm_vcpus", "vCPUs of the VM's definition.", None, G);
        let mut mem = Family::new(
            "vt_vm_memory",
            "Guest RAM of the VM's definition.",
            b.clone(),
            G,
        );
        let mut cpu = Family::new(
            "vt_vm_cpu",
            "Host CPU time the VM used (its cgroup, else its VMM process) since its VMM started.",
            sec.clone(),
            C,
        );
        let mut uptime = Family::new(
            "vt_vm_uptime",
            "Time since the VM's VMM started.",
            sec.clone(),
            G,
        );
        let mut boots = Family::new(
            "vt_vm_boots",
            "Times the VM was built by its VMM (1 + guest reboots).",
            None,
            C,
        );
        let mut resident = Family::new(
            "vt_vm_memory_resident",
            "Guest RAM pages resident in host memory (the VMM's mincore).",
            b.clone(),
            G,
        );
        let mut rss = Family::new(
            "vt_vm_memory_rss",
            "Resident set of the VMM process (VmRSS).",
            b.clone(),
            G,
        );
        let mut overhead = Family::new(
            "vt_vm_memory_overhead",
            "The VMM's own resident memory (VmRSS minus guest RAM).",
            b.clone(),
            G,
        );
        let mut vcpu_time = Family::new(
            "vt_vm_vcpu",
            "CPU time of each vCPU thread.",
            sec.clone(),
            C,
        );
        let mut exits = Family::new(
            "vt_vm_vcpu_exits",
            "vCPU exits to the VMM, by reason.",
            None,
            C,
        );
        let mut rd_b = Family::new("vt_vm_disk_read", "Bytes read by the guest.", b.clone(), C);
        let mut wr_b = Family::new(
            "vt_vm_disk_written",
            "Bytes written by the guest.",
            b.clone(),
            C,
        );
        let mut dc_b = Family::new(
            "vt_vm_disk_discarded",
            "Bytes discarded or zeroed by the guest.",
            b.clone(),
            C,
        );
        let mut rd = Family::new("vt_vm_disk_reads", "Read requests completed.", None, C);
        let mut wr = Family::new("vt_vm_disk_writes", "Write requests completed.", None, C);
        let mut fl = Family::new("vt_vm_disk_flushes", "Flush requests completed.", None, C);
        let mut dc = Family::new(
            "vt_vm_disk_discards",
            "Discard and write-zeroes requests completed.",
            None,
            C,
        );
        let mut errs = Family::new(
            "vt_vm_disk_errors",
            "Requests answered with an error.",
            None,
            C,
        );
        let mut thr = Family::new(
            "vt_vm_disk_throttled",
            "Times the rate limit made a request wait.",
            None,
            C,
        );
        let mut thr_t = Family::new(
            "vt_vm_disk_throttled",
            "Time requests waited for the rate limit.",
            sec.clone(),
            C,
        );
        let mut lat = Family::new(
            "vt_vm_disk_request_duration",
            "Request latency, from the ring to the status byte.",
            sec.clone(),
            H,
        );
        let mut d_irq = Family::new(
            "vt_vm_disk_interrupts",
            "Interrupts sent for the disk's request queue.",
            None,
            C,
        );
        let mut rx_b = Family::new(
            "vt_vm_network_receive",
            "Bytes delivered to the guest (frames without the virtio-net header).",
            b.clone(),
            C,
        );
        let mut tx_b = Family::new("vt_vm_network_transmit", "Bytes the guest sent.", b, C);
        let mut rx_p = Family::new(
            "vt_vm_network_receive_packets",
            "Frames delivered to the guest.",
            None,
            C,
        );
        let mut tx_p = Family::new(
            "vt_vm_network_transmit_packets",
            "Frames the guest sent.",
            None,
            C,
        );
        let mut rx_d = Family::new(
            "vt_vm_network_receive_drops",
            "Frames from the tap dropped (no guest buffer held them).",
            None,
            C,
        );
        let mut tx_d = Family::new(
            "vt_vm_network_transmit_drops",
            "Frames from the guest dropped.",
            None,
            C,
        );
        let mut tap_e = Family::new(
            "vt_vm_network_tap_errors",
            "Failed tap reads and writes.",
            None,
            C,
        );
        let mut n_irq = Family::new(
            "vt_vm_network_interrupts",
            "Interrupts sent per queue.",
            None,
            C,
        );
        for s in &self.0 {
            let active = s.state.is_active();
            up.add(vm(s), Gauge(i64::from(active)));
            paused.add(
                vm(s),
                Gauge(i64::from(s.state == api::manager::VmState::Paused)),
            );
            vcpus.add(vm(s), Gauge(i64::from(s.vcpus)));
            mem.add(vm(s), Gauge((s.memory_mib << 20) as i64));
            if let Some(t) = s.cpu_time_ns {
                cpu.add(vm(s), ns(t));
            }
            if let Some(m) = &s.memory {
                rss.add(vm(s), Gauge((m.rss_kib << 10) as i64));
                overhead.add(vm(s), Gauge((m.overhead_kib << 10) as i64));
            }
            let Some(c) = &s.counters else {
                continue;
            };
            uptime.add(vm(s), Value::Seconds(c.uptime_ms as f64 / 1e3));
            boots.add(vm(s), Counter(c.boots));
            let d = &c.detail;
            resident.add(vm(s), Gauge(d.memory.guest_resident_bytes as i64));
            for v in &d.vcpus {
                let id = v.id.to_string();
                vcpu_time.add(with(s, &[("vcpu", id.clone())]), ns(v.cpu_time_ns));
                for (reason, n) in v.exits.by_reason() {
                    exits.add(
                        with(s, &[("vcpu", id.clone()), ("reason", reason.into())]),
                        Counter(n),
                    );
                }
            }
            for k in &d.disks {
                let name = s
                    .disk_names
                    .get(k.index as usize)
                    .cloned()
                    .unwrap_or_else(|| api::stats::disk_name(k.index as usize));
                let l = || with(s, &[("disk", name.clone())]);
                rd_b.add(l(), Counter(k.read_bytes));
                wr_b.add(l(), Counter(k.write_bytes));
                dc_b.add(l(), Counter(k.discard_bytes));
                rd.add(l(), Counter(k.read_ops));
                wr.add(l(), Counter(k.write_ops));
                fl.add(l(), Counter(k.flush_ops));
                dc.add(l(), Counter(k.discard_ops));
                errs.add(l(), Counter(k.errors));
                thr.add(l(), Counter(k.throttled));
                thr_t.add(l(), ns(k.throttled_ns));
                d_irq.add(l(), Counter(k.interrupts));
                let buckets = LATENCY_BUCKETS_US
                    .iter()
                    .map(|us| *us as f64 / 1e6)
                    .chain([f64::INFINITY])
                    .zip(k.latency_buckets.iter().copied())
                    .collect();
                lat.add(
                    l(),
                    Value::Histogram(k.latency_sum_ns as f64 / 1e9, buckets),
                );
            }
            for n in &d.nets {
                let l = || with(s, &[("interface", n.tap.clone())]);
                rx_b.add(l(), Counter(n.rx_bytes));
                tx_b.add(l(), Counter(n.tx_bytes));
                rx_p.add(l(), Counter(n.rx_packets));
                tx_p.add(l(), Counter(n.tx_packets));
                rx_d.add(l(), Counter(n.rx_dropped));
                tx_d.add(l(), Counter(n.tx_dropped));
                tap_e.add(l(), Counter(n.tap_errors));
                for (q, v) in [("rx", n.rx_interrupts), ("tx", n.tx_interrupts)] {
                    n_irq.add(
                        with(s, &[("interface", n.tap.clone()), ("queue", q.into())]),
                        Counter(v),
                    );
                }
            }
        }
        vec![
            up, paused, vcpus, mem, cpu, uptime, boots, resident, rss, overhead, vcpu_time, exits,
            rd_b, wr_b, dc_b, rd, wr, fl, dc, errs, thr, thr_t, lat, d_irq, rx_b, tx_b, rx_p, tx_p,
            rx_d, tx_d, tap_e, n_irq,
        ]
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in self.families() {
            if f.samples.is_empty() {
                continue;
            }
            let mut m = encoder.encode_descriptor(f.name, f.help, f.unit.as_ref(), f.kind)?;
            for (labels, v) in &f.samples {
                let mut e = m.encode_family(labels)?;
                match v {
                    Value::Counter(n) => e.encode_counter::<NoLabelSet, _, u64>(n, None)?,
                    Value::Seconds(x) if f.kind == MetricType::Counter => {
                        e.encode_counter::<NoLabelSet, _, f64>(x, None)?
                    }
                    Value::Seconds(x) => e.encode_gauge(x)?,
                    Value::Gauge(n) => e.encode_gauge(n)?,
                    Value::Histogram(sum, buckets) => {
                        let count = buckets.iter().map(|b| b.1).sum();
                        e.encode_histogram::<NoLabelSet>(*sum, count, buckets, None)?
                    }
                }
            }
        }
        Ok(())
    }
}

/// The OpenMetrics text for `vms`.
pub fn encode(vms: Vec<VmStats>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(vms)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

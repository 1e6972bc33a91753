//! Device counters: relaxed atomics, bumped by the one worker thread that
//! serves a device and read by the control socket's threads. A device gets
//! its counters from the VMM and keeps them across resets and guest reboots
//! (the VMM hands the same ones to the rebuilt device).
//!
//! `VT_VMM_COUNTERS=off` in the VMM's environment turns device counting off
//! ([`enabled`]): the devices then get no counters at all (the benchmark's
//! "without" side).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use api::counters::{DiskCounters, NetCounters, LATENCY_BUCKETS_US};

/// Whether device counting is on: `VT_VMM_COUNTERS` is not `off`.
pub fn enabled() -> bool {
    std::env::var("VT_VMM_COUNTERS").map_or(true, |v| v != "off")
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Relaxed);
}

/// What a request of a virtio-blk queue was, for [`DiskStats::request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOp {
    /// VIRTIO_BLK_T_IN.
    Read,
    /// VIRTIO_BLK_T_OUT.
    Write,
    /// VIRTIO_BLK_T_FLUSH.
    Flush,
    /// Discard or write-zeroes.
    Discard,
    /// GET_ID and anything else (counted in latency and errors only).
    Other,
}

/// One disk's counters ([`DiskCounters`] as atomics).
#[derive(Debug, Default)]
pub struct DiskStats {
    read_ops: AtomicU64,
    read_bytes: AtomicU64,
    write_ops: AtomicU64,
    write_bytes: AtomicU64,
    flush_ops: AtomicU64,
    discard_ops: AtomicU64,
    discard_bytes: AtomicU64,
    errors: AtomicU64,
    throttled: AtomicU64,
    throttled_ns: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_ns: AtomicU64,
    interrupts: [AtomicU64; 1],
}

impl DiskStats {
    /// Counts one finished request: its kind, the bytes it covered, whether
    /// it succeeded and how long it took.
    pub fn request(&self, op: DiskOp, bytes: u64, ok: bool, took: Duration) {
        if !ok {
            add(&self.errors, 1);
        } else {
            match op {
                DiskOp::Read => {
                    add(&self.read_ops, 1);
                    add(&self.read_bytes, bytes);
                }
                DiskOp::Write => {
                    add(&self.write_ops, 1);
                    add(&self.write_bytes, bytes);
                }
                DiskOp::Flush => add(&self.flush_ops, 1),
                DiskOp::Discard => {
                    add(&self.discard_ops, 1);
                    add(&self.discard_bytes, bytes);
                }
                DiskOp::Other => {}
            }
        }
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        if let Some(b) = self.latency.get(i) {
            add(b, 1);
        }
        add(
            &self.latency_sum_ns,
            took.as_nanos().min(u128::from(u64::MAX)) as u64,
        );
    }

    /// A request had to wait for the rate limit.
    pub fn throttled(&self) {
        add(&self.throttled, 1);
    }

    /// Requests waited `d` for the rate limit.
    pub fn throttled_for(&self, d: Duration) {
        add(
            &self.throttled_ns,
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
        );
    }

    /// The per-queue interrupt counters (one queue).
    pub fn interrupts(&self) -> &[AtomicU64] {
        &self.interrupts
    }

    /// The counters now, as disk `index`.
    pub fn snapshot(&self, index: u32) -> DiskCounters {
        DiskCounters {
            index,
            read_ops: get(&self.read_ops),
            read_bytes: get(&self.read_bytes),
            write_ops: get(&self.write_ops),
            write_bytes: get(&self.write_bytes),
            flush_ops: get(&self.flush_ops),
            discard_ops: get(&self.discard_ops),
            discard_bytes: get(&self.discard_bytes),
            errors: get(&self.errors),
            throttled: get(&self.throttled),
            throttled_ns: get(&self.throttled_ns),
            latency_buckets: self.latency.iter().map(get).collect(),
            latency_sum_ns: get(&self.latency_sum_ns),
            interrupts: get(&self.interrupts[0]),
        }
    }
}

/// One NIC's counters ([`NetCounters`] as atomics).
#[derive(Debug, Default)]
pub struct NetStats {
    /// Frames handed to the guest (bumped by [`NetStats::received`]).
    pub rx_packets: AtomicU64,
    /// Bytes of the frames handed to the guest, virtio-net header excluded.
    pub rx_bytes: AtomicU64,
    /// Frames the guest sent out on the tap (bumped by [`NetStats::sent`]).
    pub tx_packets: AtomicU64,
    /// Bytes of the frames sent out on the tap, virtio-net header excluded.
    pub tx_bytes: AtomicU64,
    /// Frames read from the tap that no guest receive buffer could hold.
    pub rx_dropped: AtomicU64,
    /// Frames from the guest not sent: too many descriptors for one
    /// `writev`, or the tap refused the write.
    pub tx_dropped: AtomicU64,
    /// Tap reads and writes that failed other than with "would block".
    pub tap_errors: AtomicU64,
    interrupts: [AtomicU64; 2],
}

impl NetStats {
    /// A frame of `bytes` (header excluded) reached the guest.
    pub fn received(&self, bytes: u64) {
        add(&self.rx_packets, 1);
        add(&self.rx_bytes, bytes);
    }

    /// A frame of `bytes` (header excluded) went out on the tap.
    pub fn sent(&self, bytes: u64) {
        add(&self.tx_packets, 1);
        add(&self.tx_bytes, bytes);
    }

    /// Bumps one counter by one (`rx_dropped`, `tx_dropped`, `tap_errors`).
    pub fn bump(counter: &AtomicU64) {
        add(counter, 1);
    }

    /// The per-queue interrupt counters (receive, transmit).
    pub fn interrupts(&self) -> &[AtomicU64] {
        &self.interrupts
    }

    /// The counters now, as NIC `index` on `tap`.
    pub fn snapshot(&self, index: u32, tap: &str) -> NetCounters {
        NetCounters {
            index,
            tap: tap.to_string(),
            rx_packets: get(&self.rx_packets),
            rx_bytes: get(&self.rx_bytes),
            tx_packets: get(&self.tx_packets),
            tx_bytes: get(&self.tx_bytes),
            rx_dropped: get(&self.rx_dropped),
            tx_dropped: get(&self.tx_dropped),
            tap_errors: get(&self.tap_errors),
            rx_interrupts: get(&self.interrupts[0]),
            tx_interrupts: get(&self.interrupts[1]),
        }
    }
}

/// Counts interrupts of a device's queues: a device hands its transport
/// one of these (queue `i` is entry `i`).
pub trait QueueInterrupts: Send + Sync {
    /// One counter per queue, by queue index.
    fn queue_interrupts(&self) -> &[AtomicU64];
}

impl QueueInterrupts for DiskStats {
    fn queue_interrupts(&self) -> &[AtomicU64] {
        self.interrupts()
    }
}

impl QueueInterrupts for NetStats {
    fn queue_interrupts(&self) -> &[AtomicU64] {
        self.interrupts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_land_in_their_counters_and_buckets() {
        let s = DiskStats::default();
        s.request(DiskOp::Write, 4096, true, Duration::from_micros(7));
        s.request(DiskOp::Write, 512, true, Duration::from_micros(10));
        s.request(DiskOp::Read, 1 << 20, true, Duration::from_millis(3));
        s.request(DiskOp::Flush, 0, true, Duration::from_secs(2));
        s.request(DiskOp::Read, 512, false, Duration::from_micros(11));
        s.throttled();
        s.throttled_for(Duration::from_millis(5));
        let c = s.snapshot(1);
        assert_eq!((c.write_ops, c.write_bytes), (2, 4608));
        assert_eq!((c.read_ops, c.read_bytes), (1, 1 << 20));
        assert_eq!((c.flush_ops, c.errors), (1, 1));
        assert_eq!((c.throttled, c.throttled_ns), (1, 5_000_000));
        assert_eq!(c.latency_buckets[0], 2, "7 and 10 µs: bucket <=10");
        assert_eq!(c.latency_buckets[1], 1, "11 µs: bucket <=25");
        assert_eq!(c.latency_buckets[8], 1, "3 ms: bucket <=5000");
        assert_eq!(c.latency_buckets[12], 1, "2 s: +Inf");
        assert_eq!(c.latency_buckets.iter().sum::<u64>(), 5);
    }

    /// The counters' cost per request, in ns: `cargo test --release -p
    /// devices counting_cost -- --ignored --nocapture` (BENCHMARKS.md).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn counting_cost() {
        const N: u32 = 10_000_000;
        let d = DiskStats::default();
        let t = std::time::Instant::now();
        for i in 0..N {
            // What the block worker adds per request: two clock reads and
            // the counting.
            let start = std::time::Instant::now();
            let op = if i % 2 == 0 {
                DiskOp::Read
            } else {
                DiskOp::Write
            };
            d.request(op, 4096, true, start.elapsed());
        }
        let disk_ns = t.elapsed().as_nanos() as f64 / f64::from(N);
        let n = NetStats::default();
        let t = std::time::Instant::now();
        for i in 0..N {
            n.received(std::hint::black_box(u64::from(i % 1500)));
            n.interrupts()[0].fetch_add(1, Relaxed);
        }
        let net_ns = t.elapsed().as_nanos() as f64 / f64::from(N);
        let c = d.snapshot(0);
        assert_eq!(c.read_ops + c.write_ops, u64::from(N));
        println!(
            "disk request counted: {disk_ns:.1} ns; frame + interrupt counted: {net_ns:.1} ns"
        );
    }

    #[test]
    fn frames_and_drops() {
        let s = NetStats::default();
        s.received(100);
        s.sent(60);
        s.sent(40);
        NetStats::bump(&s.rx_dropped);
        s.interrupts()[1].fetch_add(3, Relaxed);
        let c = s.snapshot(0, "vt0");
        assert_eq!((c.rx_packets, c.rx_bytes), (1, 100));
        assert_eq!((c.tx_packets, c.tx_bytes), (2, 100));
        assert_eq!((c.rx_dropped, c.tx_interrupts), (1, 3));
    }
}

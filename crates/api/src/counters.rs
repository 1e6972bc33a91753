//! What one VMM counted since it started (`GET /vm/counters` on its control
//! socket, the `detail` part of [`crate::control::VmmCounters`]): per vCPU,
//! memory, per disk, per NIC. Every count is cumulative over guest reboots
//! (a rebuilt device keeps counting where the old one stopped); times are
//! nanoseconds, sizes bytes.

use serde::{Deserialize, Serialize};

/// Upper bounds (inclusive, microseconds) of the disk request latency
/// histogram's buckets; a last, unbounded bucket follows (`+Inf`).
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000,
];

/// Why a vCPU left the guest (KVM_EXIT_*), as counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitCounts {
    /// KVM_EXIT_IO, guest reads of an I/O port.
    pub io_in: u64,
    /// KVM_EXIT_IO, guest writes to an I/O port.
    pub io_out: u64,
    /// KVM_EXIT_MMIO reads.
    pub mmio_read: u64,
    /// KVM_EXIT_MMIO writes.
    pub mmio_write: u64,
    /// KVM_EXIT_INTR: KVM_RUN returned for a signal (a kick from the VMM).
    pub intr: u64,
    /// KVM_EXIT_SYSTEM_EVENT (power-off, reset).
    pub system_event: u64,
    /// Any other exit (halt, shutdown, failed entry, internal error...).
    pub other: u64,
}

impl ExitCounts {
    /// Each reason's name (the field's) and count, in field order.
    pub fn by_reason(&self) -> [(&'static str, u64); 7] {
        [
            ("io_in", self.io_in),
            ("io_out", self.io_out),
            ("mmio_read", self.mmio_read),
            ("mmio_write", self.mmio_write),
            ("intr", self.intr),
            ("system_event", self.system_event),
            ("other", self.other),
        ]
    }
}

/// One vCPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuCounters {
    /// The vCPU's index (0-based).
    pub id: u32,
    /// CPU time its thread used, guest and VMM code alike
    /// (CLOCK_THREAD_CPUTIME_ID), ns.
    pub cpu_time_ns: u64,
    /// Exits by reason.
    pub exits: ExitCounts,
}

/// The guest's memory as the VMM sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryCounters {
    /// Guest RAM size, bytes.
    pub guest_bytes: u64,
    /// Guest RAM pages resident in host memory (mincore(2) on the guest
    /// mappings), bytes.
    pub guest_resident_bytes: u64,
}

/// One disk (`--disk`, in order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskCounters {
    /// The disk's index among the VM's disks (`vda` is 0).
    pub index: u32,
    /// Successful VIRTIO_BLK_T_IN requests.
    pub read_ops: u64,
    /// Bytes the successful VIRTIO_BLK_T_IN requests read.
    pub read_bytes: u64,
    /// Successful VIRTIO_BLK_T_OUT requests.
    pub write_ops: u64,
    /// Bytes the successful VIRTIO_BLK_T_OUT requests wrote.
    pub write_bytes: u64,
    /// Successful VIRTIO_BLK_T_FLUSH requests.
    pub flush_ops: u64,
    /// Successful VIRTIO_BLK_T_DISCARD and T_WRITE_ZEROES requests.
    pub discard_ops: u64,
    /// Bytes the successful VIRTIO_BLK_T_DISCARD and T_WRITE_ZEROES
    /// requests covered.
    pub discard_bytes: u64,
    /// Requests answered with an error status (IOERR or UNSUPP).
    pub errors: u64,
    /// Times the rate limit made a request wait.
    pub throttled: u64,
    /// How long requests waited for the rate limit in all, ns.
    pub throttled_ns: u64,
    /// Request latency (from taking it off the ring to its status byte,
    /// a wait for the rate limit not included: see `throttled_ns`)
    /// histogram: `latency_buckets[i]` counts requests that took at most
    /// [`LATENCY_BUCKETS_US`]`[i]` µs and more than the bound before; the
    /// last entry those above every bound.
    pub latency_buckets: Vec<u64>,
    /// Sum of every counted request's latency, ns.
    pub latency_sum_ns: u64,
    /// Interrupts sent to the guest for the request queue.
    pub interrupts: u64,
}

/// One NIC (`--net`, in order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetCounters {
    /// The NIC's index among the VM's NICs.
    pub index: u32,
    /// Its tap device.
    pub tap: String,
    /// Frames handed to the guest.
    pub rx_packets: u64,
    /// Bytes of the frames handed to the guest (without the virtio-net
    /// header).
    pub rx_bytes: u64,
    /// Frames the guest sent to the tap.
    pub tx_packets: u64,
    /// Bytes of the frames the guest sent to the tap (without the
    /// virtio-net header).
    pub tx_bytes: u64,
    /// Frames from the tap dropped (no guest buffer could hold them).
    pub rx_dropped: u64,
    /// Frames from the guest dropped (unsendable layout, tap refused).
    pub tx_dropped: u64,
    /// Reads and writes the tap failed (other than "would block").
    pub tap_errors: u64,
    /// Interrupts sent to the guest for the receive queue.
    pub rx_interrupts: u64,
    /// Interrupts sent to the guest for the transmit queue.
    pub tx_interrupts: u64,
}

/// Everything beyond the totals of [`crate::control::VmmCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterDetail {
    /// False when the VMM runs with `VT_VMM_COUNTERS=off` (device counters
    /// stay zero; vCPU and memory numbers are still read).
    pub devices_counted: bool,
    /// One entry per configured vCPU, by index.
    pub vcpus: Vec<VcpuCounters>,
    /// The guest's RAM: its size and how much of it is resident.
    pub memory: MemoryCounters,
    /// One entry per `--disk`, in order (all zero when devices are not
    /// counted).
    pub disks: Vec<DiskCounters>,
    /// One entry per `--net`, in order (all zero but index and tap when
    /// devices are not counted).
    pub nets: Vec<NetCounters>,
}

impl DiskCounters {
    /// The latency quantile `q` (0..=1) as the upper bound of its bucket,
    /// µs; None without requests (or when it falls in the unbounded one).
    pub fn latency_quantile_us(&self, q: f64) -> Option<u64> {
        let total: u64 = self.latency_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency_buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return LATENCY_BUCKETS_US.get(i).copied();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_bucket_bounds() {
        let mut d = DiskCounters::default();
        assert_eq!(d.latency_quantile_us(0.5), None);
        d.latency_buckets = vec![0; LATENCY_BUCKETS_US.len() + 1];
        d.latency_buckets[0] = 90;
        d.latency_buckets[6] = 9;
        d.latency_buckets[12] = 1;
        assert_eq!(d.latency_quantile_us(0.5), Some(10));
        assert_eq!(d.latency_quantile_us(0.95), Some(1_000));
        assert_eq!(d.latency_quantile_us(1.0), None);
    }
}

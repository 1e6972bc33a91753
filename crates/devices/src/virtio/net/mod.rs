//! virtio-net (spec 5.1) on a tap device: one receive and one transmit
//! queue served by a worker thread that also waits on the tap.
//!
//! Every frame carries the 12-byte virtio-net header, which the tap
//! understands too (IFF_VNET_HDR), so checksum offload and TSO pass through
//! untouched. Transmit is zero-copy (writev from guest memory); receive
//! reads each frame straight into as many mergeable receive buffers as it
//! needs (VIRTIO_NET_F_MRG_RXBUF), or copies it when it cannot (see `rx`).

pub mod rx;
pub mod tap;
#[cfg(test)]
mod tests;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use api::RateLimit;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};

pub use tap::{Tap, TapError};

use super::chain::{self, Chain, ChainError, Served};
use super::worker::{QueueHandler, Worker};
use super::{ActivateError, Activation, Interrupt, Queue, VirtioDevice, COMMON_FEATURES, TYPE_NET};
use crate::rate_limiter::RateLimiter;
use crate::stats::{NetStats, QueueInterrupts};

/// struct virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size,
/// csum_start, csum_offset, num_buffers.
pub const HDR_LEN: usize = 12;
const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
const TAP_TOKEN: u64 = 0;
const TIMER_TOKEN: u64 = 1;

const F_CSUM: u64 = 1 << 0;
const F_GUEST_CSUM: u64 = 1 << 1;
const F_MAC: u64 = 1 << 5;
const F_GUEST_TSO4: u64 = 1 << 7;
const F_GUEST_TSO6: u64 = 1 << 8;
const F_GUEST_ECN: u64 = 1 << 9;
const F_HOST_TSO4: u64 = 1 << 11;
const F_HOST_TSO6: u64 = 1 << 12;
const F_HOST_ECN: u64 = 1 << 13;
const F_MRG_RXBUF: u64 = 1 << 15;
const F_STATUS: u64 = 1 << 16;
const STATUS_LINK_UP: u16 = 1;

/// A NIC.
pub struct Net {
    tap: Arc<Tap>,
    config: Vec<u8>,
    rate: RateLimit,
    worker: Option<Worker>,
    stats: Option<Arc<NetStats>>,
}

impl Net {
    /// Opens the tap of `config`; its MAC is given or derived from the name.
    pub fn new(config: &api::NetConfig) -> Result<Net, TapError> {
        let mac = config
            .mac_bytes()
            .map_err(|_| TapError::Name(config.mac.clone().unwrap_or_default()))?;
        let tap = match config.fd {
            Some(fd) => Tap::from_fd(fd as i32, &config.tap)?,
            None => Tap::open(&config.tap)?,
        };
        Ok(Net::with_tap(tap, mac, config.rate))
    }

    /// A NIC on an open tap (or a stand-in, see [`Tap::socket_pair`]).
    pub fn with_tap(tap: Tap, mac: [u8; 6], rate: RateLimit) -> Net {
        let mut space = vec![0u8; 10];
        space[..6].copy_from_slice(&mac);
        space[6..8].copy_from_slice(&STATUS_LINK_UP.to_le_bytes());
        space[8..10].copy_from_slice(&1u16.to_le_bytes()); // max_virtqueue_pairs
        Net {
            tap: Arc::new(tap),
            config: space,
            rate,
            worker: None,
            stats: None,
        }
    }

    /// Counts frames in `stats` ([`crate::stats`]).
    pub fn with_stats(mut self, stats: Option<Arc<NetStats>>) -> Net {
        self.stats = stats;
        self
    }
}

/// Offloads the tap may hand the guest, from the features it accepted.
fn tap_offloads(features: u64) -> u32 {
    if features & F_GUEST_CSUM == 0 {
        return 0;
    }
    let mut f = tap::TUN_F_CSUM;
    if features & F_GUEST_TSO4 != 0 {
        f |= tap::TUN_F_TSO4;
    }
    if features & F_GUEST_TSO6 != 0 {
        f |= tap::TUN_F_TSO6;
    }
    if features & F_GUEST_ECN != 0 {
        f |= tap::TUN_F_TSO_ECN;
    }
    f
}

struct Handler {
    rx: rx::Receiver,
    tx: Queue,
    mem: GuestMemoryMmap,
    irq: Arc<Interrupt>,
    tap: Arc<Tap>,
    limiter: RateLimiter,
    stats: Option<Arc<NetStats>>,
    /// Frames wait in the transmit queue: the tap was full, the rate limit
    /// said wait, or the last run stopped on its budget.
    tx_waiting: bool,
}

/// Sends one transmit chain: header and frame, straight from guest memory
/// (public for the fuzzer); counts it in `stats`.
pub fn transmit(
    mem: &GuestMemoryMmap,
    tap: &Tap,
    limiter: &mut RateLimiter,
    chain: &Chain,
    stats: Option<&NetStats>,
) -> Result<Served, ChainError> {
    let len: u64 = chain.readable().map(|d| u64::from(d.len)).sum();
    if len < HDR_LEN as u64 {
        // Nothing sendable; give the buffer back.
        return Ok(Served::Used(0));
    }
    if !limiter.admit(len) {
        return Ok(Served::Later);
    }
    let mut slices = Vec::new();
    for d in chain.readable() {
        if slices.len() >= tap::MAX_IOVECS {
            // More pieces than one writev takes: drop it, as a NIC would.
            if let Some(s) = stats {
                NetStats::bump(&s.tx_dropped);
            }
            return Ok(Served::Used(0));
        }
        for s in mem.get_slices(d.addr, d.len as usize) {
            slices.push(s.map_err(|_| ChainError::OutOfMemory {
                addr: d.addr.0,
                len: d.len,
            })?);
        }
    }
    match tap.write_slices(&slices) {
        Ok(_) => {
            if let Some(s) = stats {
                s.sent(len - HDR_LEN as u64);
            }
        }
        // The tap's queue is full: keep the frame and retry when it drains
        // (the worker polls the tap for writability), as QEMU does.
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            limiter.refund(len);
            return Ok(Served::Later);
        }
        // The host side refused it (down, bad frame): a NIC drops it too.
        Err(e) => {
            log::debug!("virtio-net: tap write: {e}");
            if let Some(s) = stats {
                NetStats::bump(&s.tap_errors);
                NetStats::bump(&s.tx_dropped);
            }
        }
    }
    Ok(Served::Used(0))
}

impl Handler {
    /// True when it stopped on its budget with more to send.
    fn transmit(&mut self) -> bool {
        let (mem, tap, limiter) = (&self.mem, &self.tap, &mut self.limiter);
        let stats = self.stats.as_deref();
        let drained = chain::drain(&mut self.tx, mem, &self.irq, TX, |c| {
            transmit(mem, tap, limiter, c, stats)
        });
        // Anything but an empty queue leaves work behind: a frame waiting
        // for the tap or the rate limit, or a run cut at its budget. The
        // guest will not kick for it (notifications stay off until the
        // queue is drained), so the next tap or timer event must send it.
        self.tx_waiting = drained != chain::Drained::Empty;
        drained == chain::Drained::Budget
    }

    /// True when it stopped on its budget with more to receive.
    fn receive(&mut self) -> bool {
        self.rx
            .run(&self.mem, &self.tap, &mut self.limiter, &self.irq, RX)
    }
}

impl QueueHandler for Handler {
    fn queue_event(&mut self, index: usize) -> bool {
        match index {
            RX => self.receive(),
            _ => self.transmit(),
        }
    }

    fn extra_fds(&self) -> Vec<(RawFd, u64)> {
        let mut v = vec![(self.tap.as_raw_fd(), TAP_TOKEN)];
        v.extend(self.limiter.fd().map(|fd| (fd, TIMER_TOKEN)));
        v
    }

    /// The tap became readable or writable, or the rate limit's timer
    /// fired: receive, and send what was waiting for either.
    fn extra_event(&mut self, token: u64) -> bool {
        if token == TIMER_TOKEN {
            self.limiter.timer_fired();
        }
        let more = self.tx_waiting && self.transmit();
        self.receive() || more
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES
            | F_CSUM
            | F_GUEST_CSUM
            | F_MAC
            | F_GUEST_TSO4
            | F_GUEST_TSO6
            | F_GUEST_ECN
            | F_HOST_TSO4
            | F_HOST_TSO6
            | F_HOST_ECN
            | F_MRG_RXBUF
            | F_STATUS
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, mut a: Activation) -> Result<(), ActivateError> {
        let (rxq, rx_evt) = a.take_queue(RX)?;
        let (txq, tx_evt) = a.take_queue(TX)?;
        self.tap
            .set_offload(tap_offloads(a.features))
            .map_err(ActivateError::Worker)?;
        let limiter = RateLimiter::new(self.rate.bytes_per_sec, self.rate.ops_per_sec)
            .map_err(ActivateError::Worker)?;
        let handler = Handler {
            rx: rx::Receiver::new(rxq, a.features & F_MRG_RXBUF != 0)
                .with_stats(self.stats.clone()),
            tx: txq,
            mem: a.mem,
            irq: a.interrupt,
            tap: self.tap.clone(),
            limiter,
            stats: self.stats.clone(),
            tx_waiting: false,
        };
        let worker = Worker::spawn("virtio-net", vec![Some(rx_evt), Some(tx_evt)], handler)
            .map_err(ActivateError::Worker)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn queue_interrupts(&self) -> Option<Arc<dyn QueueInterrupts>> {
        self.stats.clone().map(|s| s as Arc<dyn QueueInterrupts>)
    }

    fn reset(&mut self) {
        self.worker = None;
    }
}

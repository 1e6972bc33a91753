//! virtio-blk (spec 5.2): one request queue served by a worker thread that
//! does the disk I/O, so a slow disk never stalls a vCPU.
//!
//! Offered: flush (fdatasync: a completed flush is on stable storage),
//! GET_ID (the serial), discard and write-zeroes (writable disks), read-only
//! (F_RO: writes fail with IOERR), indirect descriptors, event index, and a
//! per-disk token-bucket rate limit.

pub mod request;
#[cfg(test)]
mod tests;

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

use vm_memory::GuestMemoryMmap;

/// The disk backends live in the `disk` crate; re-exported for the code
/// that knew them here.
pub mod backend {
    pub use disk::{DiskBackend, OpenError, RawFile, SECTOR_SIZE};
}
pub use disk::{DiskBackend, OpenError, RawFile, SECTOR_SIZE};
use request::Request;

use super::chain::{self, Chain, ChainError, Served};
use super::worker::{QueueHandler, Worker};
use super::{
    ActivateError, Activation, Interrupt, Queue, VirtioDevice, COMMON_FEATURES, TYPE_BLOCK,
};
use crate::rate_limiter::RateLimiter;
use crate::stats::{DiskStats, QueueInterrupts};

const QUEUE_SIZE: u16 = 256;
const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const F_DISCARD: u64 = 1 << 13;
const F_WRITE_ZEROES: u64 = 1 << 14;
/// Largest discard / write-zeroes in sectors (4 GiB - 512).
const MAX_ZERO_SECTORS: u32 = u32::MAX >> 9;
const TIMER_TOKEN: u64 = 0;

/// The device's settings.
pub struct BlockOptions {
    pub readonly: bool,
    pub serial: Option<String>,
    pub limiter: RateLimiter,
    /// Where to count requests ([`crate::stats`]); None counts nothing.
    pub stats: Option<Arc<DiskStats>>,
}

/// A virtio-blk device on a [`DiskBackend`].
pub struct Block {
    config: Vec<u8>,
    features: u64,
    state: Option<(Box<dyn DiskBackend>, RateLimiter)>,
    readonly: bool,
    serial: Vec<u8>,
    worker: Option<Worker>,
    /// The worker hands the disk back when it stops (reset), here.
    returned: Option<std::sync::mpsc::Receiver<(Box<dyn DiskBackend>, RateLimiter)>>,
    stats: Option<Arc<DiskStats>>,
}

/// The configuration space (struct virtio_blk_config, up to
/// write_zeroes_may_unmap).
fn config_space(capacity: u64) -> Vec<u8> {
    let mut c = vec![0u8; 60];
    let mut put = |at: usize, v: &[u8]| c[at..at + v.len()].copy_from_slice(v);
    put(0, &(capacity / SECTOR_SIZE).to_le_bytes());
    put(12, &u32::from(QUEUE_SIZE - 2).to_le_bytes()); // seg_max
    put(20, &(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
    put(34, &1u16.to_le_bytes()); // num_queues
    put(36, &MAX_ZERO_SECTORS.to_le_bytes()); // max_discard_sectors
    put(40, &(request::MAX_SEGMENTS as u32).to_le_bytes()); // max_discard_seg
    put(44, &1u32.to_le_bytes()); // discard_sector_alignment
    put(48, &MAX_ZERO_SECTORS.to_le_bytes()); // max_write_zeroes_sectors
    put(52, &(request::MAX_SEGMENTS as u32).to_le_bytes()); // max_write_zeroes_seg
    c[56] = 1; // write_zeroes_may_unmap
    c
}

impl Block {
    pub fn new(disk: Box<dyn DiskBackend>, options: BlockOptions) -> Self {
        let mut features = COMMON_FEATURES | F_SEG_MAX | F_BLK_SIZE | F_FLUSH;
        if options.readonly {
            features |= F_RO;
        } else {
            features |= F_DISCARD | F_WRITE_ZEROES;
        }
        Block {
            config: config_space(disk.size()),
            features,
            state: Some((disk, options.limiter)),
            readonly: options.readonly,
            serial: options.serial.unwrap_or_default().into_bytes(),
            worker: None,
            returned: None,
            stats: options.stats,
        }
    }
}

struct Handler {
    queue: Queue,
    mem: GuestMemoryMmap,
    irq: Arc<Interrupt>,
    disk: Box<dyn DiskBackend>,
    limiter: RateLimiter,
    readonly: bool,
    serial: Vec<u8>,
    stats: Option<Arc<DiskStats>>,
    /// When the rate limit first held back the request now waiting.
    throttled_since: Option<Instant>,
    give_back: std::sync::mpsc::Sender<(Box<dyn DiskBackend>, RateLimiter)>,
}

struct Io<'a> {
    mem: &'a GuestMemoryMmap,
    disk: &'a mut dyn DiskBackend,
    limiter: &'a mut RateLimiter,
    readonly: bool,
    serial: &'a [u8],
    stats: Option<&'a DiskStats>,
    throttled_since: &'a mut Option<Instant>,
}

impl Io<'_> {
    fn serve(&mut self, chain: &Chain) -> Result<Served, ChainError> {
        let Some(stats) = self.stats else {
            let req = Request::parse(self.mem, chain)?;
            if !self.limiter.admit(req.cost(self.disk.size())) {
                return Ok(Served::Later);
            }
            let n = req.execute(self.mem, self.disk, self.readonly, self.serial)?;
            return Ok(Served::Used(n));
        };
        let start = Instant::now();
        let req = Request::parse(self.mem, chain)?;
        if !self.limiter.admit(req.cost(self.disk.size())) {
            if self.throttled_since.is_none() {
                *self.throttled_since = Some(start);
                stats.throttled();
            }
            return Ok(Served::Later);
        }
        if let Some(since) = self.throttled_since.take() {
            stats.throttled_for(start.saturating_duration_since(since));
        }
        let o = req.execute_counted(self.mem, self.disk, self.readonly, self.serial)?;
        stats.request(req.op(), o.bytes, o.ok, start.elapsed());
        Ok(Served::Used(o.used))
    }
}

impl Handler {
    fn drain(&mut self) -> bool {
        let mut io = Io {
            mem: &self.mem,
            disk: self.disk.as_mut(),
            limiter: &mut self.limiter,
            readonly: self.readonly,
            serial: &self.serial,
            stats: self.stats.as_deref(),
            throttled_since: &mut self.throttled_since,
        };
        chain::drain(&mut self.queue, &self.mem, &self.irq, 0, |c| io.serve(c))
            == chain::Drained::Budget
    }
}

impl QueueHandler for Handler {
    fn queue_event(&mut self, _index: usize) -> bool {
        self.drain()
    }

    fn extra_fds(&self) -> Vec<(RawFd, u64)> {
        self.limiter
            .fd()
            .map(|fd| (fd, TIMER_TOKEN))
            .into_iter()
            .collect()
    }

    fn extra_event(&mut self, _token: u64) -> bool {
        self.limiter.timer_fired();
        self.drain()
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        // Hand the disk back to the device for the next activation.
        let disk = std::mem::replace(&mut self.disk, Box::new(NoDisk));
        let limiter = std::mem::replace(&mut self.limiter, RateLimiter::unlimited());
        let _ = self.give_back.send((disk, limiter));
    }
}

/// Placeholder left in a dropped handler.
struct NoDisk;
impl DiskBackend for NoDisk {
    fn size(&self) -> u64 {
        0
    }
    fn read_at(&mut self, _: u64, _: &[vm_memory::VolatileSlice]) -> std::io::Result<()> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn write_at(&mut self, _: u64, _: &[vm_memory::VolatileSlice]) -> std::io::Result<()> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn discard(&mut self, _: u64, _: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn write_zeroes(&mut self, _: u64, _: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::NotFound.into())
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, mut a: Activation) -> Result<(), ActivateError> {
        let (queue, evt) = a.take_queue(0)?;
        let (disk, limiter) = self.state.take().ok_or(ActivateError::Worker(
            std::io::ErrorKind::ResourceBusy.into(),
        ))?;
        let (give_back, returned) = std::sync::mpsc::channel();
        self.returned = Some(returned);
        let handler = Handler {
            queue,
            mem: a.mem,
            irq: a.interrupt,
            disk,
            limiter,
            readonly: self.readonly,
            serial: self.serial.clone(),
            stats: self.stats.clone(),
            throttled_since: None,
            give_back,
        };
        let worker =
            Worker::spawn("virtio-blk", vec![Some(evt)], handler).map_err(ActivateError::Worker)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn queue_interrupts(&self) -> Option<Arc<dyn QueueInterrupts>> {
        self.stats.clone().map(|s| s as Arc<dyn QueueInterrupts>)
    }

    fn reset(&mut self) {
        // Joins the worker; its handler sends the disk back as it drops.
        self.worker = None;
        if let Some(rx) = self.returned.take() {
            if let Ok(state) = rx.try_recv() {
                self.state = Some(state);
            }
        }
    }
}

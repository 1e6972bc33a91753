//! virtio-balloon (virtio spec 5.5): the host asks the guest to give back
//! memory (`num_pages`), the guest's driver hands over pages on the inflate
//! queue, takes them back on the deflate queue, and (with
//! `VIRTIO_BALLOON_F_REPORTING`) reports ranges it freed on the reporting
//! queue. Pages handed over or reported are given back to the host with
//! `madvise(MADV_DONTNEED)` ([`discard`]), after checking that they lie
//! inside guest RAM: page numbers and ranges come from the guest and are
//! hostile. The statistics queue ([`stats`]) carries the guest's memory
//! statistics. No free page hinting.

pub mod discard;
pub mod stats;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::chain::{self, Chain, ChainError, Served};
use super::worker::{QueueHandler, Worker};
use super::{
    read_config_bytes, ActivateError, Activation, Interrupt, Queue, VirtioDevice, COMMON_FEATURES,
    TYPE_BALLOON,
};
use discard::{discard, runs, Discarded, PAGE_SIZE};
pub use stats::BalloonStats;

/// The guest sends memory statistics on a queue (spec 5.5.3).
pub const F_STATS_VQ: u64 = 1 << 1;
/// The guest may take pages back from the balloon when it runs out of
/// memory (spec 5.5.3).
pub const F_DEFLATE_ON_OOM: u64 = 1 << 2;
/// The guest reports free pages on a queue (spec 5.5.3).
pub const F_REPORTING: u64 = 1 << 5;

const QUEUE_SIZE: u16 = 256;
const INFLATE: usize = 0;
const DEFLATE: usize = 1;
/// The statistics queue's index (when negotiated).
const STATS: usize = 2;
/// The reporting queue's index: after the statistics queue when that is
/// negotiated (the driver numbers only the queues it uses), else 2. No
/// free page hint queue is offered.
fn reporting_index(features: u64) -> usize {
    if features & F_STATS_VQ != 0 {
        3
    } else {
        2
    }
}
/// The worker's token for a statistics refresh request.
const REFRESH: u64 = 0;
/// Page numbers read from guest memory at once.
const PFN_CHUNK: usize = 1024;

/// What the balloon offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalloonOptions {
    /// Offer `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`.
    pub deflate_on_oom: bool,
    /// Offer `VIRTIO_BALLOON_F_REPORTING`.
    pub free_page_reporting: bool,
    /// Offer `VIRTIO_BALLOON_F_STATS_VQ`.
    pub stats: bool,
}

/// The balloon's state shared with the control API: the target the host
/// set, what the driver says it holds, and what was given back. It
/// outlives the device (a guest reboot rebuilds the device; the target
/// stays).
pub struct BalloonControl {
    state: Mutex<State>,
    /// Asks the worker to hand the statistics buffer back to the driver
    /// (which then refills it).
    refresh: EventFd,
    /// 4 KiB pages given back to the host (inflate and reporting).
    freed_pages: AtomicU64,
    /// 4 KiB pages the driver named outside guest RAM (refused).
    refused_pages: AtomicU64,
}

#[derive(Default)]
struct State {
    target_pages: u32,
    actual_pages: u32,
    irq: Option<Arc<Interrupt>>,
    stats: Option<BalloonStats>,
}

/// A snapshot of [`BalloonControl`], in 4 KiB pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalloonState {
    /// `num_pages`: what the host asks the guest to hold in the balloon.
    pub target_pages: u32,
    /// `actual`: what the driver says the balloon holds.
    pub actual_pages: u32,
    /// Pages given back to the host since the VMM started.
    pub freed_pages: u64,
    /// Pages the driver named outside guest RAM (ignored).
    pub refused_pages: u64,
    /// The guest's last memory statistics (with the statistics queue).
    pub stats: Option<BalloonStats>,
}

impl BalloonControl {
    /// A balloon with no target. Errors: no eventfd.
    pub fn new() -> std::io::Result<Self> {
        Ok(BalloonControl {
            state: Mutex::new(State::default()),
            refresh: EventFd::new(libc::EFD_NONBLOCK)?,
            freed_pages: AtomicU64::new(0),
            refused_pages: AtomicU64::new(0),
        })
    }

    /// Asks the driver for fresh statistics (they arrive a moment later;
    /// [`BalloonControl::state`] has the last ones).
    pub fn request_stats(&self) {
        let _ = self.refresh.write(1);
    }

    /// Sets the balloon's target size and tells the driver (a
    /// configuration change interrupt) when it runs.
    pub fn set_target(&self, pages: u32) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.target_pages = pages;
        if let Some(irq) = &s.irq {
            irq.signal_config();
        }
    }

    /// The current state.
    pub fn state(&self) -> BalloonState {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        BalloonState {
            target_pages: s.target_pages,
            actual_pages: s.actual_pages,
            freed_pages: self.freed_pages.load(Ordering::Relaxed),
            refused_pages: self.refused_pages.load(Ordering::Relaxed),
            stats: s.stats,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Counts the outcome of giving `[gpa, gpa + len)` back.
    fn give_back(&self, mem: &GuestMemoryMmap, gpa: u64, len: u64) {
        let pages = len / PAGE_SIZE;
        match discard(mem, gpa, len) {
            Ok(Discarded::Freed) => self.freed_pages.fetch_add(pages, Ordering::Relaxed),
            Ok(Discarded::Kept) => 0,
            Err(_) => self.refused_pages.fetch_add(pages, Ordering::Relaxed),
        };
    }
}

/// The device; [`VirtioDevice::activate`] starts its worker.
pub struct Balloon {
    options: BalloonOptions,
    control: Arc<BalloonControl>,
    worker: Option<Worker>,
}

impl Balloon {
    /// A balloon offering `options`, driven through `control`.
    pub fn new(options: BalloonOptions, control: Arc<BalloonControl>) -> Self {
        Balloon {
            options,
            control,
            worker: None,
        }
    }
}

struct Handler {
    queues: Vec<(usize, Queue)>,
    mem: GuestMemoryMmap,
    irq: Arc<Interrupt>,
    control: Arc<BalloonControl>,
    reporting: usize,
    /// The statistics queue's index, when negotiated.
    stats: Option<usize>,
    /// The statistics buffer the driver posted, held until a refresh.
    stats_head: Option<u16>,
}

impl Handler {
    /// Takes the statistics buffers the driver posted: reads each, keeps
    /// the last one (an older one held goes back at once).
    fn take_stats(&mut self) -> Result<(), ChainError> {
        let (mem, control) = (&self.mem, &self.control);
        let Some((_, queue)) = self.queues.iter_mut().find(|(i, _)| *i == STATS) else {
            return Ok(());
        };
        let q = |e: virtio_queue::Error| ChainError::Queue(e.to_string());
        // At most a queue's worth per call: the driver posts one. With
        // event index, re-enabling notifications publishes `avail_event`:
        // without it the driver would not kick for its next buffer.
        for _ in 0..QUEUE_SIZE {
            let next = queue.iter(mem).map_err(q)?.next();
            let Some(chain) = next else {
                if queue.enable_notification(mem).map_err(q)? {
                    continue;
                }
                break;
            };
            let chain = chain::read_chain(mem, chain)?;
            let parsed = stats::parse(mem, &chain);
            control.with(|s| s.stats = Some(parsed));
            if let Some(old) = self.stats_head.replace(chain.head) {
                queue.add_used(mem, old, 0).map_err(q)?;
            }
        }
        Ok(())
    }

    /// Gives the held statistics buffer back: the driver refills it.
    fn give_stats_back(&mut self) -> Result<(), ChainError> {
        let mem = &self.mem;
        let Some((_, queue)) = self.queues.iter_mut().find(|(i, _)| *i == STATS) else {
            return Ok(());
        };
        let Some(head) = self.stats_head.take() else {
            return Ok(());
        };
        let q = |e: virtio_queue::Error| ChainError::Queue(e.to_string());
        queue.add_used(mem, head, 0).map_err(q)?;
        if queue.needs_notification(mem).map_err(q)? {
            self.irq.signal_queue(STATS);
        }
        Ok(())
    }
}

/// Serves one inflate-queue chain: every readable buffer is an array of
/// le32 page frame numbers (4 KiB pages), given back to the host where
/// they lie inside guest RAM and counted as refused elsewhere.
pub fn inflate(
    mem: &GuestMemoryMmap,
    control: &BalloonControl,
    chain: &Chain,
) -> Result<Served, ChainError> {
    let mut buf = vec![0u8; PFN_CHUNK * 4];
    for d in chain.readable() {
        let len = u64::from(d.len) / 4 * 4;
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            let part = &mut buf[..n];
            let at = GuestAddress(d.addr.0 + done);
            mem.read_slice(part, at)
                .map_err(|_| ChainError::OutOfMemory {
                    addr: d.addr.0,
                    len: d.len,
                })?;
            let pfns: Vec<u32> = part
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            for (first, count) in runs(&pfns) {
                control.give_back(mem, first * PAGE_SIZE, count * PAGE_SIZE);
            }
            done += n as u64;
        }
    }
    Ok(Served::Used(0))
}

/// Serves one reporting-queue chain: every buffer is a free range of
/// guest RAM, given back to the host (refused unless page aligned and
/// inside one region of guest RAM).
pub fn report(
    mem: &GuestMemoryMmap,
    control: &BalloonControl,
    chain: &Chain,
) -> Result<Served, ChainError> {
    for d in &chain.descs {
        control.give_back(mem, d.addr.0, u64::from(d.len));
    }
    Ok(Served::Used(0))
}

impl QueueHandler for Handler {
    fn queue_event(&mut self, index: usize) -> bool {
        if Some(index) == self.stats {
            if !self.irq.failed() {
                if let Err(e) = self.take_stats() {
                    self.irq.fail(&e.to_string());
                }
            }
            return false;
        }
        let reporting = self.reporting;
        let (mem, irq, control) = (&self.mem, &self.irq, &self.control);
        let Some((_, queue)) = self.queues.iter_mut().find(|(i, _)| *i == index) else {
            return false;
        };
        let serve = |c: &Chain| match index {
            INFLATE => inflate(mem, control, c),
            i if i == reporting => report(mem, control, c),
            // Deflate: the pages come back on the guest's next touch.
            _ => Ok(Served::Used(0)),
        };
        chain::drain(queue, mem, irq, index, serve) == chain::Drained::Budget
    }

    fn extra_fds(&self) -> Vec<(std::os::fd::RawFd, u64)> {
        vec![(self.control.refresh.as_raw_fd(), REFRESH)]
    }

    fn extra_event(&mut self, _token: u64) -> bool {
        // Edge-triggered: read the count back to zero. Only a write is a
        // request (the eventfd is also reported writable).
        let mut asked = false;
        while self.control.refresh.read().is_ok() {
            asked = true;
        }
        if asked && !self.irq.failed() {
            if let Err(e) = self.give_stats_back() {
                self.irq.fail(&e.to_string());
            }
        }
        false
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        TYPE_BALLOON
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        let n = 2 + usize::from(self.options.stats) + usize::from(self.options.free_page_reporting);
        vec![QUEUE_SIZE; n]
    }

    fn features(&self) -> u64 {
        let mut f = COMMON_FEATURES;
        if self.options.deflate_on_oom {
            f |= F_DEFLATE_ON_OOM;
        }
        if self.options.free_page_reporting {
            f |= F_REPORTING;
        }
        if self.options.stats {
            f |= F_STATS_VQ;
        }
        f
    }

    /// `num_pages` at 0, `actual` at 4 (le32 each, spec 5.5.4).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let (target, actual) = self.control.with(|s| (s.target_pages, s.actual_pages));
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&target.to_le_bytes());
        bytes[4..].copy_from_slice(&actual.to_le_bytes());
        read_config_bytes(&bytes, offset, data);
    }

    /// The driver writes `actual` (offset 4, 4 bytes); anything else is
    /// ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if let (4, Ok(b)) = (offset, <[u8; 4]>::try_from(data)) {
            self.control
                .with(|s| s.actual_pages = u32::from_le_bytes(b));
        }
    }

    fn activate(&mut self, mut a: Activation) -> Result<(), ActivateError> {
        let mut queues = Vec::new();
        let mut evts = Vec::new();
        let reporting = reporting_index(a.features);
        let wanted = [
            true,
            true,
            a.features & F_STATS_VQ != 0,
            a.features & F_REPORTING != 0,
        ];
        let used: Vec<usize> = [INFLATE, DEFLATE, STATS, reporting]
            .into_iter()
            .zip(wanted)
            .filter_map(|(i, w)| w.then_some(i))
            .collect();
        for index in 0..=used.iter().copied().max().unwrap_or(DEFLATE) {
            if !used.contains(&index) {
                evts.push(None);
                continue;
            }
            let (queue, evt) = a.take_queue(index)?;
            queues.push((index, queue));
            evts.push(Some(evt));
        }
        let handler = Handler {
            queues,
            mem: a.mem,
            irq: a.interrupt.clone(),
            control: self.control.clone(),
            reporting,
            stats: (a.features & F_STATS_VQ != 0).then_some(STATS),
            stats_head: None,
        };
        let worker =
            Worker::spawn("virtio-balloon", evts, handler).map_err(ActivateError::Worker)?;
        self.worker = Some(worker);
        self.control.with(|s| s.irq = Some(a.interrupt));
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
        self.control.with(|s| {
            s.irq = None;
            s.actual_pages = 0;
            s.stats = None;
        });
    }
}

#[cfg(test)]
mod tests;

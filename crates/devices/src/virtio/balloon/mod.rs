//! virtio-balloon (virtio spec 5.5): the host asks the guest to give back
//! memory (`num_pages`), the guest's driver hands over pages on the inflate
//! queue, takes them back on the deflate queue, and (with
//! `VIRTIO_BALLOON_F_REPORTING`) reports ranges it freed on the reporting
//! queue. Pages handed over or reported are given back to the host with
//! `madvise(MADV_DONTNEED)` ([`discard`]), after checking that they lie
//! inside guest RAM: page numbers and ranges come from the guest and are
//! hostile. No statistics queue and no free page hinting.

pub mod discard;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::chain::{self, Chain, ChainError, Served};
use super::worker::{QueueHandler, Worker};
use super::{
    read_config_bytes, ActivateError, Activation, Interrupt, Queue, VirtioDevice, COMMON_FEATURES,
    TYPE_BALLOON,
};
use discard::{discard, runs, Discarded, PAGE_SIZE};

/// The guest may take pages back from the balloon when it runs out of
/// memory (spec 5.5.3).
pub const F_DEFLATE_ON_OOM: u64 = 1 << 2;
/// The guest reports free pages on a queue (spec 5.5.3).
pub const F_REPORTING: u64 = 1 << 5;

const QUEUE_SIZE: u16 = 256;
const INFLATE: usize = 0;
const DEFLATE: usize = 1;
/// The reporting queue's index: no statistics or free page hint queue
/// before it, as neither is offered.
const REPORTING: usize = 2;
/// Page numbers read from guest memory at once.
const PFN_CHUNK: usize = 1024;

/// What the balloon offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalloonOptions {
    /// Offer `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`.
    pub deflate_on_oom: bool,
    /// Offer `VIRTIO_BALLOON_F_REPORTING`.
    pub free_page_reporting: bool,
}

/// The balloon's state shared with the control API: the target the host
/// set, what the driver says it holds, and what was given back. It
/// outlives the device (a guest reboot rebuilds the device; the target
/// stays).
#[derive(Default)]
pub struct BalloonControl {
    state: Mutex<State>,
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
}

impl BalloonControl {
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
        let (mem, irq, control) = (&self.mem, &self.irq, &self.control);
        let Some((_, queue)) = self.queues.iter_mut().find(|(i, _)| *i == index) else {
            return false;
        };
        let serve = |c: &Chain| match index {
            INFLATE => inflate(mem, control, c),
            REPORTING => report(mem, control, c),
            // Deflate: the pages come back on the guest's next touch.
            _ => Ok(Served::Used(0)),
        };
        chain::drain(queue, mem, irq, index, serve) == chain::Drained::Budget
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        TYPE_BALLOON
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        let n = if self.options.free_page_reporting {
            3
        } else {
            2
        };
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
        let reporting = a.features & F_REPORTING != 0;
        for index in [INFLATE, DEFLATE, REPORTING] {
            if index == REPORTING && !reporting {
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
        });
    }
}

#[cfg(test)]
mod tests;

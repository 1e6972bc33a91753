//! The receive path: frames from the tap into the guest's receive buffers.
//!
//! With mergeable buffers and no rate limit, a frame is read straight into
//! the guest's buffers: the device holds (pops) enough of them for the
//! largest frame, reads with one readv over all of them, and returns only
//! the ones the frame filled; the rest wait for the next frame. The
//! header's `num_buffers` says how many it took.
//!
//! Otherwise (no mergeable buffers, a rate limit, or the guest short of
//! buffers) a frame is read once into a local buffer and copied over as
//! many buffers as it needs. That frame waits there while the guest has no
//! room (or the rate limit says wait) and goes first next time.
//!
//! A frame spread over several buffers is published whole: the used
//! elements of all its buffers are written first and the used index moves
//! past all of them at once (spec 5.1.6.4.2: "the device MUST use all
//! buffers used by a single receive packet together, such that at least
//! num_buffers are observed by driver as used"), as QEMU's
//! `virtqueue_fill` + `virtqueue_flush` do. Moving it buffer by buffer let
//! a guest polling the ring see a frame's first buffer, whose header
//! promises more, before the others: Linux then drops the frame ("rx
//! error: N buffers out of M missing") and takes the rest of it for new
//! frames whose headers are payload bytes.
//!
//! The guest is told (when it asked to be, event index) every 8 frames,
//! and at once when the tap runs dry or its buffers run out, so it can
//! take frames and refill the ring while the device is still receiving
//! without an interrupt per frame.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

use super::tap::{Tap, MAX_IOVECS};
use super::HDR_LEN;
use crate::rate_limiter::RateLimiter;
use crate::stats::NetStats;
use crate::virtio::chain::{read_chain, Chain, ChainError};
use crate::virtio::Interrupt;

/// Largest frame: 64 KiB of TSO payload plus headers, plus ours.
const FRAME_MAX: usize = 65562 + HDR_LEN;
/// Most frames moved per call before yielding to the worker.
const BUDGET: usize = 256;
/// Frames delivered between interrupts while more keep coming (the guest
/// is told at once when the tap runs dry or its buffers run out).
const COALESCE: usize = 8;
/// Offset of num_buffers in the header.
const NUM_BUFFERS: usize = 10;

pub struct Receiver {
    queue: Queue,
    mergeable: bool,
    frame: Vec<u8>,
    /// Bytes of a frame read from the tap and not yet delivered.
    pending: usize,
    /// Whether the pending frame was charged to the rate limiter.
    admitted: bool,
    /// Chains popped from the ring and not yet used, oldest first.
    reserved: VecDeque<Chain>,
    /// Frames delivered since the guest was last told.
    unsignaled: usize,
    /// The used index when the device last decided whether to interrupt.
    checked: Wrapping<u16>,
    stats: Option<Arc<NetStats>>,
}

enum Delivery {
    /// The frame is gone: delivered (true) or dropped (false).
    Done(bool),
    NoRoom,
}

/// How a read straight into guest buffers went.
enum Direct {
    /// A frame was delivered.
    Delivered,
    /// The tap is empty (or failed).
    Empty,
    /// A runt: nothing delivered, try the next frame.
    Runt,
    /// The guest's buffers cannot hold the largest frame: copy instead.
    NoRoom,
}

impl Receiver {
    pub fn new(queue: Queue, mergeable: bool) -> Self {
        let checked = Wrapping(queue.next_used());
        Receiver {
            queue,
            mergeable,
            frame: vec![0; FRAME_MAX],
            pending: 0,
            admitted: false,
            reserved: VecDeque::new(),
            unsignaled: 0,
            checked,
            stats: None,
        }
    }

    /// Counts frames in `stats`.
    pub fn with_stats(mut self, stats: Option<Arc<NetStats>>) -> Self {
        self.stats = stats;
        self
    }

    fn count(&self, f: impl FnOnce(&NetStats)) {
        if let Some(s) = &self.stats {
            f(s);
        }
    }

    /// Moves frames from the tap to the guest until one side runs dry or
    /// [`BUDGET`] frames went by; true in that last case (call again).
    pub fn run(
        &mut self,
        mem: &GuestMemoryMmap,
        tap: &Tap,
        limiter: &mut RateLimiter,
        irq: &Interrupt,
        index: usize,
    ) -> bool {
        if irq.failed() {
            return false;
        }
        let result = self
            .run_inner(mem, tap, limiter, irq, index)
            .and_then(|more| {
                if self.unsignaled > 0 {
                    self.notify(mem, irq, index)?;
                }
                Ok(more)
            });
        result.unwrap_or_else(|e| {
            irq.fail(&e.to_string());
            false
        })
    }

    fn run_inner(
        &mut self,
        mem: &GuestMemoryMmap,
        tap: &Tap,
        limiter: &mut RateLimiter,
        irq: &Interrupt,
        index: usize,
    ) -> Result<bool, ChainError> {
        let direct = self.mergeable && !limiter.is_limited();
        for _ in 0..BUDGET {
            if self.pending == 0 {
                if direct {
                    match self.receive_direct(mem, tap)? {
                        Direct::Delivered => {
                            self.delivered(mem, irq, index)?;
                            continue;
                        }
                        Direct::Empty => return Ok(false),
                        Direct::Runt => continue,
                        Direct::NoRoom => {}
                    }
                }
                match tap.read(&mut self.frame) {
                    Ok(n) if n > HDR_LEN => {
                        self.pending = n.min(self.frame.len());
                        self.admitted = false;
                    }
                    // End of file: only a stand-in whose other end closed.
                    Ok(0) => return Ok(false),
                    // A runt: skip it.
                    Ok(_) => continue,
                    Err(e) => return Ok(self.read_failed(&e)),
                }
            }
            if !self.admitted {
                if !limiter.admit(self.pending as u64) {
                    return Ok(false);
                }
                self.admitted = true;
            }
            match self.deliver(mem)? {
                Delivery::Done(used) => {
                    let bytes = self.pending.saturating_sub(HDR_LEN) as u64;
                    self.pending = 0;
                    if used {
                        self.count(|s| s.received(bytes));
                        self.delivered(mem, irq, index)?;
                    } else {
                        self.count(|s| NetStats::bump(&s.rx_dropped));
                    }
                }
                Delivery::NoRoom => {
                    // Every available buffer is reserved: ask for a kick when
                    // the guest adds one; retry if it already did.
                    if !self.queue.enable_notification(mem).map_err(queue_error)? {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// Counts a delivered frame and tells the guest of the frames so far
    /// every [`COALESCE`] frames.
    fn delivered(
        &mut self,
        mem: &GuestMemoryMmap,
        irq: &Interrupt,
        index: usize,
    ) -> Result<(), ChainError> {
        self.unsignaled += 1;
        if self.unsignaled >= COALESCE {
            self.notify(mem, irq, index)?;
        }
        Ok(())
    }

    /// Interrupts the guest if it asked to be told of the frames
    /// delivered since the last call.
    fn notify(
        &mut self,
        mem: &GuestMemoryMmap,
        irq: &Interrupt,
        index: usize,
    ) -> Result<(), ChainError> {
        self.unsignaled = 0;
        if self.needs_interrupt(mem)? {
            irq.signal_queue(index);
        }
        Ok(())
    }

    /// Whether the used index passed the driver's `used_event` since the
    /// last check (spec 2.7.10; always, without event index). The full
    /// barrier orders the used index written before against `used_event`
    /// read after, as the driver orders them the other way round.
    fn needs_interrupt(&mut self, mem: &GuestMemoryMmap) -> Result<bool, ChainError> {
        let new = Wrapping(self.queue.next_used());
        let old = std::mem::replace(&mut self.checked, new);
        if !self.queue.event_idx_enabled() {
            return Ok(true);
        }
        fence(Ordering::SeqCst);
        let at = self
            .queue
            .avail_ring()
            .wrapping_add(4 + 2 * u64::from(self.queue.size()));
        let used_event: u16 = mem
            .read_obj(GuestAddress(at))
            .map_err(|_| ChainError::OutOfMemory { addr: at, len: 2 })?;
        Ok(new - Wrapping(u16::from_le(used_event)) - Wrapping(1) < new - old)
    }

    /// Returns `used` (head, bytes written) to the guest as one frame:
    /// every used element first, then the used index past all of them.
    fn publish(&mut self, mem: &GuestMemoryMmap, used: &[(u16, u32)]) -> Result<(), ChainError> {
        let ring = self.queue.used_ring();
        let size = self.queue.size();
        let mut next = Wrapping(self.queue.next_used());
        for &(head, len) in used {
            let at = ring.wrapping_add(4 + 8 * u64::from(next.0 % size.max(1)));
            let oom = ChainError::OutOfMemory { addr: at, len: 8 };
            mem.write_obj(u32::from(head).to_le(), GuestAddress(at))
                .map_err(|_| oom.clone())?;
            mem.write_obj(len.to_le(), GuestAddress(at.wrapping_add(4)))
                .map_err(|_| oom)?;
            next += Wrapping(1);
        }
        // Release: the elements are visible before the index that covers them.
        let idx = ring.wrapping_add(2);
        mem.store(next.0.to_le(), GuestAddress(idx), Ordering::Release)
            .map_err(|_| ChainError::OutOfMemory { addr: idx, len: 2 })?;
        self.queue.set_next_used(next.0);
        Ok(())
    }

    /// Room in the reserved buffers.
    fn room(&self) -> u64 {
        self.reserved.iter().map(Chain::writable_len).sum()
    }

    /// Pops chains until the reserved ones hold `want` bytes (or one chain
    /// when `want` is 0); false when the ring ran out first. Chains stay
    /// reserved (popped, not yet used) while there is not enough room, so
    /// that the guest's next buffer triggers a kick.
    fn reserve(&mut self, mem: &GuestMemoryMmap, want: u64) -> Result<bool, ChainError> {
        let mut room = self.room();
        loop {
            if room >= want && !self.reserved.is_empty() {
                return Ok(true);
            }
            let next = self.queue.iter(mem).map_err(queue_error)?.next();
            let Some(c) = next else { return Ok(false) };
            let chain = read_chain(mem, c)?;
            if chain.readable().next().is_some() {
                return Err(ChainError::Layout(
                    chain.head,
                    "receive buffer is not writable",
                ));
            }
            if chain.writable_len() < HDR_LEN as u64 {
                return Err(ChainError::Layout(
                    chain.head,
                    "receive buffer smaller than the header",
                ));
            }
            room += chain.writable_len();
            self.reserved.push_back(chain);
        }
    }

    /// Reads one frame from the tap straight into the reserved buffers,
    /// once they can hold the largest frame.
    fn receive_direct(&mut self, mem: &GuestMemoryMmap, tap: &Tap) -> Result<Direct, ChainError> {
        if !self.reserve(mem, FRAME_MAX as u64)? {
            return Ok(Direct::NoRoom);
        }
        let mut slices: Vec<VolatileSlice> = Vec::with_capacity(64);
        let mut room = 0u64;
        'chains: for chain in &self.reserved {
            for d in chain.writable() {
                for s in mem.get_slices(d.addr, d.len as usize) {
                    if slices.len() == MAX_IOVECS {
                        break 'chains;
                    }
                    let s = s.map_err(|_| ChainError::OutOfMemory {
                        addr: d.addr.0,
                        len: d.len,
                    })?;
                    room += s.len() as u64;
                    slices.push(s);
                    if room >= FRAME_MAX as u64 {
                        // Enough for any frame: the rest wait unread.
                        break 'chains;
                    }
                }
            }
        }
        if room < FRAME_MAX as u64 {
            // Tiny buffers: more of them than one readv takes.
            return Ok(Direct::NoRoom);
        }
        let n = match tap.read_slices(&slices) {
            Ok(n) => n,
            Err(e) => {
                drop(slices);
                self.read_failed(&e);
                return Ok(Direct::Empty);
            }
        };
        drop(slices);
        // The tap reports the frame's full length even when it had to cut
        // it to the buffers: count only what landed.
        let n = n.min(usize::try_from(room).unwrap_or(usize::MAX));
        if n == 0 {
            // End of file: only a stand-in whose other end closed.
            return Ok(Direct::Empty);
        }
        if n <= HDR_LEN {
            // A runt: it only scribbled on buffers the device still holds.
            return Ok(Direct::Runt);
        }
        self.commit(mem, n)?;
        self.count(|s| s.received((n - HDR_LEN) as u64));
        Ok(Direct::Delivered)
    }

    /// Returns to the guest the reserved chains a frame of `len` bytes
    /// filled, with `num_buffers` set in its header.
    fn commit(&mut self, mem: &GuestMemoryMmap, len: usize) -> Result<(), ChainError> {
        let mut count = 0usize;
        let mut covered = 0u64;
        for chain in &self.reserved {
            if covered >= len as u64 {
                break;
            }
            covered += chain.writable_len();
            count += 1;
        }
        let n = u16::try_from(count).unwrap_or(u16::MAX);
        if let Some(first) = self.reserved.front() {
            write_at(mem, first, NUM_BUFFERS, &n.to_le_bytes())?;
        }
        let mut left = len as u64;
        let mut used = Vec::with_capacity(count);
        for chain in self.reserved.drain(..count) {
            let n = left.min(chain.writable_len());
            left -= n;
            used.push((chain.head, n as u32));
        }
        self.publish(mem, &used)
    }

    /// Delivers the frame in the local buffer, copying it into as many
    /// reserved chains as it needs.
    fn deliver(&mut self, mem: &GuestMemoryMmap) -> Result<Delivery, ChainError> {
        let want = if self.mergeable {
            self.pending as u64
        } else {
            0
        };
        if !self.reserve(mem, want)? {
            if self.reserved.len() >= usize::from(self.queue.size()) {
                // Every buffer the ring can hold is ours and the frame still
                // does not fit: no kick can come. Drop it, keep the buffers.
                self.pending = 0;
                return Ok(Delivery::Done(false));
            }
            return Ok(Delivery::NoRoom);
        }
        // The fewest chains that hold the frame (one without merging).
        let mut count = 0usize;
        let mut room = 0u64;
        for chain in &self.reserved {
            room += chain.writable_len();
            count += 1;
            if !self.mergeable || room >= self.pending as u64 {
                break;
            }
        }
        if room < self.pending as u64 {
            // One buffer too small for this frame: drop the frame, as a NIC
            // does, and keep the buffer for the next one.
            self.pending = 0;
            return Ok(Delivery::Done(false));
        }
        let n = u16::try_from(count).unwrap_or(u16::MAX);
        if let Some(slot) = self.frame.get_mut(NUM_BUFFERS..NUM_BUFFERS + 2) {
            slot.copy_from_slice(&n.to_le_bytes());
        }
        let mut at = 0usize;
        let mut done = Vec::with_capacity(count);
        for chain in self.reserved.drain(..count) {
            let mut used = 0u32;
            for d in chain.writable() {
                let end = (at + d.len as usize).min(self.pending);
                if at >= self.pending {
                    break;
                }
                let Some(part) = self.frame.get(at..end).filter(|p| !p.is_empty()) else {
                    // A zero-length buffer: on to the next.
                    continue;
                };
                mem.write_slice(part, d.addr)
                    .map_err(|_| ChainError::OutOfMemory {
                        addr: d.addr.0,
                        len: d.len,
                    })?;
                at = end;
                used += part.len() as u32;
            }
            done.push((chain.head, used));
        }
        self.publish(mem, &done)?;
        Ok(Delivery::Done(true))
    }
}

impl Receiver {
    /// Logs and counts a tap read error other than "empty". Either way the
    /// device waits for the tap's next readiness edge rather than retrying
    /// at once: a tap that keeps failing (deleted under us) must not make
    /// the worker spin. Always false ("no more work now").
    fn read_failed(&self, e: &std::io::Error) -> bool {
        if e.kind() != ErrorKind::WouldBlock {
            log::warn!("virtio-net: tap read: {e}");
            self.count(|s| NetStats::bump(&s.tap_errors));
        }
        false
    }
}

fn queue_error(e: virtio_queue::Error) -> ChainError {
    ChainError::Queue(e.to_string())
}

/// Writes `bytes` at byte `offset` of the writable buffers of `chain`,
/// across buffer boundaries if need be.
fn write_at(
    mem: &GuestMemoryMmap,
    chain: &Chain,
    offset: usize,
    bytes: &[u8],
) -> Result<(), ChainError> {
    let mut skip = offset as u64;
    let mut rest = bytes;
    for d in chain.writable() {
        if rest.is_empty() {
            break;
        }
        let len = u64::from(d.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let take = rest.len().min((len - skip) as usize);
        let (now, later) = rest.split_at(take);
        let at = d.addr.checked_add(skip).ok_or(ChainError::OutOfMemory {
            addr: d.addr.0,
            len: d.len,
        })?;
        mem.write_slice(now, at)
            .map_err(|_| ChainError::OutOfMemory {
                addr: d.addr.0,
                len: d.len,
            })?;
        rest = later;
        skip = 0;
    }
    Ok(())
}

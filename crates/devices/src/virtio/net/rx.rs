//! The receive path: frames from the tap into the guest's receive buffers.
//!
//! A frame is read once into a local buffer, then copied over one chain,
//! or with mergeable buffers over as many chains as it needs; the header's
//! `num_buffers` says how many. A frame waits in the buffer while the guest
//! has no room (or the rate limit says wait) and goes first next time.

use std::io::ErrorKind;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

use super::tap::Tap;
use super::HDR_LEN;
use crate::rate_limiter::RateLimiter;
use crate::virtio::chain::{read_chain, Chain, ChainError};
use crate::virtio::Interrupt;

/// Largest frame: 64 KiB of TSO payload plus headers, plus ours.
const FRAME_MAX: usize = 65562 + HDR_LEN;
/// Most frames moved per call before yielding to the worker.
const BUDGET: usize = 256;
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
    /// Chains popped for the pending frame, not enough for it yet.
    reserved: Vec<Chain>,
}

enum Delivery {
    /// The frame is gone: delivered (true) or dropped (false).
    Done(bool),
    NoRoom,
}

impl Receiver {
    pub fn new(queue: Queue, mergeable: bool) -> Self {
        Receiver {
            queue,
            mergeable,
            frame: vec![0; FRAME_MAX],
            pending: 0,
            admitted: false,
            reserved: Vec::new(),
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
        let mut used_any = false;
        let mut budget = BUDGET;
        let exhausted = loop {
            if budget == 0 {
                break true;
            }
            budget -= 1;
            if self.pending == 0 {
                match tap.read(&mut self.frame) {
                    Ok(n) if n > HDR_LEN => {
                        self.pending = n.min(self.frame.len());
                        self.admitted = false;
                    }
                    // Runts, and errors other than "empty": skip that frame.
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                    Err(e) => {
                        log::debug!("virtio-net: tap read: {e}");
                        continue;
                    }
                }
            }
            if !self.admitted {
                if !limiter.admit(self.pending as u64) {
                    break false;
                }
                self.admitted = true;
            }
            match self.deliver(mem) {
                Ok(Delivery::Done(used)) => {
                    self.pending = 0;
                    used_any |= used;
                }
                Ok(Delivery::NoRoom) => {
                    // Every available buffer is reserved: ask for a kick when
                    // the guest adds one; retry if it already did.
                    match self.queue.enable_notification(mem) {
                        Ok(true) => continue,
                        Ok(false) => break false,
                        Err(e) => {
                            irq.fail(&e.to_string());
                            return false;
                        }
                    }
                }
                Err(e) => {
                    irq.fail(&e.to_string());
                    return false;
                }
            }
        };
        if used_any {
            match self.queue.needs_notification(mem) {
                Ok(true) => irq.signal_queue(index),
                Ok(false) => {}
                Err(e) => irq.fail(&e.to_string()),
            }
        }
        exhausted
    }

    /// Pops chains until the reserved ones can hold the pending frame.
    /// Chains stay reserved (popped, not yet used) while there is not
    /// enough room, so that the guest's next buffer triggers a kick.
    fn reserve(&mut self, mem: &GuestMemoryMmap) -> Result<bool, ChainError> {
        let q = |e: virtio_queue::Error| ChainError::Queue(e.to_string());
        loop {
            let room: u64 = self.reserved.iter().map(Chain::writable_len).sum();
            let enough = if self.mergeable {
                room >= self.pending as u64
            } else {
                !self.reserved.is_empty()
            };
            if enough {
                return Ok(true);
            }
            let next = self.queue.iter(mem).map_err(q)?.next();
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
            self.reserved.push(chain);
        }
    }

    fn deliver(&mut self, mem: &GuestMemoryMmap) -> Result<Delivery, ChainError> {
        if !self.reserve(mem)? {
            if self.reserved.len() >= usize::from(self.queue.size()) {
                // Every buffer the ring can hold is ours and the frame still
                // does not fit: no kick can come. Drop it, keep the buffers.
                self.pending = 0;
                return Ok(Delivery::Done(false));
            }
            return Ok(Delivery::NoRoom);
        }
        if !self.mergeable
            && self.reserved.iter().map(Chain::writable_len).sum::<u64>() < self.pending as u64
        {
            // One buffer too small for this frame: drop the frame, as a NIC
            // does, and keep the buffer for the next one.
            self.pending = 0;
            return Ok(Delivery::Done(false));
        }
        let chains = std::mem::take(&mut self.reserved);
        let n = u16::try_from(chains.len()).unwrap_or(u16::MAX);
        if let Some(slot) = self.frame.get_mut(NUM_BUFFERS..NUM_BUFFERS + 2) {
            slot.copy_from_slice(&n.to_le_bytes());
        }
        let mut at = 0usize;
        let q = |e: virtio_queue::Error| ChainError::Queue(e.to_string());
        for chain in &chains {
            let mut used = 0u32;
            for d in chain.writable() {
                let end = (at + d.len as usize).min(self.pending);
                let Some(part) = self.frame.get(at..end).filter(|p| !p.is_empty()) else {
                    break;
                };
                mem.write_slice(part, d.addr)
                    .map_err(|_| ChainError::OutOfMemory {
                        addr: d.addr.0,
                        len: d.len,
                    })?;
                at = end;
                used += part.len() as u32;
            }
            self.queue.add_used(mem, chain.head, used).map_err(q)?;
        }
        Ok(Delivery::Done(true))
    }
}

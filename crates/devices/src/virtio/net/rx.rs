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
}

enum Delivery {
    Done,
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
        }
    }

    /// Moves frames from the tap to the guest until one side runs dry.
    pub fn run(
        &mut self,
        mem: &GuestMemoryMmap,
        tap: &Tap,
        limiter: &mut RateLimiter,
        irq: &Interrupt,
        index: usize,
    ) {
        if irq.failed() {
            return;
        }
        let mut delivered = false;
        loop {
            if self.pending == 0 {
                match tap.read(&mut self.frame) {
                    Ok(n) if n > HDR_LEN => {
                        self.pending = n;
                        self.admitted = false;
                    }
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if e.kind() != ErrorKind::WouldBlock {
                            log::warn!("virtio-net: tap read: {e}");
                        }
                        break;
                    }
                }
            }
            if !self.admitted {
                if !limiter.admit(self.pending as u64) {
                    break;
                }
                self.admitted = true;
            }
            match self.deliver(mem) {
                Ok(Delivery::Done) => {
                    self.pending = 0;
                    delivered = true;
                }
                Ok(Delivery::NoRoom) => {
                    // Ask for a kick when buffers come; retry if they already did.
                    match self.queue.enable_notification(mem) {
                        Ok(true) => continue,
                        Ok(false) => break,
                        Err(e) => {
                            irq.fail(&e.to_string());
                            return;
                        }
                    }
                }
                Err(e) => {
                    irq.fail(&e.to_string());
                    return;
                }
            }
        }
        if delivered {
            match self.queue.needs_notification(mem) {
                Ok(true) => irq.signal_queue(index),
                Ok(false) => {}
                Err(e) => irq.fail(&e.to_string()),
            }
        }
    }

    /// Pops chains until they can hold the pending frame; puts them back
    /// if they cannot.
    fn take_chains(&mut self, mem: &GuestMemoryMmap) -> Result<Option<Vec<Chain>>, ChainError> {
        let q = |e: virtio_queue::Error| ChainError::Queue(e.to_string());
        let mut chains: Vec<Chain> = Vec::new();
        let mut room = 0u64;
        while room < self.pending as u64 {
            let next = self.queue.iter(mem).map_err(q)?.next();
            let Some(c) = next else { break };
            let chain = read_chain(mem, c)?;
            if chain.readable().next().is_some() {
                return Err(ChainError::Layout(
                    chain.head,
                    "receive buffer is not writable",
                ));
            }
            room += chain.writable_len();
            chains.push(chain);
            if !self.mergeable {
                break;
            }
        }
        if room >= self.pending as u64
            && chains
                .first()
                .is_some_and(|c| c.writable_len() >= HDR_LEN as u64)
        {
            return Ok(Some(chains));
        }
        if !chains.is_empty() && !self.mergeable {
            // A single buffer too small for this frame: drop the frame,
            // as a NIC does, and give the buffer back for the next one.
            self.queue.go_to_previous_position();
            self.pending = 0;
            return Ok(None);
        }
        for _ in &chains {
            self.queue.go_to_previous_position();
        }
        Ok(None)
    }

    fn deliver(&mut self, mem: &GuestMemoryMmap) -> Result<Delivery, ChainError> {
        let Some(chains) = self.take_chains(mem)? else {
            return Ok(if self.pending == 0 {
                Delivery::Done
            } else {
                Delivery::NoRoom
            });
        };
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
        Ok(Delivery::Done)
    }
}

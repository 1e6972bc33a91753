//! Reading the descriptor chains a driver posts, and the loop that drains a
//! queue. The guest writes every byte of a queue: a chain whose head index
//! is out of range, that loops or runs past its table, or that names memory
//! the guest does not have, is a broken driver — the device is marked
//! DEVICE_NEEDS_RESET and stops serving the queue.

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::interrupt::Interrupt;

/// One buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    pub addr: GuestAddress,
    pub len: u32,
    /// Device-writable (the guest reads it back).
    pub writable: bool,
}

/// A whole chain, checked: every buffer lies inside guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub descs: Vec<Desc>,
}

impl Chain {
    /// The device-readable buffers (they come first in a well-formed chain).
    pub fn readable(&self) -> impl Iterator<Item = &Desc> {
        self.descs.iter().filter(|d| !d.writable)
    }

    /// The device-writable buffers.
    pub fn writable(&self) -> impl Iterator<Item = &Desc> {
        self.descs.iter().filter(|d| d.writable)
    }

    /// Total bytes the device may write.
    pub fn writable_len(&self) -> u64 {
        self.writable().map(|d| u64::from(d.len)).sum()
    }
}

/// How a driver broke a queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("chain {0} has no descriptors (bad head index or indirect table)")]
    Empty(u16),
    #[error("chain {0} loops or runs past its descriptor table")]
    Truncated(u16),
    #[error("buffer at {addr:#x} of {len} bytes is outside guest memory")]
    OutOfMemory { addr: u64, len: u32 },
    #[error("chain {0} does not have the layout the device needs: {1}")]
    Layout(u16, &'static str),
    #[error("chain {0} has more than {MAX_CHAIN_DESCS} descriptors")]
    TooLong(u16),
    #[error("queue: {0}")]
    Queue(String),
}

/// Most descriptors in one chain (indirect tables included). Linux uses
/// at most a few hundred; more is a driver making the device allocate.
pub const MAX_CHAIN_DESCS: usize = 1024;
/// Most chains served per call of [`drain`] before yielding to the worker.
pub const BUDGET: usize = 256;

/// Reads and checks the chain at the head `chain` points to.
pub fn read_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> Result<Chain, ChainError> {
    let head = chain.head_index();
    let mut descs = Vec::new();
    let mut last: Option<Descriptor> = None;
    for d in chain {
        if descs.len() == MAX_CHAIN_DESCS {
            return Err(ChainError::TooLong(head));
        }
        let len = d.len();
        if len > 0 && !mem.check_range(d.addr(), len as usize) {
            return Err(ChainError::OutOfMemory {
                addr: d.addr().0,
                len,
            });
        }
        descs.push(Desc {
            addr: d.addr(),
            len,
            writable: d.is_write_only(),
        });
        last = Some(d);
    }
    match last {
        None => Err(ChainError::Empty(head)),
        Some(d) if d.has_next() => Err(ChainError::Truncated(head)),
        Some(_) => Ok(Chain { head, descs }),
    }
}

/// What a device did with one chain.
pub enum Served {
    /// Done; `n` bytes were written into its writable buffers.
    Used(u32),
    /// Cannot be served now (rate limit, no packet yet): leave it at the
    /// front of the queue and stop draining.
    Later,
}

/// How a [`drain`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// No chain left (or the device failed).
    Empty,
    /// A chain must wait ([`Served::Later`]); it is first next time.
    Later,
    /// [`BUDGET`] chains served and more are there: call again.
    Budget,
}

/// Serves up to [`BUDGET`] available chains of `queue` with `serve` and
/// returns each to the driver as soon as it is served, interrupting the
/// driver when it asked to be (event index). Telling the driver chain by
/// chain, as QEMU does, lets it refill or send more while the rest of the
/// batch is served, instead of waiting for the whole batch. A driver
/// without event index is told once per batch.
///
/// Any driver error fails the device through `irq` and ends the drain.
pub fn drain(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    irq: &Interrupt,
    index: usize,
    mut serve: impl FnMut(&Chain) -> Result<Served, ChainError>,
) -> Drained {
    if irq.failed() {
        return Drained::Empty;
    }
    let mut used = 0usize;
    let result = (|| -> Result<Drained, ChainError> {
        let q = |e: virtio_queue::Error| ChainError::Queue(e.to_string());
        loop {
            queue.disable_notification(mem).map_err(q)?;
            loop {
                if used == BUDGET {
                    return Ok(Drained::Budget);
                }
                let next = queue.iter(mem).map_err(q)?.next();
                let Some(chain) = next else { break };
                let chain = read_chain(mem, chain)?;
                match serve(&chain)? {
                    Served::Used(n) => {
                        queue.add_used(mem, chain.head, n).map_err(q)?;
                        used += 1;
                        // Without event index every check says yes: then
                        // the driver is told once, at the end.
                        if queue.event_idx_enabled() && queue.needs_notification(mem).map_err(q)? {
                            irq.signal_queue(index);
                        }
                    }
                    Served::Later => {
                        queue.go_to_previous_position();
                        return Ok(Drained::Later);
                    }
                }
            }
            if !queue.enable_notification(mem).map_err(q)? {
                return Ok(Drained::Empty);
            }
        }
    })();
    if used > 0 && !queue.event_idx_enabled() {
        match queue.needs_notification(mem) {
            Ok(true) => irq.signal_queue(index),
            Ok(false) => {}
            Err(e) => irq.fail(&e.to_string()),
        }
    }
    result.unwrap_or_else(|e| {
        irq.fail(&e.to_string());
        Drained::Empty
    })
}

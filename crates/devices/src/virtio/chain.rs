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
    #[error("queue: {0}")]
    Queue(String),
}

/// Reads and checks the chain at the head `chain` points to.
pub fn read_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> Result<Chain, ChainError> {
    let head = chain.head_index();
    let mut descs = Vec::new();
    let mut last: Option<Descriptor> = None;
    for d in chain {
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

/// Serves every available chain of `queue` with `serve`, returns them to
/// the driver and interrupts it if it asked to be. Returns false if the
/// queue was left with chains still available (a [`Served::Later`]).
///
/// Any driver error fails the device through `irq` and ends the drain.
pub fn drain(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    irq: &Interrupt,
    index: usize,
    mut serve: impl FnMut(&Chain) -> Result<Served, ChainError>,
) -> bool {
    if irq.failed() {
        return true;
    }
    let mut used_any = false;
    let result = (|| -> Result<bool, ChainError> {
        let q = |e: virtio_queue::Error| ChainError::Queue(e.to_string());
        loop {
            queue.disable_notification(mem).map_err(q)?;
            loop {
                let next = queue.iter(mem).map_err(q)?.next();
                let Some(chain) = next else { break };
                let chain = read_chain(mem, chain)?;
                match serve(&chain)? {
                    Served::Used(n) => {
                        queue.add_used(mem, chain.head, n).map_err(q)?;
                        used_any = true;
                    }
                    Served::Later => {
                        queue.go_to_previous_position();
                        return Ok(false);
                    }
                }
            }
            if !queue.enable_notification(mem).map_err(q)? {
                return Ok(true);
            }
        }
    })();
    let done = match result {
        Ok(done) => done,
        Err(e) => {
            irq.fail(&e.to_string());
            return true;
        }
    };
    if used_any {
        match queue.needs_notification(mem) {
            Ok(true) => irq.signal_queue(index),
            Ok(false) => {}
            Err(e) => irq.fail(&e.to_string()),
        }
    }
    done
}

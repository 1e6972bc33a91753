//! virtio-rng (entropy source, spec 5.4): one queue whose writable buffers
//! are filled from the host's getrandom(2).

use vm_memory::{Bytes, GuestMemoryMmap};

use super::chain::{self, Chain, ChainError, Served};
use super::worker::{QueueHandler, Worker};
use super::{ActivateError, Activation, Interrupt, Queue, VirtioDevice, COMMON_FEATURES, TYPE_RNG};
use std::sync::Arc;

const QUEUE_SIZE: u16 = 256;
/// Most bytes given for one request: a driver cannot make the device fill
/// gigabytes at once.
const MAX_REQUEST: usize = 64 << 10;

/// The device; [`VirtioDevice::activate`] starts its worker.
#[derive(Default)]
pub struct Rng {
    worker: Option<Worker>,
}

impl Rng {
    pub fn new() -> Self {
        Self::default()
    }
}

struct Handler {
    queue: Queue,
    mem: GuestMemoryMmap,
    irq: Arc<Interrupt>,
    buf: Vec<u8>,
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        done += n as usize;
    }
    Ok(())
}

/// Fills the chain's writable buffers, up to [`MAX_REQUEST`] bytes.
fn serve(mem: &GuestMemoryMmap, buf: &mut [u8], chain: &Chain) -> Result<Served, ChainError> {
    let mut written = 0usize;
    for d in chain.writable() {
        let want = (d.len as usize).min(MAX_REQUEST - written);
        let Some(part) = buf.get_mut(..want).filter(|p| !p.is_empty()) else {
            break;
        };
        if getrandom(part).is_err() {
            break;
        }
        mem.write_slice(part, d.addr)
            .map_err(|_| ChainError::OutOfMemory {
                addr: d.addr.0,
                len: d.len,
            })?;
        written += want;
    }
    Ok(Served::Used(written as u32))
}

impl QueueHandler for Handler {
    fn queue_event(&mut self, _index: usize) -> bool {
        let (mem, buf) = (&self.mem, &mut self.buf);
        chain::drain(&mut self.queue, mem, &self.irq, 0, |c| serve(mem, buf, c))
            == chain::Drained::Budget
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, mut a: Activation) -> Result<(), ActivateError> {
        let (queue, evt) = a.take_queue(0)?;
        let handler = Handler {
            queue,
            mem: a.mem,
            irq: a.interrupt,
            buf: vec![0; MAX_REQUEST],
        };
        let worker =
            Worker::spawn("virtio-rng", vec![Some(evt)], handler).map_err(ActivateError::Worker)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
    }
}

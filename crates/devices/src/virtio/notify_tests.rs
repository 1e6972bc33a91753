//! Notification suppression with VIRTIO_F_EVENT_IDX (spec 2.7.7, 2.7.10):
//! the orderings a lost wake-up would come from, checked on
//! [`chain::drain`] with a driver that races the device.
//!
//! - The device must ask for a kick for the next buffer (`avail_event` =
//!   its next index) before it goes idle, and look at the ring once more
//!   after that: a buffer posted in between is served, not left waiting
//!   for a kick the driver will not send.
//! - The device must interrupt exactly when its used index passes the
//!   driver's `used_event`, also when several chains are used in one go.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::chain::{self, Drained, Served};
use super::interrupt::{Interrupt, SharedStatus, Vectors};
use crate::bus::lock;

const QSIZE: u16 = 16;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const BUF: u64 = 0x10000;

struct Ring {
    mem: GuestMemoryMmap,
    avail_idx: u16,
}

impl Ring {
    fn new() -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        Ring { mem, avail_idx: 0 }
    }

    /// A device-side queue on these rings, with event index on.
    fn queue(&self) -> Queue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.set_desc_table_address(Some(DESC as u32), Some(0));
        q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        q.set_used_ring_address(Some(USED as u32), Some(0));
        q.set_event_idx(true);
        q.set_ready(true);
        q
    }

    /// Posts one single-buffer chain (descriptor `i % QSIZE`).
    fn post(&mut self) {
        let i = self.avail_idx % QSIZE;
        let d = GuestAddress(DESC + u64::from(i) * 16);
        self.mem.write_obj(BUF + u64::from(i) * 64, d).unwrap();
        self.mem.write_obj(64u32, GuestAddress(d.0 + 8)).unwrap();
        self.mem.write_obj(2u16, GuestAddress(d.0 + 12)).unwrap(); // WRITE
        let slot = GuestAddress(AVAIL + 4 + u64::from(i) * 2);
        self.mem.write_obj(i, slot).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        std::sync::atomic::fence(Ordering::SeqCst);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
    }

    /// The driver's `used_event` (after the avail ring).
    fn set_used_event(&self, v: u16) {
        let at = AVAIL + 4 + u64::from(QSIZE) * 2;
        self.mem.write_obj(v, GuestAddress(at)).unwrap();
    }

    /// The device's `avail_event` (after the used ring).
    fn avail_event(&self) -> u16 {
        let at = USED + 4 + u64::from(QSIZE) * 8;
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }
}

/// An interrupt on vector 0 for queue 0, unmasked; and its eventfd.
fn interrupt() -> (Interrupt, EventFd) {
    let (irq, evt, _) = interrupt_and_vectors();
    (irq, evt)
}

fn interrupt_and_vectors() -> (Interrupt, EventFd, Arc<Vectors>) {
    let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let vectors = Arc::new(Vectors::new(vec![evt.try_clone().unwrap()]));
    {
        let mut m = lock(&vectors.msix);
        m.set_control(1 << 15);
        m.write_table(12, &0u32.to_le_bytes());
    }
    let shared = Arc::new(SharedStatus::default());
    let irq = Interrupt::new(vectors.clone(), shared, vec![0], 0);
    (irq, evt, vectors)
}

/// Interrupts raised since the last call.
fn fired(evt: &EventFd) -> u64 {
    evt.read().unwrap_or(0)
}

/// The driver's rule (spec 2.7.10, Linux `vring_need_event`): kick when
/// the new avail index passes `avail_event`.
fn driver_would_kick(avail_event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(avail_event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[test]
fn a_buffer_posted_while_the_device_goes_idle_is_served_or_kicked() {
    let mut ring = Ring::new();
    let mem = ring.mem.clone();
    let (kick_tx, kick_rx) = std::sync::mpsc::channel::<()>();
    let device = std::thread::spawn(move || {
        let mut q = Ring {
            mem: mem.clone(),
            avail_idx: 0,
        }
        .queue();
        let (irq, _evt) = interrupt();
        // Idle until kicked, as the worker waits on the queue's eventfd.
        while kick_rx.recv_timeout(Duration::from_secs(2)).is_ok() {
            while kick_rx.try_recv().is_ok() {}
            chain::drain(&mut q, &mem, &irq, 0, |_| Ok(Served::Used(64)));
        }
    });
    // The driver posts as Linux does: publish the index, full barrier,
    // read avail_event, kick only if the new index passed it; never more
    // than the ring holds outstanding. A device that looked at the ring
    // for the last time before asking for a kick, and did not look again,
    // leaves a buffer posted in that window unserved and unkicked.
    const N: u16 = 50_000;
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..N {
        while ring.avail_idx.wrapping_sub(ring.used_idx()) >= QSIZE {
            assert!(Instant::now() < deadline, "device stalled: ring full");
            std::hint::spin_loop();
        }
        let old = ring.avail_idx;
        ring.post();
        std::sync::atomic::fence(Ordering::SeqCst);
        if driver_would_kick(ring.avail_event(), ring.avail_idx, old) {
            kick_tx.send(()).unwrap();
        }
    }
    let wait = Instant::now() + Duration::from_secs(1);
    while ring.used_idx() != N && Instant::now() < wait {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        ring.used_idx(),
        N,
        "a posted buffer was never served (lost kick)"
    );
    drop(kick_tx);
    device.join().unwrap();
}

#[test]
fn the_guest_is_interrupted_exactly_when_used_passes_used_event() {
    let mut ring = Ring::new();
    let mut q = ring.queue();
    let (irq, evt) = interrupt();
    // The driver wants to hear after the 5th used buffer (used_event 4).
    ring.set_used_event(4);
    for _ in 0..8 {
        ring.post();
    }
    let mem = ring.mem.clone();
    let d = chain::drain(&mut q, &mem, &irq, 0, |_| Ok(Served::Used(64)));
    assert_eq!(d, Drained::Empty);
    assert_eq!(ring.used_idx(), 8);
    assert_eq!(fired(&evt), 1, "one interrupt, when used passed 4");
    // Nothing more until used passes the next used_event, however the
    // chains are batched.
    ring.set_used_event(9);
    ring.post();
    chain::drain(&mut q, &mem, &irq, 0, |_| Ok(Served::Used(64)));
    assert_eq!(fired(&evt), 0, "used 9 has not passed used_event 9");
    ring.post();
    ring.post();
    chain::drain(&mut q, &mem, &irq, 0, |_| Ok(Served::Used(64)));
    assert_eq!(fired(&evt), 1, "used 11 passed used_event 9");
}

#[test]
fn a_masked_vector_fires_when_unmasked_not_never() {
    let mut ring = Ring::new();
    let mut q = ring.queue();
    let (irq, evt, vectors) = interrupt_and_vectors();
    ring.set_used_event(0);
    ring.post();
    // The guest masks the vector (as Linux does around a message change)
    // just as the device completes a buffer.
    lock(&vectors.msix).write_table(12, &1u32.to_le_bytes());
    let mem = ring.mem.clone();
    chain::drain(&mut q, &mem, &irq, 0, |_| Ok(Served::Used(64)));
    assert_eq!(fired(&evt), 0, "fired while masked");
    lock(&vectors.msix).write_table(12, &0u32.to_le_bytes());
    vectors.replay_pending();
    assert_eq!(fired(&evt), 1, "the pending interrupt was lost");
}

//! A guest's virtio-net queues, every byte of them chosen by the fuzzer,
//! and frames of fuzzer-chosen sizes arriving from the "tap" (a socket
//! pair): receiving and transmitting must never panic, never touch memory
//! outside the guest's, and end.
#![no_main]

use std::os::fd::AsRawFd;
use std::sync::Arc;

use devices::rate_limiter::RateLimiter;
use devices::virtio::chain;
use devices::virtio::interrupt::{Interrupt, SharedStatus, Vectors};
use devices::virtio::net::rx::Receiver;
use devices::virtio::net::{transmit, Tap};
use devices::virtio::{Queue, QueueT};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const MEM: usize = 1 << 20;

fn queue(mem: &GuestMemoryMmap, base: u64, size: u16, event_idx: bool) -> Option<Queue> {
    let mut q = Queue::new(256).ok()?;
    q.set_size(size);
    q.set_desc_table_address(Some(base as u32), Some(0));
    q.set_avail_ring_address(Some((base + 0x1000) as u32), Some(0));
    q.set_used_ring_address(Some((base + 0x2000) as u32), Some(0));
    q.set_event_idx(event_idx);
    q.set_ready(true);
    q.is_valid(mem).then_some(q)
}

fuzz_target!(|data: &[u8]| {
    let [flags, size_sel, f1, f2, f3, rest @ ..] = data else {
        return;
    };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    mem.write_slice(&rest[..rest.len().min(MEM)], GuestAddress(0)).unwrap();
    let size = 1u16 << (size_sel % 9); // 1..=256
    let event_idx = flags & 1 != 0;
    let (Some(rxq), Some(mut txq)) = (
        queue(&mem, 0, size, event_idx),
        queue(&mem, 0x4000, size, event_idx),
    ) else {
        return;
    };
    let (tap, host) = Tap::socket_pair("fuzz0").unwrap();
    // Frames of 0 to ~64 KiB from the host side.
    for f in [f1, f2, f3] {
        let len = usize::from(*f) * 260;
        let frame = vec![*f; len];
        // SAFETY: writes `frame.len()` bytes from `frame`.
        unsafe { libc::write(host.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
    }
    let irqfds = (0..3).map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap()).collect();
    let irq = Interrupt::new(
        Arc::new(Vectors::new(irqfds)),
        Arc::new(SharedStatus::default()),
        vec![0, 1],
        2,
    );
    let mut limiter = RateLimiter::unlimited();
    let mut rx = Receiver::new(rxq, flags & 2 != 0);
    for _ in 0..4 {
        rx.run(&mem, &tap, &mut limiter, &irq, 0);
        chain::drain(&mut txq, &mem, &irq, 1, |c| transmit(&mem, &tap, &mut limiter, c, None));
        if irq.failed() {
            break;
        }
    }
});

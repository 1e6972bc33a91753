//! A guest's virtio-balloon inflate or reporting queue, every byte of it
//! (rings, descriptors, page frame numbers) chosen by the fuzzer: draining
//! it must never panic, never advise memory outside the guest's, and end.
#![no_main]

use std::sync::Arc;

use devices::virtio::balloon::{inflate, report, BalloonControl};
use devices::virtio::chain;
use devices::virtio::interrupt::{Interrupt, SharedStatus, Vectors};
use devices::virtio::{Queue, QueueT};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const MEM: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let [flags, size_sel, rest @ ..] = data else {
        return;
    };
    // Two regions with a gap, as guest RAM around the MMIO hole.
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), MEM),
        (GuestAddress(0x20_0000), MEM),
    ])
    .unwrap();
    mem.write_slice(&rest[..rest.len().min(MEM)], GuestAddress(0)).unwrap();
    let size = 1u16 << (size_sel % 9); // 1..=256
    let mut q = Queue::new(256).unwrap();
    q.set_size(size);
    q.set_desc_table_address(Some(0x0), Some(0));
    q.set_avail_ring_address(Some(0x1000), Some(0));
    q.set_used_ring_address(Some(0x2000), Some(0));
    q.set_event_idx(flags & 1 != 0);
    q.set_ready(true);
    if !q.is_valid(&mem) {
        return;
    }
    let irqfds = (0..2).map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap()).collect();
    let irq = Interrupt::new(
        Arc::new(Vectors::new(irqfds)),
        Arc::new(SharedStatus::default()),
        vec![0],
        1,
    );
    let control = BalloonControl::new().unwrap();
    let reporting = flags & 2 != 0;
    for _ in 0..4 {
        chain::drain(&mut q, &mem, &irq, 0, |c| {
            if reporting {
                report(&mem, &control, c)
            } else {
                inflate(&mem, &control, c)
            }
        });
        if irq.failed() {
            break;
        }
    }
});

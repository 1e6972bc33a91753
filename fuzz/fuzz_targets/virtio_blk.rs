//! A guest's virtio-blk queue, every byte of it (rings, descriptors,
//! indirect tables, request headers) chosen by the fuzzer: draining it must
//! never panic, never touch memory outside the guest's, and end.
#![no_main]

use std::sync::Arc;

use devices::virtio::block::request::Request;
use devices::virtio::block::DiskBackend;
use devices::virtio::chain::{self, Served};
use devices::virtio::interrupt::{Interrupt, SharedStatus, Vectors};
use devices::virtio::{Queue, QueueT};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, VolatileSlice};
use vmm_sys_util::eventfd::EventFd;

const MEM: usize = 1 << 20;

/// A 64 KiB disk in memory.
struct MemDisk(Vec<u8>);

impl DiskBackend for MemDisk {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&mut self, offset: u64, bufs: &[VolatileSlice]) -> std::io::Result<()> {
        let mut at = offset as usize;
        for b in bufs {
            b.copy_from(&self.0[at..at + b.len()]);
            at += b.len();
        }
        Ok(())
    }
    fn write_at(&mut self, offset: u64, bufs: &[VolatileSlice]) -> std::io::Result<()> {
        let mut at = offset as usize;
        for b in bufs {
            b.copy_to(&mut self.0[at..at + b.len()]);
            at += b.len();
        }
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn discard(&mut self, _: u64, _: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.0[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, size_sel, rest @ ..] = data else {
        return;
    };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
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
    let mut disk = MemDisk(vec![0u8; 64 << 10]);
    let readonly = flags & 2 != 0;
    // Bounded: each drain consumes at most the available chains.
    for _ in 0..4 {
        chain::drain(&mut q, &mem, &irq, 0, |c| {
            let req = Request::parse(&mem, c)?;
            Ok(Served::Used(req.execute(&mem, &mut disk, readonly, b"fuzz")?))
        });
        if irq.failed() {
            break;
        }
    }
});

//! The statistics queue's buffer (virtio spec 5.5.6.3): packed entries of
//! a le16 tag and a le64 value. The guest writes it: unknown tags are
//! skipped, a short last entry ignored, and at most [`MAX_ENTRIES`] read.

use vm_memory::{Bytes, GuestMemoryMmap};

use crate::virtio::chain::Chain;

/// Most entries read from one buffer (the spec defines 10 tags).
pub const MAX_ENTRIES: usize = 64;
const ENTRY: usize = 10;

/// The guest's memory statistics, as its driver last sent them (`None`:
/// not sent). Memory sizes in bytes, the rest counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalloonStats {
    /// `VIRTIO_BALLOON_S_SWAP_IN`: memory swapped in, bytes.
    pub swap_in: Option<u64>,
    /// `VIRTIO_BALLOON_S_SWAP_OUT`: memory swapped out, bytes.
    pub swap_out: Option<u64>,
    /// `VIRTIO_BALLOON_S_MAJFLT`: major page faults.
    pub major_faults: Option<u64>,
    /// `VIRTIO_BALLOON_S_MINFLT`: minor page faults.
    pub minor_faults: Option<u64>,
    /// `VIRTIO_BALLOON_S_MEMFREE`: free memory, bytes.
    pub free_memory: Option<u64>,
    /// `VIRTIO_BALLOON_S_MEMTOT`: total memory, bytes.
    pub total_memory: Option<u64>,
    /// `VIRTIO_BALLOON_S_AVAIL`: available memory (Linux's MemAvailable),
    /// bytes.
    pub available_memory: Option<u64>,
    /// `VIRTIO_BALLOON_S_CACHES`: disk caches, bytes.
    pub disk_caches: Option<u64>,
    /// `VIRTIO_BALLOON_S_HTLB_PGALLOC`: huge page allocations.
    pub hugetlb_allocations: Option<u64>,
    /// `VIRTIO_BALLOON_S_HTLB_PGFAIL`: huge page allocation failures.
    pub hugetlb_failures: Option<u64>,
}

impl BalloonStats {
    fn set(&mut self, tag: u16, value: u64) {
        let field = match tag {
            0 => &mut self.swap_in,
            1 => &mut self.swap_out,
            2 => &mut self.major_faults,
            3 => &mut self.minor_faults,
            4 => &mut self.free_memory,
            5 => &mut self.total_memory,
            6 => &mut self.available_memory,
            7 => &mut self.disk_caches,
            8 => &mut self.hugetlb_allocations,
            9 => &mut self.hugetlb_failures,
            _ => return,
        };
        *field = Some(value);
    }
}

/// The statistics in `chain`'s readable buffers (already checked to lie
/// inside guest memory).
pub fn parse(mem: &GuestMemoryMmap, chain: &Chain) -> BalloonStats {
    let mut bytes = Vec::new();
    for d in chain.readable() {
        let room = MAX_ENTRIES * ENTRY - bytes.len();
        let n = (d.len as usize).min(room);
        let start = bytes.len();
        bytes.resize(start + n, 0);
        if mem.read_slice(&mut bytes[start..], d.addr).is_err() {
            bytes.truncate(start);
        }
    }
    let mut stats = BalloonStats::default();
    for e in bytes.chunks_exact(ENTRY) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let mut value = [0u8; 8];
        value.copy_from_slice(&e[2..]);
        stats.set(tag, u64::from_le_bytes(value));
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::chain::Desc;
    use vm_memory::GuestAddress;

    fn entry(tag: u16, value: u64) -> Vec<u8> {
        let mut e = tag.to_le_bytes().to_vec();
        e.extend(value.to_le_bytes());
        e
    }

    #[test]
    fn known_tags_are_read_and_the_rest_skipped() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap();
        let mut buf = entry(5, 512 << 20);
        buf.extend(entry(4, 100 << 20));
        buf.extend(entry(77, 1));
        buf.extend(entry(3, 42));
        buf.extend([1, 2, 3]); // A short last entry.
        mem.write_slice(&buf, GuestAddress(0x100)).unwrap();
        let chain = Chain {
            head: 0,
            descs: vec![Desc {
                addr: GuestAddress(0x100),
                len: buf.len() as u32,
                writable: false,
            }],
        };
        let s = parse(&mem, &chain);
        assert_eq!(s.total_memory, Some(512 << 20));
        assert_eq!(s.free_memory, Some(100 << 20));
        assert_eq!(s.minor_faults, Some(42));
        assert_eq!(s.swap_in, None);
        // A huge buffer is read only up to MAX_ENTRIES.
        let big = Chain {
            head: 0,
            descs: vec![Desc {
                addr: GuestAddress(0),
                len: 1 << 16,
                writable: false,
            }],
        };
        let _ = parse(&mem, &big);
    }
}

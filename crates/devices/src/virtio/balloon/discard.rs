//! Giving guest pages back to the host: `madvise(MADV_DONTNEED)` on ranges
//! of guest RAM the driver named. Every range comes from the guest and is
//! checked first: page aligned, non-empty, inside one region of guest RAM.
//! Nothing outside guest RAM is ever advised.

use vm_memory::{
    Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

/// The balloon's page size (virtio spec 5.5.6: PFNs are of 4 KiB pages).
pub const PAGE_SIZE: u64 = 4096;

/// Why a range was not given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DiscardError {
    #[error("range {0:#x}+{1:#x} is not page aligned or is empty")]
    Unaligned(u64, u64),
    #[error("range {0:#x}+{1:#x} is not inside one region of guest RAM")]
    OutsideRam(u64, u64),
    #[error("madvise failed: errno {0}")]
    Madvise(i32),
}

/// What [`discard`] did with a valid range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discarded {
    /// The pages went back to the host.
    Freed,
    /// Kept: hugetlbfs pages cannot be given back 4 KiB at a time.
    Kept,
}

/// Gives the guest RAM `[gpa, gpa + len)` back to the host (the guest reads
/// zeros there on its next touch).
pub fn discard(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> Result<Discarded, DiscardError> {
    if len == 0 || !gpa.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
        return Err(DiscardError::Unaligned(gpa, len));
    }
    let outside = DiscardError::OutsideRam(gpa, len);
    let last = gpa.checked_add(len - 1).ok_or(outside)?;
    let region = mem.find_region(GuestAddress(gpa)).ok_or(outside)?;
    let same = mem
        .find_region(GuestAddress(last))
        .is_some_and(|r| r.start_addr() == region.start_addr());
    if !same {
        return Err(outside);
    }
    if region.is_hugetlbfs() == Some(true) {
        return Ok(Discarded::Kept);
    }
    let offset = GuestAddress(gpa)
        .checked_offset_from(region.start_addr())
        .ok_or(outside)?;
    let host = region
        .get_host_address(MemoryRegionAddress(offset))
        .map_err(|_| outside)?;
    let len = usize::try_from(len).map_err(|_| outside)?;
    // SAFETY: `[host, host + len)` lies inside one mapping of guest RAM
    // (checked above against the region's bounds); MADV_DONTNEED on a
    // private anonymous mapping only drops its pages, which read back as
    // zeros: the guest agreed to lose their contents.
    let rc = unsafe { libc::madvise(host.cast(), len, libc::MADV_DONTNEED) };
    if rc != 0 {
        return Err(DiscardError::Madvise(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    Ok(Discarded::Freed)
}

/// Runs of consecutive page frame numbers in `pfns`, as (first, count):
/// one `madvise` per run instead of one per page.
pub fn runs(pfns: &[u32]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &pfn in pfns {
        let pfn = u64::from(pfn);
        match out.last_mut() {
            Some((first, count)) if *first + *count == pfn => *count += 1,
            _ => out.push((pfn, 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 1 << 20),
            (GuestAddress(0x1_0000_0000), 1 << 20),
        ])
        .unwrap()
    }

    #[test]
    fn a_range_inside_ram_reads_back_as_zeros() {
        let m = mem();
        m.write_slice(&[0xaa; 8192], GuestAddress(0x4000)).unwrap();
        assert_eq!(discard(&m, 0x4000, 4096), Ok(Discarded::Freed));
        let mut b = [0u8; 8192];
        m.read_slice(&mut b, GuestAddress(0x4000)).unwrap();
        assert!(b[..4096].iter().all(|&x| x == 0));
        assert!(
            b[4096..].iter().all(|&x| x == 0xaa),
            "the next page is kept"
        );
    }

    #[test]
    fn hostile_ranges_are_refused() {
        let m = mem();
        let outside = |g, l| Err(DiscardError::OutsideRam(g, l));
        assert_eq!(
            discard(&m, 0x1000, 0),
            Err(DiscardError::Unaligned(0x1000, 0))
        );
        assert_eq!(
            discard(&m, 0x1001, 4096),
            Err(DiscardError::Unaligned(0x1001, 4096))
        );
        // Past the end of a region, across the gap, beyond RAM, wrapping.
        assert_eq!(discard(&m, 0xff000, 0x2000), outside(0xff000, 0x2000));
        assert_eq!(discard(&m, 0x100000, 4096), outside(0x100000, 4096));
        assert_eq!(
            discard(&m, 0x1_0010_0000, 4096),
            outside(0x1_0010_0000, 4096)
        );
        let top = u64::MAX - 4095;
        assert_eq!(discard(&m, top, 8192), outside(top, 8192));
        assert_eq!(
            discard(&m, 0xfffff000 << 12, 4096),
            outside(0xfffff000 << 12, 4096)
        );
        // The last page of the high region is fine.
        assert_eq!(discard(&m, 0x1_000f_f000, 4096), Ok(Discarded::Freed));
    }

    #[test]
    fn consecutive_pfns_make_runs() {
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(
            runs(&[5, 6, 7, 9, 3, 4, u32::MAX]),
            vec![(5, 3), (9, 1), (3, 2), (u64::from(u32::MAX), 1)]
        );
    }
}

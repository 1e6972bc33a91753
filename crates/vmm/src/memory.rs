//! Guest RAM: an anonymous private mapping per region, registered with KVM,
//! advised for transparent huge pages (by default) and same-page merging
//! (when asked: `MemoryOptions`).

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use api::{HugePageSize, MemoryOptions};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

use crate::Error;

/// The host's total memory in MiB, from /proc/meminfo.
pub fn host_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Refuses `mib` MiB of guest memory when it exceeds the host's RAM (when
/// that can be read: under Landlock, /proc/meminfo cannot, so the VMM
/// checks before it restricts itself).
pub fn check_host(mib: u64) -> Result<(), Error> {
    match host_memory_mib() {
        Some(host) if mib > host => Err(Error::MemoryExceedsHost { asked: mib, host }),
        _ => Ok(()),
    }
}

/// Maps `mib` MiB of guest memory following the platform layout, advised
/// as `options` asks: `MADV_HUGEPAGE` when `thp` (a kernel without THP
/// only gets a warning: the default must not stop a VM), `MADV_MERGEABLE`
/// when `merge` (a kernel without KSM is an error: the user asked for it).
pub fn create(mib: u64, options: &MemoryOptions) -> Result<GuestMemoryMmap, Error> {
    check_host(mib)?;
    let bytes = mib << 20;
    let ranges: Vec<_> = arch::layout::ram_regions(bytes)
        .into_iter()
        .map(|(addr, size)| (addr, size as usize))
        .collect();
    if let Some(size) = options.hugepages {
        check_hugepages(mib, size)?;
        return create_hugetlb(mib, &ranges, size);
    }
    let mem = GuestMemoryMmap::from_ranges(&ranges)
        .map_err(|e| Error::MapMemory(mib, std::io::Error::other(e.to_string())))?;
    if options.thp && options.hugepages.is_none() {
        if let Err(e) = advise(&mem, libc::MADV_HUGEPAGE) {
            tracing::warn!("guest memory without transparent huge pages: {e}");
        }
    }
    if options.merge {
        advise(&mem, libc::MADV_MERGEABLE).map_err(|e| Error::Advise("MADV_MERGEABLE (KSM)", e))?;
    }
    dont_dump(&mem);
    Ok(mem)
}

/// The sysfs directory of the host's `size` huge page pool.
fn pool_dir(size: HugePageSize) -> String {
    format!("/sys/kernel/mm/hugepages/hugepages-{}kB", size.kib())
}

/// Refuses `mib` MiB of `size` huge pages when the host's pool has fewer
/// free, unreserved pages (`free_hugepages - resv_hugepages`), or no such
/// pool. When sysfs cannot be read (under Landlock on a rebuild, in a
/// cell), the reservation `mmap` makes is the check.
pub fn check_hugepages(mib: u64, size: HugePageSize) -> Result<(), Error> {
    let dir = pool_dir(size);
    let read = |name: &str| -> std::io::Result<u64> {
        let text = std::fs::read_to_string(format!("{dir}/{name}"))?;
        text.trim()
            .parse()
            .map_err(|_| std::io::Error::other(format!("{dir}/{name}: not a number")))
    };
    let (free, resv) = match (read("free_hugepages"), read("resv_hugepages")) {
        (Ok(f), Ok(r)) => (f, r),
        (Err(e), _) | (_, Err(e))
            if e.kind() == std::io::ErrorKind::NotFound
                && std::path::Path::new("/sys/kernel/mm/hugepages").is_dir() =>
        {
            return Err(Error::NoHugePagePool(size.mib()))
        }
        _ => return Ok(()),
    };
    let want = mib / size.mib();
    let have = free.saturating_sub(resv);
    if have < want {
        return Err(Error::TooFewHugePages {
            want,
            have,
            size_mib: size.mib(),
        });
    }
    Ok(())
}

/// Guest RAM in one hugetlbfs memfd (`MFD_HUGETLB`), each region a shared
/// mapping of its part, populated at `mmap` (`MAP_POPULATE`): the kernel
/// reserves the pages when it maps, so too few pages fail here, never with
/// a SIGBUS when the guest first touches one.
fn create_hugetlb(
    mib: u64,
    ranges: &[(GuestAddress, usize)],
    size: HugePageSize,
) -> Result<GuestMemoryMmap, Error> {
    let map_err = |e: std::io::Error| Error::MapMemory(mib, e);
    let flags = libc::MFD_CLOEXEC
        | libc::MFD_HUGETLB
        | match size {
            HugePageSize::Size2M => libc::MFD_HUGE_2MB,
            HugePageSize::Size1G => libc::MFD_HUGE_1GB,
        };
    // SAFETY: the name is a NUL-terminated string; the call only creates
    // a descriptor, which is owned by `file` right after.
    let fd = unsafe { libc::memfd_create(c"vt-guest-ram".as_ptr(), flags) };
    if fd < 0 {
        return Err(map_err(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let file = Arc::new(unsafe { File::from_raw_fd(fd) });
    file.set_len(mib << 20).map_err(map_err)?;
    let mut regions = Vec::with_capacity(ranges.len());
    let mut offset = 0u64;
    for &(addr, len) in ranges {
        let region = MmapRegionBuilder::new(len)
            .with_file_offset(FileOffset::from_arc(file.clone(), offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_SHARED | libc::MAP_POPULATE)
            .with_hugetlbfs(true)
            .build()
            .map_err(|e| match e {
                vm_memory::mmap::MmapRegionError::Mmap(io)
                    if io.raw_os_error() == Some(libc::ENOMEM) =>
                {
                    Error::HugePagesReserve {
                        want: mib / size.mib(),
                        size_mib: size.mib(),
                    }
                }
                e => map_err(std::io::Error::other(e.to_string())),
            })?;
        regions.push(
            GuestRegionMmap::new(region, addr)
                .ok_or_else(|| map_err(std::io::Error::other("region overflows")))?,
        );
        offset += len as u64;
    }
    let mem = GuestMemoryMmap::from_regions(regions)
        .map_err(|e| map_err(std::io::Error::other(e.to_string())))?;
    dont_dump(&mem);
    Ok(mem)
}

/// Keeps guest RAM out of core dumps (`MADV_DONTDUMP`, as QEMU's
/// `dump-guest-core=off`): a guest's memory is its owner's data, not the
/// host's debugging material. The mark (`dd` in smaps' `VmFlags`) is also
/// how [`api::usage::MemoryUsage`] finds guest RAM among the VMM's
/// mappings. A failure only costs that, so it is a warning.
fn dont_dump(mem: &GuestMemoryMmap) {
    if let Err(e) = advise(mem, libc::MADV_DONTDUMP) {
        tracing::warn!("guest memory not marked MADV_DONTDUMP: {e}");
    }
}

/// `madvise(advice)` on every region of `mem`.
fn advise(mem: &GuestMemoryMmap, advice: libc::c_int) -> std::io::Result<()> {
    for region in mem.iter() {
        // SAFETY: the range is exactly one mapping `mem` owns; these
        // advices change how the kernel backs it, never its contents.
        let rc = unsafe { libc::madvise(region.as_ptr().cast(), region.len() as usize, advice) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Registers every region of `mem` with the VM.
pub fn register(vm: &mut hv::Vm, mem: &GuestMemoryMmap) -> Result<(), Error> {
    for region in mem.iter() {
        let host = region.as_ptr() as u64;
        // SAFETY: the region belongs to `mem`, which the caller keeps alive
        // for as long as the VM (`Vm` owns both and drops the VM fd first).
        unsafe { vm.add_memory(region.start_addr().0, region.len(), host) }?;
    }
    Ok(())
}

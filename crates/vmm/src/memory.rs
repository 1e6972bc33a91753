//! Guest RAM: an anonymous private mapping per region, registered with KVM.

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

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

/// Maps `mib` MiB of guest memory following the platform layout.
pub fn create(mib: u64) -> Result<GuestMemoryMmap, Error> {
    check_host(mib)?;
    let bytes = mib << 20;
    let ranges: Vec<_> = arch::layout::ram_regions(bytes)
        .into_iter()
        .map(|(addr, size)| (addr, size as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges)
        .map_err(|e| Error::MapMemory(mib, std::io::Error::other(e.to_string())))
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

//! The virtio device workers' allow-list, installed first thing in each
//! worker thread (`devices::virtio::worker` calls the hook the VMM set), on
//! top of the main and vCPU filters it inherits.
//!
//! A worker waits in epoll on its queue eventfds, stop eventfd, tap and
//! rate-limit timer, and does the device's I/O on fds it was given:
//! virtio-blk `preadv`/`pwritev` into guest memory, `fdatasync`,
//! `fallocate` (discard, write-zeroes) and `pwrite64` (zeroes written by
//! hand); virtio-net `readv`/`writev` on the tap; virtio-rng `getrandom`
//! (in the common list); a rate-limit timer re-armed (`timerfd_settime`)
//! and read. No `ioctl`, no `open`, no sockets.
//!
//! Measured (`strace -f` of a Linux guest in the lab using its disk, NIC
//! and rng, across a reboot): blk `preadv pwritev fdatasync`, net `readv
//! writev`, rng `getrandom`, all `epoll_wait read write`, plus the thread
//! start-up calls in the common list. A qcow2 disk (imago, `strace -f` of
//! `crates/disk/tests/qemu_interop.rs`) adds `pread64` (metadata),
//! `ftruncate` and `fstat`-by-descriptor (the file's end when allocating),
//! `lseek` and `fsync`.

use super::{Result, Rules};

/// Adds the device workers' calls to `r`.
pub fn rules(r: &mut Rules) -> Result<()> {
    r.allow(&[
        libc::SYS_epoll_wait,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_pwrite64,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_fdatasync,
        libc::SYS_fallocate,
        libc::SYS_timerfd_settime,
        libc::SYS_pread64,
        libc::SYS_ftruncate,
        libc::SYS_fstat,
        libc::SYS_lseek,
        libc::SYS_fsync,
    ]);
    // fstat through the *at calls, on the descriptor only (an empty path
    // with AT_EMPTY_PATH, as std's File::metadata does): no path is looked at.
    let empty = libc::AT_EMPTY_PATH as u64;
    r.allow_arg(libc::SYS_newfstatat, 3, &[empty])?;
    r.allow_arg(libc::SYS_statx, 2, &[empty])?;
    Ok(())
}

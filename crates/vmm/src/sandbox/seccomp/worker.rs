//! The virtio device workers' allow-list, installed first thing in each
//! worker thread (`devices::virtio::worker` calls the hook the VMM set), on
//! top of the main and vCPU filters it inherits.
//!
//! A worker waits in epoll on its queue eventfds, stop eventfd, tap and
//! rate-limit timer, and does the device's I/O on fds it was given:
//! virtio-blk `preadv`/`pwritev` into guest memory, `fdatasync`,
//! `fallocate` (discard, write-zeroes) and `pwrite64` (zeroes written by
//! hand); virtio-net `readv`/`writev` on the tap; virtio-rng `getrandom`
//! (in the common list). No `ioctl`, no `open`, no sockets.

use super::{Result, Rules};

/// Adds the device workers' calls to `r`.
pub fn rules(r: &mut Rules) -> Result<()> {
    r.allow(&[
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_preadv2,
        libc::SYS_pwritev2,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_fdatasync,
        libc::SYS_fsync,
        libc::SYS_fallocate,
        libc::SYS_timerfd_settime,
        libc::SYS_timerfd_gettime,
    ]);
    Ok(())
}

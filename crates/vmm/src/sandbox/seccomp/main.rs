//! The main thread's allow-list, installed after the first VM is built.
//!
//! It runs the event loop and, on a guest reboot with `--on-reboot
//! restart` (or `PUT /vm/reboot`), builds the VM again: opens `/dev/kvm`,
//! the kernel, initrd, disks and `/dev/net/tun` (Landlock decides which
//! paths), maps guest memory, creates the VM, its devices and vCPUs, and
//! starts the vCPU threads. vCPU threads inherit this filter, so it also
//! holds what they do (see `vcpu.rs`).

use super::{ioctls, vcpu, Result, Rules};

/// Adds the main thread's calls to `r`.
pub fn rules(r: &mut Rules) -> Result<()> {
    vcpu::rules(r)?;
    r.allow(&[
        // Re-reading the kernel, initrd and disks on a rebuild.
        libc::SYS_openat,
        libc::SYS_statx,
        libc::SYS_newfstatat,
        libc::SYS_lseek,
        libc::SYS_pread64,
        // imago asks a qcow2's (and its backing files') file system for its
        // block size when it opens them (descriptor only, no path).
        libc::SYS_fstatfs,
        // The event loop and its signalfd (made anew for each boot).
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_wait,
        libc::SYS_eventfd2,
        libc::SYS_signalfd4,
        // Guest RAM on huge pages (`--memory-hugepages`): its memfd.
        libc::SYS_memfd_create,
        libc::SYS_ftruncate,
        // vCPU threads.
        libc::SYS_clone3,
        // The control socket is unlinked at exit (refused by Landlock when
        // it is on; the next VMM replaces a stale socket).
        libc::SYS_unlink,
    ]);
    // glibc installs its internal SIGCANCEL handler (signal 33) on the first
    // pthread_create, which can be the first vCPU's, under this filter.
    r.allow_arg(libc::SYS_rt_sigaction, 0, &[33])?;
    r.allow_ioctls(ioctls::KVM_BUILD)?;
    r.allow_ioctls(ioctls::TAP_SETUP)?;
    // The raw terminal on stdin is restored at exit.
    r.allow_ioctls(&[ioctls::TCGETS, ioctls::TCSETS])?;
    // The one socket a new tap needs: an AF_INET datagram socket to set the
    // interface flags (no address, never bound or connected).
    let dgram = (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64;
    r.allow_when(
        libc::SYS_socket,
        vec![
            super::arg_eq(0, libc::AF_INET as u64)?,
            super::arg_eq(1, dgram)?,
        ],
    )?;
    Ok(())
}

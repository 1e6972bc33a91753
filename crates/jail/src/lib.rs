//! The cell a `vt-vmm` runs in (issue 9's jail).
//!
//! A VMM must be assumed taken over by its guest; the cell bounds what it
//! can then reach. The manager (`vtd`) builds it in two halves:
//!
//! - [`spawn`], in the manager: `clone3` with new mount, pid, ipc, uts and
//!   network namespaces, the descriptors the VMM needs (kernel, initrd,
//!   disks, taps, console, control socket) placed at fds 3, 4, … and every
//!   other descriptor closed, a new session, an empty signal mask; the
//!   child waits on a gate until the manager has put it in its cgroups
//!   ([`cgroup`]), then execs the VMM.
//! - [`cell::enter`], first thing in the VMM (`vt-vmm --jail`), still root
//!   and pid 1 of its namespace: a private tmpfs root holding only
//!   `/dev/kvm` and `/dev/null`, `pivot_root` into it (the host's tree
//!   unmounted), then [`privs::drop_to`]: rlimits, no capabilities in any
//!   set, `no_new_privs`, not dumpable, and the VM's own uid/gid.
//!
//! The uids come from a range the manager owns ([`ids`]). Seccomp filters
//! and Landlock rules are applied later by the VMM itself, per thread.
//!
//! Sources followed: Firecracker's jailer (`src/jailer/src/env.rs`:
//! namespaces, pivot_root, cgroups, uid/gid, close fds), clone3(2),
//! pivot_root(2), capabilities(7), cgroups(7).

pub mod cell;
pub mod cgroup;
pub mod ids;
pub mod privs;
pub mod spawn;

pub use spawn::{spawn, Child, SpawnSpec};

/// `errno` of the last failed call, as an [`std::io::Error`].
pub(crate) fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// `Ok(r)` when a libc-style call returned ≥ 0, else the errno.
pub(crate) fn check(r: libc::c_long) -> std::io::Result<libc::c_long> {
    if r < 0 {
        Err(last_err())
    } else {
        Ok(r)
    }
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

//! Giving up everything root had: rlimits, capabilities (all five sets),
//! `no_new_privs`, dumpability, supplementary groups, then the VM's own
//! uid and gid (capabilities(7), prctl(2), setresuid(2)).

use std::io;

use crate::check;

/// Resource limits of a VMM (setrlimit(2)); both soft and hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_NOFILE`: open descriptors.
    pub open_files: u64,
    /// `RLIMIT_FSIZE`: largest file the VMM may grow (bytes): bounds what a
    /// guest can make it write to a growing image or the console log.
    pub file_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            open_files: 4096,
            file_size: u64::MAX,
        }
    }
}

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("uid/gid 0 is not allowed for a VM")]
    Root,
    #[error("cannot {0}")]
    Sys(&'static str, #[source] io::Error),
    #[error("capabilities remain after dropping them (effective {0:#x}, permitted {1:#x})")]
    CapsLeft(u64, u64),
}

fn rlimit(res: libc::__rlimit_resource_t, v: u64, what: &'static str) -> Result<(), PrivError> {
    let l = libc::rlimit {
        rlim_cur: v,
        rlim_max: v,
    };
    // SAFETY: setrlimit reads one struct rlimit.
    check(unsafe { libc::setrlimit(res, &l) }.into())
        .map(drop)
        .map_err(|e| PrivError::Sys(what, e))
}

/// capget(2)/capset(2)'s version 3 header and data (two 32-bit halves).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn cap_header() -> CapHeader {
    CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    }
}

fn capget() -> io::Result<[CapData; 2]> {
    let mut h = cap_header();
    let mut d = [CapData::default(); 2];
    // SAFETY: capget with a v3 header and the two data structs v3 fills.
    check(unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) })?;
    Ok(d)
}

/// `(effective, permitted)` capability sets of this thread (capget(2)).
pub fn capabilities() -> io::Result<(u64, u64)> {
    let d = capget()?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(d[0].effective, d[1].effective),
        join(d[0].permitted, d[1].permitted),
    ))
}

/// Clears the calling *thread's* effective capability set (capset(2)
/// works per thread); its permitted set stays. For a short-lived thread
/// that must act with no more than a user's own rights.
pub fn clear_effective() -> io::Result<()> {
    let mut d = capget()?;
    d[0].effective = 0;
    d[1].effective = 0;
    let mut h = cap_header();
    // SAFETY: capset with a v3 header and the two data structs v3 reads.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) }).map(drop)
}

/// Applies `limits`, drops every capability, sets `no_new_privs` and
/// non-dumpable, and becomes `uid`/`gid` with no supplementary groups.
/// Checks afterwards that no capability is left.
pub fn drop_to(uid: u32, gid: u32, limits: Limits) -> Result<(), PrivError> {
    if uid == 0 || gid == 0 {
        return Err(PrivError::Root);
    }
    rlimit(libc::RLIMIT_NOFILE, limits.open_files, "limit open files")?;
    rlimit(libc::RLIMIT_FSIZE, limits.file_size, "limit file size")?;
    rlimit(libc::RLIMIT_CORE, 0, "turn core dumps off")?;
    // The bounding set: no exec (none is allowed anyway) can regain them.
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(PrivError::Sys(
                "drop the bounding set",
                io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: prctl with integer arguments.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    check(r.into()).map_err(|e| PrivError::Sys("clear ambient capabilities", e))?;
    // SAFETY: setgroups with an empty list.
    check(unsafe { libc::setgroups(0, std::ptr::null()) }.into())
        .map_err(|e| PrivError::Sys("drop supplementary groups", e))?;
    // SAFETY: integer arguments.
    check(unsafe { libc::setresgid(gid, gid, gid) }.into())
        .map_err(|e| PrivError::Sys("set the gid", e))?;
    // Leaving uid 0 clears the permitted and effective sets (no keep-caps).
    // SAFETY: integer arguments.
    check(unsafe { libc::setresuid(uid, uid, uid) }.into())
        .map_err(|e| PrivError::Sys("set the uid", e))?;
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }.into())
        .map_err(|e| PrivError::Sys("set no_new_privs", e))?;
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }.into())
        .map_err(|e| PrivError::Sys("make the process non-dumpable", e))?;
    let (eff, perm) = capabilities().map_err(|e| PrivError::Sys("read capabilities", e))?;
    if eff != 0 || perm != 0 {
        return Err(PrivError::CapsLeft(eff, perm));
    }
    Ok(())
}

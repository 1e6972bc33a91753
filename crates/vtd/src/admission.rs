//! The policy switches a VM's definition is checked against before its
//! VMM starts (and when it is defined): where its files are, shared
//! disks, running without its cell.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use api::manager::VmDefinition;

use crate::daemon::Defaults;
use crate::error::ApiError;
use crate::policy::Policy;

/// `statfs(2)` f_type of NFS.
const NFS_SUPER_MAGIC: i64 = 0x6969;
/// `statfs(2)` f_type of FUSE (`fuse` and `fuseblk`).
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// The file system type of the open file `f` (`fstatfs(2)` f_type).
fn fd_fs_type(f: &File) -> Option<i64> {
    // SAFETY: statfs is plain data, filled in by the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a descriptor `f` owns and a statfs to fill, both alive for the call.
    if unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_type as i64)
}

/// The file system type of `path` (`statfs(2)` f_type), None when it
/// cannot be asked (the file is checked again when it is opened).
pub fn fs_type(path: &Path) -> Option<i64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs is plain data, filled in by the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statfs to fill, both alive for the call.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_type as i64)
}

/// The kernel, initrd and disk images of `def`, each with its role.
fn files(def: &VmDefinition) -> Vec<(&'static str, &Path)> {
    def.kernel
        .iter()
        .map(|k| ("kernel", k.as_path()))
        .chain(def.initrd.iter().map(|i| ("initrd", i.as_path())))
        .chain(def.disks.iter().map(|d| ("disk", d.path.as_path())))
        .collect()
}

/// Whether `p` is inside one of `dirs` (both with symlinks resolved;
/// a path that cannot be resolved is taken as written).
fn inside(p: &Path, dirs: &[PathBuf]) -> bool {
    let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    dirs.iter().any(|d| {
        let d = std::fs::canonicalize(d).unwrap_or_else(|_| d.clone());
        real.starts_with(&d)
    })
}

/// Checks `def` against the switches: `vm_host_bridges` (a `bridge=` NIC
/// of a VM not root's), `vm_shared_disks`, `vm_unconfined`,
/// `vm_host_paths` (outside `storage`; the admin's default kernel and
/// initrd are always allowed), `vm_use_nfs` and `vm_use_fusefs`.
pub fn check(
    def: &VmDefinition,
    policy: &Policy,
    storage: &[PathBuf],
    defaults: &Defaults,
) -> Result<(), ApiError> {
    let users = def.owner.is_some_and(|o| o.uid != 0);
    if let (true, Some(b)) = (users, def.networks.iter().find_map(|n| n.bridge.as_ref())) {
        policy.require(
            "vm_host_bridges",
            &format!(
                "a NIC on host bridge {b} (bridge= is unfiltered: use network=NAME, or ask root)"
            ),
        )?;
    }
    if let Some(d) = def.disks.iter().find(|d| d.shareable) {
        policy.require(
            "vm_shared_disks",
            &format!("disk {} is shareable=on", d.path.display()),
        )?;
    }
    if def.unconfined {
        policy.require(
            "vm_unconfined",
            &format!("VM '{}' is defined to run without its cell", def.name),
        )?;
    }
    for (what, p) in files(def) {
        let admins = what != "disk" && defaults.is_default(p);
        if !admins && !policy.on("vm_host_paths") && !inside(p, storage) {
            let dirs: Vec<String> = storage.iter().map(|d| d.display().to_string()).collect();
            policy.require(
                "vm_host_paths",
                &format!(
                    "{what} {} is outside the storage directories ({})",
                    p.display(),
                    dirs.join(", ")
                ),
            )?;
        }
        check_fs(what, p, fs_type(p), policy)?;
    }
    Ok(())
}

/// `vm_use_nfs` and `vm_use_fusefs` for a file of file system `fs`.
fn check_fs(what: &str, p: &Path, fs: Option<i64>, policy: &Policy) -> Result<(), ApiError> {
    match fs {
        Some(NFS_SUPER_MAGIC) => {
            policy.require("vm_use_nfs", &format!("{what} {} is on NFS", p.display()))
        }
        Some(FUSE_SUPER_MAGIC) => policy.require(
            "vm_use_fusefs",
            &format!("{what} {} is on a FUSE file system", p.display()),
        ),
        _ => Ok(()),
    }
}

/// The same checks on a file opened for a jailed VMM (`what`: kernel,
/// initrd, disk, backing file): its file system by `fstatfs(2)` and its
/// real path (`/proc/self/fd`) against the storage directories, so a
/// file swapped in after [`check`] or a qcow2 backing file is caught too.
pub fn check_open(
    what: &'static str,
    path: &Path,
    f: &File,
    policy: &Policy,
    storage: &[PathBuf],
    defaults: &Defaults,
) -> Result<(), ApiError> {
    let admins = matches!(what, "kernel" | "initrd") && defaults.is_default(path);
    if !admins && !policy.on("vm_host_paths") {
        let real = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
            .unwrap_or_else(|_| path.to_path_buf());
        if !inside(&real, storage) {
            policy.require(
                "vm_host_paths",
                &format!(
                    "{what} {} ({}) is outside the storage directories",
                    path.display(),
                    real.display()
                ),
            )?;
        }
    }
    check_fs(what, path, fd_fs_type(f), policy)
}

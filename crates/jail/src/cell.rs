//! Inside the new namespaces: a root file system holding only what a VMM
//! needs, and the host's tree gone (pivot_root(2), as Firecracker's jailer
//! and `runc` do).
//!
//! The cell's root is a small private tmpfs (mode 0755, `nosuid`, 64 KiB)
//! mounted over [`MOUNT_POINT`] in this process's own mount namespace, so
//! the host never sees it and nothing is left behind when the VMM ends.
//! It holds `/dev/kvm` and `/dev/null` (bind mounts of the host's nodes)
//! and nothing else, and is remounted read-only.

use std::ffi::CString;
use std::io;
use std::path::Path;

use crate::check;

/// The empty directory the cell's root is mounted over (created if
/// missing; it stays empty on the host).
pub const MOUNT_POINT: &str = "/run/vt-cell";

/// Device nodes bind-mounted into the cell: `(path, required)`.
const DEVICES: [(&str, bool); 2] = [("/dev/kvm", true), ("/dev/null", false)];

/// Why the cell could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CellError {
    #[error("{0} is missing on the host; the cell needs it")]
    Missing(&'static str),
    #[error("cannot {0}")]
    Sys(String, #[source] io::Error),
    #[error(
        "the jail must be entered as root in new namespaces (run by vtd, or with --jail as root)"
    )]
    NotRoot,
}

fn c(path: &str) -> CString {
    // Paths here are our own constants and joins of them: no NUL.
    CString::new(path).unwrap_or_default()
}

fn mount(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), CellError> {
    let (src_c, target_c) = (src.map(c), c(target));
    let (type_c, data_c) = (fstype.map(c), data.map(c));
    let ptr = |o: &Option<CString>| o.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: NUL-terminated strings (or null) that outlive the call.
    let r = unsafe {
        libc::mount(
            ptr(&src_c),
            target_c.as_ptr(),
            ptr(&type_c),
            flags,
            ptr(&data_c).cast(),
        )
    };
    check(r.into())
        .map(drop)
        .map_err(|e| CellError::Sys(format!("mount {target}"), e))
}

/// Builds the cell and pivots into it; the process's cwd becomes `/`.
///
/// Must run as root, single-threaded, in a mount namespace of its own
/// (after [`crate::spawn`] with namespaces, or `unshare(CLONE_NEWNS)`).
/// Errors name the step; a missing `/dev/kvm` is [`CellError::Missing`].
pub fn enter() -> Result<(), CellError> {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(CellError::NotRoot);
    }
    for (dev, required) in DEVICES {
        if required && !Path::new(dev).exists() {
            return Err(CellError::Missing(dev));
        }
    }
    let sys = |what: &str| {
        let what = what.to_string();
        move |e| CellError::Sys(what, e)
    };
    // Nothing we mount from here on propagates back to the host.
    mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    std::fs::create_dir_all(MOUNT_POINT).map_err(sys("create the cell mount point"))?;
    let root = MOUNT_POINT;
    mount(
        Some("vt-cell"),
        root,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("size=64k,mode=0755"),
    )?;
    std::fs::create_dir(format!("{root}/dev")).map_err(sys("create /dev in the cell"))?;
    // Whatever umask we were started with: the VM's uid must reach /dev.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        format!("{root}/dev"),
        std::fs::Permissions::from_mode(0o755),
    )
    .map_err(sys("set the mode of /dev in the cell"))?;
    for (dev, _) in DEVICES {
        if !Path::new(dev).exists() {
            continue;
        }
        let inside = format!("{root}{dev}");
        std::fs::File::create(&inside).map_err(sys("create a device node's mount point"))?;
        mount(Some(dev), &inside, None, libc::MS_BIND, None)?;
    }
    let old = format!("{root}/old");
    std::fs::create_dir(&old).map_err(sys("create the old root's mount point"))?;
    let (new_c, old_c) = (c(root), c(&old));
    // SAFETY: two NUL-terminated paths valid for the call.
    let pivoted = unsafe { libc::syscall(libc::SYS_pivot_root, new_c.as_ptr(), old_c.as_ptr()) };
    if pivoted == 0 {
        std::env::set_current_dir("/").map_err(sys("chdir to the cell's root"))?;
        let old_c = c("/old");
        // SAFETY: a NUL-terminated path valid for the call.
        check(unsafe { libc::umount2(old_c.as_ptr(), libc::MNT_DETACH) }.into())
            .map_err(sys("unmount the host's tree"))?;
        std::fs::remove_dir("/old").map_err(sys("remove the old root's mount point"))?;
    } else {
        let e = crate::last_err();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(CellError::Sys("pivot_root into the cell".into(), e));
        }
        // The host runs from an initramfs (rootfs cannot be pivoted away):
        // move the cell over / and chroot into it, as switch_root(8) and
        // runc's no-pivot mode do. Without CAP_SYS_CHROOT and with no
        // directory descriptor from outside, the VMM cannot climb out.
        std::fs::remove_dir(&old).map_err(sys("remove the old root's mount point"))?;
        std::env::set_current_dir(root).map_err(sys("chdir to the cell"))?;
        mount(Some("."), "/", None, libc::MS_MOVE, None)?;
        let dot = c(".");
        // SAFETY: a NUL-terminated path valid for the call.
        check(unsafe { libc::chroot(dot.as_ptr()) }.into()).map_err(sys("chroot into the cell"))?;
        std::env::set_current_dir("/").map_err(sys("chdir to the cell's root"))?;
    }
    mount(
        None,
        "/",
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
        None,
    )?;
    Ok(())
}

/// Sets the cell's host name (its own uts namespace): `vt-NAME`, cut to
/// the kernel's 64 bytes.
pub fn set_hostname(name: &str) -> Result<(), CellError> {
    let h: Vec<u8> = format!("vt-{name}")
        .into_bytes()
        .into_iter()
        .take(64)
        .collect();
    // SAFETY: a buffer of h.len() bytes valid for the call.
    check(unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) }.into())
        .map(drop)
        .map_err(|e| CellError::Sys("set the host name".into(), e))
}

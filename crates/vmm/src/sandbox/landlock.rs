//! The Landlock ruleset: the VMM process reaches exactly its own files.
//!
//! Handled (so denied unless a rule grants it): every file-system access
//! right of the newest ABI this crate knows, TCP bind and connect (no rule:
//! none at all), UDP bind and send, and the scopes (abstract Unix sockets
//! and signals outside the process's own domain). Best effort: the kernel
//! enforces what its ABI has; [`LandlockState`] says how much.
//!
//! Granted (paths the VMM opens again when it rebuilds the VM on a guest
//! reboot):
//!
//! | path | rights |
//! |---|---|
//! | kernel, initrd | read |
//! | each disk | read, and write for a writable disk (raw images have no backing files) |
//! | `/dev/kvm` | read, write, device ioctls |
//! | `/dev/net/tun` (with NICs) | read, write, device ioctls |
//!
//! Not granted, because they are open before the restriction and kept as
//! fds: the serial file, stdio, the control socket (bound before). Paths
//! that do not exist, and directories, get no rule (opening them fails as
//! it would anyway; a rule on a directory would grant the whole tree).

use std::path::{Path, PathBuf};

use api::control::LandlockState;
use api::VmConfig;
use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd,
    PathFdError, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use super::Error;

/// The newest ABI whose rights this module was written and tested for.
const ABI_HANDLED: ABI = ABI::V9;

/// The files one VMM may open, with what access.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Opened read-only (kernel, initrd, read-only disks).
    pub read: Vec<PathBuf>,
    /// Opened read-write (writable disks).
    pub read_write: Vec<PathBuf>,
    /// Device nodes opened read-write and driven with ioctls.
    pub devices: Vec<PathBuf>,
}

impl Paths {
    /// The files of the VM `config` describes.
    pub fn of(config: &VmConfig) -> Self {
        let mut p = Paths::default();
        if !config.kernel.as_os_str().is_empty() {
            p.read.push(config.kernel.clone());
        }
        p.read.extend(config.firmware.iter().cloned());
        p.read.extend(config.initrd.iter().cloned());
        for d in &config.disks {
            if d.readonly {
                p.read.push(d.path.clone());
            } else {
                p.read_write.push(d.path.clone());
            }
            // A qcow2's backing files, read-only (none when passed in).
            if d.backing_paths.is_empty() && devices::files::passed_fd(&d.path).is_none() {
                p.read.extend(disk::backing_chain(&d.path));
            }
        }
        // Descriptors passed in (`/dev/fd/N`) are already open: no rule.
        let named =
            |v: &mut Vec<std::path::PathBuf>| v.retain(|p| devices::files::passed_fd(p).is_none());
        named(&mut p.read);
        named(&mut p.read_write);
        p.devices.push("/dev/kvm".into());
        if !config.nets.is_empty() {
            p.devices.push("/dev/net/tun".into());
        }
        p
    }
}

/// Restricts the calling thread (and the threads it starts from now on) to
/// `paths`. Returns the state and the kernel's Landlock ABI version.
pub fn restrict(paths: &Paths) -> Result<(LandlockState, u8), Error> {
    let abi = kernel_abi();
    let read: BitFlags<AccessFs> = AccessFs::ReadFile.into();
    let read_write = AccessFs::ReadFile | AccessFs::WriteFile;
    let device = read_write | AccessFs::IoctlDev;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(ABI_HANDLED))
        .map_err(Error::Landlock)?
        .handle_access(AccessNet::from_all(ABI_HANDLED))
        .map_err(Error::Landlock)?
        .scope(Scope::from_all(ABI_HANDLED))
        .map_err(Error::Landlock)?
        .create()
        .map_err(Error::Landlock)?;
    for (list, access) in [
        (&paths.read, read),
        (&paths.read_write, read_write),
        (&paths.devices, device),
    ] {
        for path in list {
            if let Some(fd) = path_fd(path)? {
                ruleset = ruleset
                    .add_rule(PathBeneath::new(fd, access))
                    .map_err(Error::Landlock)?;
            }
        }
    }
    let status = ruleset.restrict_self().map_err(Error::Landlock)?;
    let state = match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockState::Enforced,
        RulesetStatus::PartiallyEnforced => LandlockState::PartiallyEnforced,
        RulesetStatus::NotEnforced => LandlockState::Unsupported,
    };
    Ok((state, abi))
}

/// An `O_PATH` fd for a rule, or None when the path does not exist or is a
/// directory (a rule on a directory would grant its whole tree; opening it
/// fails as it would anyway).
fn path_fd(path: &Path) -> Result<Option<PathFd>, Error> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Ok(None);
    }
    match PathFd::new(path) {
        Ok(fd) => Ok(Some(fd)),
        Err(PathFdError::OpenCall { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(PathFdError::OpenCall { source, .. }) => {
            Err(Error::LandlockPath(path.display().to_string(), source))
        }
        Err(e) => Err(Error::LandlockPath(
            path.display().to_string(),
            std::io::Error::other(e.to_string()),
        )),
    }
}

/// The kernel's Landlock ABI version (0: none).
pub fn kernel_abi() -> u8 {
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and
    // LANDLOCK_CREATE_RULESET_VERSION only returns the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    u8::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_config() {
        let mut c: VmConfig = serde_json::from_str(r#"{"kernel": "/k", "initrd": "/i"}"#).unwrap();
        c.disks = vec![
            api::parse_disk("path=/rw").unwrap(),
            api::parse_disk("path=/ro,readonly=on").unwrap(),
        ];
        let p = Paths::of(&c);
        assert_eq!(p.read, [PathBuf::from("/k"), "/i".into(), "/ro".into()]);
        assert_eq!(p.read_write, [PathBuf::from("/rw")]);
        assert_eq!(p.devices, [PathBuf::from("/dev/kvm")]);
        c.nets = vec![api::parse_net("tap=t0").unwrap()];
        assert!(Paths::of(&c).devices.contains(&"/dev/net/tun".into()));
    }
}

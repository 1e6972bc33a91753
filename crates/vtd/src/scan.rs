//! Finding `vt-vmm` processes in `/proc` by the control socket they serve,
//! whatever `vtd` recorded: the check behind the invariant "every VMM
//! belongs to exactly one VM `vtd` knows, every VM has at most one VMM".
//!
//! A VMM names its VM's socket in its command line: `--id PATH` when
//! jailed (`vtd` passes the socket as a descriptor), `--api-socket PATH`
//! otherwise. Any local user can write such a command line (`exec -a
//! vt-vmm sleep ... --id PATH`), so a command line alone is never
//! believed: a process counts as a VMM only when its `/proc/PID/exe` is
//! the very file `vtd` runs as its VMM (same device and inode as the
//! `--vmm` binary) and its real uid is root or one of the VM uids
//! (`--vm-uid-base` and the [`jail::ids::RANGE`] above it). Anything
//! else is ignored: never adopted, never killed, never counted as "a VMM
//! still runs". A VMM whose binary was replaced on disk since it started
//! is therefore not recognised either (restart VMs after upgrading).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::process;

/// A live (not zombie) `vt-vmm` process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    /// Its real uid.
    pub uid: u32,
    /// The control socket it serves.
    pub socket: PathBuf,
    /// The uid it runs as in its cell (`--jail-uid`; until it has entered
    /// the cell it is still root).
    pub jail_uid: Option<u32>,
}

/// The socket a `vt-vmm` command line names, if it is one, and its
/// `--jail-uid`.
fn socket_of(cmdline: &[u8]) -> Option<(PathBuf, Option<u32>)> {
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_vmm = args
        .first()
        .is_some_and(|a| a.ends_with(b"vt-vmm") || a.ends_with(b"vt-vmm (deleted)"));
    if !is_vmm {
        return None;
    }
    // `--id` wins: a jailed VMM's `--api-socket` is a `/dev/fd/N`.
    let value = |flag: &[u8]| args.windows(2).find(|w| w[0] == flag).map(|w| w[1]);
    let sock = value(b"--id").or_else(|| value(b"--api-socket"))?;
    let jail_uid = value(b"--jail-uid")
        .and_then(|u| std::str::from_utf8(u).ok())
        .and_then(|u| u.parse().ok());
    Some((PathBuf::from(std::ffi::OsStr::from_bytes(sock)), jail_uid))
}

/// What a real VMM of this `vtd` is.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Device and inode of the `--vmm` binary.
    exe: (u64, u64),
    /// The VM uids (`None`: no jail, VMMs run as root).
    uids: Option<std::ops::Range<u32>>,
}

impl Expected {
    /// The VMM binary at `vmm` (stat'ed now) and the VM uids from `uid_base`.
    pub fn new(vmm: &Path, uid_base: Option<u32>) -> std::io::Result<Expected> {
        let m = std::fs::metadata(vmm)?;
        Ok(Expected {
            exe: (m.dev(), m.ino()),
            uids: uid_base.map(|b| b..b.saturating_add(jail::ids::RANGE)),
        })
    }

    /// Whether process `pid`, running as real uid `uid`, is a real VMM.
    fn believes(&self, pid: u32, uid: u32) -> bool {
        let exe = std::fs::metadata(format!("/proc/{pid}/exe")).ok();
        let uid_ok = uid == 0 || self.uids.as_ref().is_some_and(|r| r.contains(&uid));
        uid_ok && exe.is_some_and(|m| (m.dev(), m.ino()) == self.exe)
    }
}

static EXPECTED: OnceLock<Expected> = OnceLock::new();

/// Sets what a real VMM is, once per process (the daemon, at start).
/// Until set, no process is believed to be a VMM.
pub fn expect(e: Expected) {
    let _ = EXPECTED.set(e);
}

/// Whether live process `pid` runs the VMM binary as root or a VM uid.
pub fn runs_vmm(pid: u32) -> bool {
    EXPECTED
        .get()
        .is_some_and(|e| process::uid_of(pid).is_some_and(|u| e.believes(pid, u)))
}

/// Every live VMM serving a socket under `dir` (see the module doc for
/// what is believed).
pub fn vmms_under(dir: &Path) -> Vec<Found> {
    match EXPECTED.get() {
        Some(e) => vmms_under_as(dir, e),
        None => Vec::new(),
    }
}

fn vmms_under_as(dir: &Path, expected: &Expected) -> Vec<Found> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let Some((socket, jail_uid)) = socket_of(&cmdline).filter(|s| s.0.starts_with(dir)) else {
            continue;
        };
        // None for a zombie or a process gone meanwhile.
        if let Some(uid) = process::uid_of(pid).filter(|u| expected.believes(pid, *u)) {
            out.push(Found {
                pid,
                uid,
                socket,
                jail_uid,
            });
        }
    }
    out.sort_by_key(|f| f.pid);
    out
}

/// The live VMMs serving `socket`.
pub fn vmms_for(socket: &Path) -> Vec<Found> {
    let dir = socket.parent().unwrap_or(socket);
    vmms_under(dir)
        .into_iter()
        .filter(|f| f.socket == socket)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_from_command_lines() {
        let line = |args: &[&str]| args.join("\0").into_bytes();
        assert_eq!(
            socket_of(&line(&[
                "/x/vt-vmm",
                "--api-socket",
                "/dev/fd/9",
                "--id",
                "/s/a.sock",
                "--jail-uid",
                "7",
            ])),
            Some(("/s/a.sock".into(), Some(7)))
        );
        assert_eq!(
            socket_of(&line(&["vt-vmm", "--api-socket", "/s/b.sock"])),
            Some(("/s/b.sock".into(), None))
        );
        assert_eq!(socket_of(&line(&["/bin/sh", "--id", "/s/a.sock"])), None);
        assert_eq!(socket_of(&line(&["vt-vmm", "--kernel", "k"])), None);
    }

    /// A fake: any program with a VMM's command line (`exec -a`).
    fn fake(sock: &Path, uid: Option<u32>) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new("/bin/bash");
        c.arg0("/usr/libexec/vt-vmm")
            .args(["-c", "sleep 60; :", "--id"])
            .arg(sock)
            .args(["--jail-uid", "0"]);
        if let Some(u) = uid {
            c.uid(u).gid(u);
        }
        c.spawn().unwrap()
    }

    fn wait_found(dir: &Path, e: &Expected, want: usize) -> Vec<Found> {
        for _ in 0..100 {
            let f = vmms_under_as(dir, e);
            if f.len() >= want {
                return f;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        vmms_under_as(dir, e)
    }

    #[test]
    fn fake_vmms_are_not_believed() {
        let dir = std::env::temp_dir().join(format!("vt-scan-{}", std::process::id()));
        let sock = dir.join("vms/a/control.sock");
        // The configured VMM is another program: a fake is never found.
        let real = Expected::new(Path::new("/bin/sleep"), Some(900_000)).unwrap();
        let mut f = fake(&sock, None);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(vmms_under_as(&dir, &real).is_empty());
        // The same process is found when its binary is the VMM: the exe
        // check is what refuses it (and shows the scan sees it at all).
        let bash = Expected::new(Path::new("/bin/bash"), Some(900_000)).unwrap();
        let found = wait_found(&dir, &bash, 1);
        assert_eq!(found.iter().map(|f| f.pid).collect::<Vec<_>>(), [f.id()]);
        f.kill().unwrap();
        f.wait().unwrap();
        // The right binary run by a user outside the VM uids: not believed.
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let mut f = fake(&sock, Some(65_534));
            std::thread::sleep(std::time::Duration::from_millis(200));
            assert!(vmms_under_as(&dir, &bash).is_empty());
            let inside = Expected::new(Path::new("/bin/bash"), Some(65_000)).unwrap();
            assert_eq!(wait_found(&dir, &inside, 1).len(), 1);
            f.kill().unwrap();
            f.wait().unwrap();
        }
        // Ourselves: not a VMM.
        assert!(vmms_under_as(Path::new("/"), &bash)
            .iter()
            .all(|f| f.pid != std::process::id()));
    }
}

//! Finding `vt-vmm` processes in `/proc` by the control socket they serve,
//! whatever `vtd` recorded: the check behind the invariant "every VMM
//! belongs to exactly one VM `vtd` knows, every VM has at most one VMM".
//!
//! A VMM names its VM's socket in its command line: `--id PATH` when
//! jailed (`vtd` passes the socket as a descriptor), `--api-socket PATH`
//! otherwise. A jailed VMM cannot change its command line (that needs
//! `CAP_SYS_RESOURCE`); it could only lie about a VM by being started so.

use std::path::{Path, PathBuf};

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

/// Every live `vt-vmm` serving a socket under `dir`.
pub fn vmms_under(dir: &Path) -> Vec<Found> {
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
        if let Some(uid) = process::uid_of(pid) {
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
        // Ourselves: not a VMM.
        assert!(vmms_under(Path::new("/"))
            .iter()
            .all(|f| f.pid != std::process::id()));
    }
}

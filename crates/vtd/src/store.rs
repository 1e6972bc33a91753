//! The state directory: what survives `vtd` (and host) restarts.
//!
//! ```text
//! STATE/audit/                  the audit trail (crate `audit`)
//! STATE/audit.key               its sealing key (unless --audit-key)
//! STATE/watches.json            the admin's file watches
//! STATE/autostart.done          boot id of the last autostart run
//! STATE/vtd.lock                flock held by the running vtd
//! STATE/vms/NAME/definition.json  the VM definition (atomic rewrite)
//! STATE/vms/NAME/runtime.json     the running VMM: pid, start time (while it runs)
//! STATE/vms/NAME/last-exit.json   how the last run ended
//! STATE/vms/NAME/console.log      the serial console: vt-vmm writes it into a
//!                                 pipe, vt-logger (crate vt-log) writes this
//!                                 file from it, rotated (console.log.1 ... .K)
//! STATE/vms/NAME/vmm.log          vt-vmm's own stdout/stderr
//! STATE/vms/NAME/api.sock         the VMM's control socket
//! ```
//!
//! Every JSON file is written to a temporary name, fsynced, renamed over the
//! old one and the directory fsynced: a reader sees the old or the new
//! file, never half of one. A VM directory is made the same way: built as
//! `vms/.creating.NAME.*` with its definition inside, then renamed to
//! `vms/NAME` (never over an existing one). Temporaries a killed `vtd` left
//! behind are removed at the next start ([`clean_temporaries`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use api::manager::VmState;

/// Longest path a Unix socket address takes (sun_path less the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// What `vtd` keeps about a running VMM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    pub pid: u32,
    pub started_ms: u64,
    /// The VMM's own uid when it runs in a cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The cell's cgroup limits in force and the controllers missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<api::manager::Confinement>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    pub state: VmState,
    pub reason: String,
    pub time_ms: u64,
}

/// Paths of one VM's files.
#[derive(Debug, Clone)]
pub struct VmDir(pub PathBuf);

impl VmDir {
    pub fn definition(&self) -> PathBuf {
        self.0.join("definition.json")
    }
    pub fn runtime(&self) -> PathBuf {
        self.0.join("runtime.json")
    }
    pub fn last_exit(&self) -> PathBuf {
        self.0.join("last-exit.json")
    }
    pub fn console(&self) -> PathBuf {
        self.0.join("console.log")
    }
    pub fn vmm_log(&self) -> PathBuf {
        self.0.join("vmm.log")
    }
    pub fn socket(&self) -> PathBuf {
        self.0.join("api.sock")
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes `value` as JSON to `path` atomically and durably.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a JSON file; `Ok(None)` when it does not exist. A file that does
/// not parse is `InvalidData` with a message naming the file, the line and
/// column, and the parse error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// Prefix of a VM directory under construction.
pub const CREATING: &str = ".creating.";
/// Prefix of a VM directory being removed.
pub const DELETED: &str = ".deleted.";

/// Whether `name` is one of [`write_json`]'s temporaries.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp.")
}

/// Makes `vms/NAME` holding `definition.json` in one step: built under a
/// temporary name, then renamed into place. `AlreadyExists` when `vms/NAME`
/// exists (nothing is left behind then).
pub fn create_vm_dir<T: Serialize>(vms: &Path, name: &str, definition: &T) -> io::Result<VmDir> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = vms.join(format!(
        "{CREATING}{name}.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let target = vms.join(name);
    let result = (|| {
        fs::create_dir(&tmp)?;
        write_json(&VmDir(tmp.clone()).definition(), definition)?;
        rename_noreplace(&tmp, &target)?;
        File::open(vms)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result.map(|()| VmDir(target))
}

/// rename(2) that fails with `AlreadyExists` instead of replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths that live across the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes what a `vtd` killed halfway left in `vms`: VM directories
/// being created or removed, JSON temporaries inside VM directories, and
/// a VM directory with nothing else in it (an older `vtd` killed during
/// define). Best effort: what cannot be removed stays (a hidden name is
/// never loaded as a VM). Returns what it removed, for the log; errors
/// only when `vms` cannot be read.
pub fn clean_temporaries(vms: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(vms)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with(CREATING) || name.starts_with(DELETED) {
            if fs::remove_dir_all(&path).is_ok() {
                removed.push(path);
            }
            continue;
        }
        if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for inner in fs::read_dir(&path).into_iter().flatten().flatten() {
            if is_temporary(&inner.file_name().to_string_lossy()) && remove(&inner.path()).is_ok() {
                removed.push(inner.path());
            }
        }
        let empty = fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
        if empty && fs::remove_dir(&path).is_ok() {
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Removes a file, ignoring that it is already gone.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The last non-empty line of a log file (at most its last 4 KiB read).
pub fn last_line(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    String::from_utf8_lossy(&buf)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// Removes a VM's directory: renamed away first, so a crash halfway leaves
/// no half-deleted VM behind under its name.
pub fn remove_vm_dir(vms: &Path, name: &str) -> io::Result<()> {
    let trash = vms.join(format!("{DELETED}{name}.{}", now_ms()));
    fs::rename(vms.join(name), &trash)?;
    fs::remove_dir_all(&trash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_json_round_trip_and_last_line() {
        let d = std::env::temp_dir().join(format!("vtd-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let p = d.join("x.json");
        assert_eq!(read_json::<Runtime>(&p).unwrap(), None);
        let rt = Runtime {
            uid: None,
            confinement: None,
            pid: 7,
            started_ms: 1,
        };
        write_json(&p, &rt).unwrap();
        write_json(&p, &rt).unwrap();
        assert_eq!(read_json::<Runtime>(&p).unwrap(), Some(rt));
        // Only the file itself is left: no temporaries.
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        fs::write(&p, b"{\n \"pid\": 7,\n").unwrap();
        let e = read_json::<Runtime>(&p).unwrap_err().to_string();
        assert!(e.starts_with(&p.display().to_string()), "{e}");
        assert!(e.contains("line 3 column 0"), "{e}");
        let log = d.join("log");
        fs::write(&log, "a\nlast one\n\n").unwrap();
        assert_eq!(last_line(&log).as_deref(), Some("last one"));
        assert_eq!(last_line(&d.join("none")), None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn vm_directories_appear_whole_and_leftovers_are_cleaned() {
        let d = std::env::temp_dir().join(format!("vtd-store-dirs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let v = create_vm_dir(&d, "a", &7u32).unwrap();
        assert_eq!(read_json::<u32>(&v.definition()).unwrap(), Some(7));
        let again = create_vm_dir(&d, "a", &8u32).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(read_json::<u32>(&v.definition()).unwrap(), Some(7));
        // What a vtd killed at each step leaves, and an old wedged name.
        fs::create_dir(d.join(".creating.b.1.0")).unwrap();
        fs::create_dir(d.join(".deleted.c.5")).unwrap();
        fs::write(v.0.join(".runtime.json.tmp.1.2"), b"{").unwrap();
        fs::create_dir(d.join("wedged")).unwrap();
        fs::write(d.join("wedged/.definition.json.tmp.9.9"), b"").unwrap();
        let removed = clean_temporaries(&d).unwrap();
        assert_eq!(removed.len(), 5, "{removed:?}");
        let mut left: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a"]);
        assert_eq!(fs::read_dir(&v.0).unwrap().count(), 1);
        fs::remove_dir_all(&d).unwrap();
    }
}

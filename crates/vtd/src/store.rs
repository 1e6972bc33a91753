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
//! STATE/vms/NAME/console.log      the serial console (appended by vt-vmm)
//! STATE/vms/NAME/vmm.log          vt-vmm's own stdout/stderr
//! STATE/vms/NAME/api.sock         the VMM's control socket
//! ```
//!
//! Every JSON file is written to a temporary name, fsynced, renamed over the
//! old one and the directory fsynced: a reader sees the old or the new
//! file, never half of one.

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

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
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
    let trash = vms.join(format!(".deleted.{name}.{}", now_ms()));
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
        fs::write(&p, b"{").unwrap();
        assert!(read_json::<Runtime>(&p).is_err());
        let log = d.join("log");
        fs::write(&log, "a\nlast one\n\n").unwrap();
        assert_eq!(last_line(&log).as_deref(), Some("last one"));
        assert_eq!(last_line(&d.join("none")), None);
        fs::remove_dir_all(&d).unwrap();
    }
}

//! The anchor: the newest checkpoint's sequence number, kept in a file
//! beside the key (`KEY.seq`, mode 0600), outside the trail directory.
//! The `head` is rewritten with every record, so an earlier copy of it is
//! a valid seal of an earlier end: putting it back and cutting the newest
//! records is a rollback the trail alone cannot show. The anchor is
//! written after each checkpoint is fsynced (so a crash never leaves it
//! ahead of the records on disk); a trail that ends before it was rolled
//! back. It pins the end only against someone who cannot write beside the
//! key (put the key elsewhere with `vtd --audit-key`), and only up to the
//! last checkpoint (every 1000 records or minute).

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::verify::{Problem, Report};

/// The anchor file of the key at `key`: `KEY.seq`.
pub fn path_for(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".seq");
    PathBuf::from(s)
}

/// The sequence number in the anchor; `None` when there is none (or it
/// does not parse).
pub fn read(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Writes `seq` into the anchor (one small write, fsynced).
pub fn write(path: &Path, seq: u64) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{seq}\n").as_bytes())?;
    f.sync_data()
}

/// Why a trail ending at `last` (its newest record) is behind the anchor
/// `anchored`; `None` when it is not.
pub fn behind(anchored: u64, last: u64) -> Option<String> {
    (last < anchored).then(|| {
        format!(
            "rolled back: the anchor beside the key says checkpoint record {anchored} was written, but the trail ends at record {last}"
        )
    })
}

/// Adds to `report` (from [`crate::verify`]) a problem when the trail
/// ends before the anchor at `path`.
pub fn check(report: &mut Report, path: &Path) {
    let Some(n) = read(path) else { return };
    if let Some(what) = behind(n, report.last_seq.unwrap_or(0)) {
        report.ok = false;
        report.problems.push(Problem {
            file: "anchor".into(),
            line: 0,
            seq: Some(n),
            what,
        });
    }
}

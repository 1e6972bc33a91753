//! An initramfs assembled in memory as a tree of entries (host files are read
//! only when written) and written out as an uncompressed newc cpio archive.

use crate::cpio::CpioWriter;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("guest path {0:?} must be absolute, without '..' or '.'")]
    BadPath(String),
    #[error("guest path {0} is taken (by the lab's own files or another carried file)")]
    Taken(String),
    #[error("guest path {0} is used both as a directory and as a file")]
    Conflict(String),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
enum Entry {
    Dir,
    HostFile { host: PathBuf, perm: u32 },
    Data { bytes: Vec<u8>, perm: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// Guest path (without leading '/') → entry. Sorted, so parents come first.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

/// Checks a guest path and returns it without the leading '/'.
pub fn normalize(guest: &str) -> Result<String, InitramfsError> {
    let bad = || InitramfsError::BadPath(guest.to_string());
    let path = Path::new(guest);
    if !path.is_absolute() {
        return Err(bad());
    }
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(bad)?),
            _ => return Err(bad()),
        }
    }
    if parts.is_empty() {
        return Err(bad());
    }
    Ok(parts.join("/"))
}

impl Initramfs {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory (and its parents).
    pub fn dir(&mut self, guest: &str) -> Result<(), InitramfsError> {
        let name = normalize(guest)?;
        self.parents(&name)?;
        self.put(name, Entry::Dir)
    }

    /// A host file, copied in with `perm`, or with the host file's permissions.
    pub fn host_file(
        &mut self,
        guest: &str,
        host: &Path,
        perm: Option<u32>,
    ) -> Result<(), InitramfsError> {
        let meta = std::fs::metadata(host).map_err(|source| InitramfsError::Read {
            path: host.to_path_buf(),
            source,
        })?;
        use std::os::unix::fs::PermissionsExt;
        let perm = perm.unwrap_or(meta.permissions().mode() & 0o7777);
        let entry = Entry::HostFile {
            host: host.to_path_buf(),
            perm,
        };
        self.leaf(guest, entry)
    }

    /// A file with the given contents.
    pub fn data(&mut self, guest: &str, bytes: &[u8], perm: u32) -> Result<(), InitramfsError> {
        let entry = Entry::Data {
            bytes: bytes.to_vec(),
            perm,
        };
        self.leaf(guest, entry)
    }

    pub fn symlink(&mut self, guest: &str, target: &str) -> Result<(), InitramfsError> {
        self.leaf(guest, Entry::Symlink(target.to_string()))
    }

    pub fn char_dev(&mut self, guest: &str, major: u32, minor: u32) -> Result<(), InitramfsError> {
        self.leaf(guest, Entry::CharDev { major, minor })
    }

    /// Like [`Initramfs::host_file`], but refuses to replace an existing entry.
    pub fn new_host_file(
        &mut self,
        guest: &str,
        host: &Path,
        perm: Option<u32>,
    ) -> Result<(), InitramfsError> {
        if self.contains(guest) {
            return Err(InitramfsError::Taken(guest.to_string()));
        }
        self.host_file(guest, host, perm)
    }

    /// Whether something is already placed at `guest`.
    pub fn contains(&self, guest: &str) -> bool {
        normalize(guest).is_ok_and(|n| self.entries.contains_key(&n))
    }

    fn leaf(&mut self, guest: &str, entry: Entry) -> Result<(), InitramfsError> {
        let name = normalize(guest)?;
        self.parents(&name)?;
        self.put(name, entry)
    }

    fn parents(&mut self, name: &str) -> Result<(), InitramfsError> {
        let mut at = 0;
        while let Some(i) = name[at..].find('/') {
            let parent = &name[..at + i];
            self.put(parent.to_string(), Entry::Dir)?;
            at += i + 1;
        }
        Ok(())
    }

    fn put(&mut self, name: String, entry: Entry) -> Result<(), InitramfsError> {
        let prefix = format!("{name}/");
        let has_children = self
            .entries
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix));
        match (self.entries.get(&name), &entry) {
            (Some(Entry::Dir), Entry::Dir) => return Ok(()),
            (Some(Entry::Dir), _) | (Some(_), Entry::Dir) => {
                return Err(InitramfsError::Conflict(format!("/{name}")))
            }
            (None, e) if has_children && !matches!(e, Entry::Dir) => {
                return Err(InitramfsError::Conflict(format!("/{name}")))
            }
            _ => {}
        }
        self.entries.insert(name, entry);
        Ok(())
    }

    /// Writes the archive to `path`; returns its size in bytes.
    pub fn write(&self, path: &Path) -> Result<u64, InitramfsError> {
        let werr = |source| InitramfsError::Write {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(werr)?;
        let mut w = CpioWriter::new(BufWriter::new(file));
        for (name, entry) in &self.entries {
            match entry {
                Entry::Dir => w.dir(name, 0o755).map_err(werr)?,
                Entry::Data { bytes, perm } => w.file(name, *perm, bytes).map_err(werr)?,
                Entry::Symlink(target) => w.symlink(name, target).map_err(werr)?,
                Entry::CharDev { major, minor } => {
                    w.char_dev(name, 0o600, *major, *minor).map_err(werr)?
                }
                Entry::HostFile { host, perm } => {
                    let rerr = |source| InitramfsError::Read {
                        path: host.clone(),
                        source,
                    };
                    let mut f = File::open(host).map_err(rerr)?;
                    let size = f.metadata().map_err(rerr)?.len();
                    w.file_from(name, *perm, size, &mut f).map_err(werr)?;
                }
            }
        }
        let out = w.finish().map_err(werr)?;
        let file = out.into_inner().map_err(|e| werr(e.into_error()))?;
        Ok(file.metadata().map_err(werr)?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("/a/b").unwrap(), "a/b");
        assert_eq!(normalize("//a//b/").unwrap(), "a/b");
        assert!(normalize("a/b").is_err());
        assert!(normalize("/a/../b").is_err());
        assert!(normalize("/").is_err());
    }

    #[test]
    fn adds_parents_and_detects_conflicts() {
        let mut i = Initramfs::new();
        i.data("/x/y/z", b"1", 0o644).unwrap();
        assert!(i.contains("/x"));
        assert!(i.contains("/x/y"));
        assert!(i.data("/x/y", b"2", 0o644).is_err());
        assert!(i.data("/x/y/z/w", b"2", 0o644).is_err());
        i.data("/x/y/z", b"replaced", 0o644).unwrap();
        i.dir("/x/y").unwrap();
    }
}

//! Appending to the trail: one `write(2)` per record on an `O_APPEND`
//! file, a sealed checkpoint every [`Config::checkpoint_every`] records
//! or [`Config::checkpoint_interval`], the sealed head rewritten in place
//! after every record, and rotation by size.
//!
//! Rotation: when the current file would pass [`Config::max_file_bytes`]
//! a checkpoint closes it and the next file's first record links to its
//! last one. When more than [`Config::max_files`] files remain, the oldest
//! go, and a `audit.rotate` record (with [`Expired`]) says so: `verify`
//! accepts the missing files only because of it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::files::{self, Lines};
use crate::record::{decode, unhex, Entry, Expired, Outcome, Record, GENESIS};
use crate::seal::Key;

/// Bytes of the `head` file (JSON, space-padded, a newline last).
pub const HEAD_BYTES: usize = 256;

/// Where and how the trail is kept.
#[derive(Debug, Clone)]
pub struct Config {
    /// The trail directory (made with mode 0700).
    pub dir: PathBuf,
    /// The sealing key (kept outside `dir`).
    pub key: Key,
    /// A file is closed and the next one begun past this size.
    pub max_file_bytes: u64,
    /// Files kept (at least 2); older ones are removed.
    pub max_files: usize,
    /// A checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or when this much time has passed since the last one.
    pub checkpoint_interval: Duration,
    /// The anchor file ([`crate::anchor`]), if any.
    pub anchor: Option<PathBuf>,
}

impl Config {
    /// 8 MiB files, 16 kept (128 MiB), a checkpoint every 1000 records
    /// or minute.
    pub fn new(dir: PathBuf, key: Key) -> Config {
        Config {
            dir,
            key,
            max_file_bytes: 8 << 20,
            max_files: 16,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            anchor: None,
        }
    }
}

/// The `head` file: the newest record, sealed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    pub seal: String,
}

impl Head {
    /// Reads `DIR/head`; `None` when there is none or it does not parse.
    pub fn read(dir: &Path) -> Option<Head> {
        let bytes = std::fs::read(dir.join("head")).ok()?;
        serde_json::from_slice(bytes.trim_ascii()).ok()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An open trail, appending.
pub struct Trail {
    cfg: Config,
    file: File,
    file_no: u64,
    file_len: u64,
    seq: u64,
    last: String,
    head: File,
    since_checkpoint: u64,
    last_checkpoint: Instant,
}

/// The newest good record of file `path`: (seq, hash), and whether the
/// file ends in a damaged line.
fn tail_of(path: &Path) -> io::Result<(Option<(u64, String)>, bool)> {
    let mut last = None;
    let mut damaged = false;
    for line in Lines::open(path)? {
        let line = line?;
        match decode(&line.bytes) {
            Ok((r, h)) if line.complete => {
                last = Some((r.seq, h));
                damaged = false;
            }
            _ => damaged = true,
        }
    }
    Ok((last, damaged))
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

impl Trail {
    /// Opens the trail in `cfg.dir` (making it), continuing its chain, and
    /// records `audit.open`. What looks wrong at the end (a cut-off last
    /// line, a head that names a record the files no longer have) is
    /// written into the trail as a failed `audit.open` before anything
    /// else, so rewriting the head cannot hide it.
    pub fn open(cfg: Config) -> io::Result<Trail> {
        std::fs::create_dir_all(&cfg.dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.dir, std::fs::Permissions::from_mode(0o700))?;
        let existing = files::list(&cfg.dir)?;
        let mut problems = Vec::new();
        let (file_no, seq, last) = match existing.last() {
            None => (1, 0, GENESIS.to_string()),
            Some((n, path)) => {
                let (tail, damaged) = tail_of(path)?;
                // An empty newest file (rotation cut short): its
                // predecessor holds the chain's end.
                let tail = match (tail, existing.len()) {
                    (Some(t), _) => Some(t),
                    (None, l) if l >= 2 => tail_of(&existing[l - 2].1)?.0,
                    (None, _) => None,
                };
                let (seq, last) = tail.unwrap_or((0, GENESIS.to_string()));
                if damaged {
                    problems.push(format!(
                        "{} ends in a damaged record (cut off by a crash, or edited); continuing after record {seq} in a new file",
                        files::name(*n)
                    ));
                }
                // After damage, start afresh rather than after it.
                (if damaged { n + 1 } else { *n }, seq, last)
            }
        };
        if let Some(why) = cfg
            .anchor
            .as_deref()
            .and_then(crate::anchor::read)
            .and_then(|n| crate::anchor::behind(n, seq))
        {
            problems.push(why);
        }
        if let Some(h) = Head::read(&cfg.dir) {
            if h.seq != seq || h.hash != last {
                problems.push(format!(
                    "the head named record {} ({}) but the trail ends at record {seq}: records were removed or added while the trail was closed (or vtd died between a record and the head)",
                    h.seq,
                    &h.hash.get(..12).unwrap_or("?")
                ));
            }
        } else if seq > 0 {
            problems.push("the head file is missing or unreadable".to_string());
        }
        let path = cfg.dir.join(files::name(file_no));
        let file = open_append(&path)?;
        let file_len = file.metadata()?.len();
        let head = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(cfg.dir.join("head"))?;
        let mut t = Trail {
            cfg,
            file,
            file_no,
            file_len,
            seq,
            last,
            head,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
        };
        for p in problems {
            t.append(Entry::new("audit.open", Outcome::Failed, p))?;
        }
        let me = Entry {
            pid: Some(std::process::id() as i32),
            ..Entry::new("audit.open", Outcome::Ok, "trail opened")
        };
        t.append(me)?;
        Ok(t)
    }

    /// The trail directory.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// The key that seals it.
    pub fn key(&self) -> &Key {
        &self.cfg.key
    }

    /// The newest record's sequence number.
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// Appends one record; returns its sequence number. A checkpoint
    /// follows when one is due.
    pub fn append(&mut self, entry: Entry) -> io::Result<u64> {
        let seq = self.write(entry, None, None)?;
        self.since_checkpoint += 1;
        if self.since_checkpoint >= self.cfg.checkpoint_every
            || self.last_checkpoint.elapsed() >= self.cfg.checkpoint_interval
        {
            self.checkpoint()?;
        }
        Ok(seq)
    }

    /// Writes a sealed checkpoint now (also fsyncs the file).
    pub fn checkpoint(&mut self) -> io::Result<()> {
        let prev = unhex(&self.last).unwrap_or([0; 32]);
        let seal = self.cfg.key.checkpoint(self.next_seq()?, &prev);
        let e = Entry::new(
            "audit.checkpoint",
            Outcome::Ok,
            format!("seals records 1-{}", self.seq),
        );
        self.write(e, Some(seal), None)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.file.sync_data()?;
        if let Some(a) = &self.cfg.anchor {
            if let Err(e) = crate::anchor::write(a, self.seq) {
                eprintln!("audit: anchor {}: {e}", a.display());
            }
        }
        Ok(())
    }

    fn write(
        &mut self,
        entry: Entry,
        seal: Option<String>,
        expired: Option<Expired>,
    ) -> io::Result<u64> {
        let is_checkpoint = seal.is_some();
        let mut record = Record {
            seq: self.next_seq()?,
            time_ms: now_ms(),
            entry,
            seal,
            expired,
            prev: self.last.clone(),
        };
        let (mut line, _) = record.encode();
        let full =
            self.file_len > 0 && self.file_len + line.len() as u64 + 1 > self.cfg.max_file_bytes;
        if full && !is_checkpoint && record.expired.is_none() {
            self.rotate()?;
            record.seq = self.next_seq()?;
            record.prev = self.last.clone();
            line = record.encode().0;
        }
        let (_, hash) = record.encode();
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file_len += line.len() as u64;
        self.seq = record.seq;
        self.last = hash;
        self.write_head()?;
        Ok(self.seq)
    }

    fn next_seq(&self) -> io::Result<u64> {
        self.seq.checked_add(1).ok_or_else(|| {
            io::Error::other("the trail's record numbers are used up (a forged record?)")
        })
    }

    fn write_head(&mut self) -> io::Result<()> {
        let hash = unhex(&self.last).unwrap_or([0; 32]);
        let head = Head {
            seq: self.seq,
            hash: self.last.clone(),
            seal: self.cfg.key.head(self.seq, &hash),
        };
        let mut text = serde_json::to_string(&head).unwrap_or_default();
        while text.len() < HEAD_BYTES - 1 {
            text.push(' ');
        }
        text.push('\n');
        self.head.write_all_at(text.as_bytes(), 0)
    }

    /// Closes the current file with a checkpoint, begins the next, and
    /// removes the oldest files beyond `max_files`.
    fn rotate(&mut self) -> io::Result<()> {
        if self.file_no >= files::MAX_FILE {
            return Err(io::Error::other("the trail's file numbers are used up"));
        }
        self.checkpoint()?;
        self.file_no += 1;
        self.file = open_append(&self.cfg.dir.join(files::name(self.file_no)))?;
        self.file_len = 0;
        let all = files::list(&self.cfg.dir)?;
        let keep = self.cfg.max_files.max(2);
        if all.len() <= keep {
            return Ok(());
        }
        let doomed = &all[..all.len() - keep];
        let Some((newest_doomed, _)) = doomed.last() else {
            return Ok(());
        };
        // The last hash of the newest removed file is the first `prev` of
        // the file after it.
        let next = &all[all.len() - keep].1;
        let last_hash = Lines::open(next)?
            .next()
            .and_then(Result::ok)
            .and_then(|l| decode(&l.bytes).ok())
            .map_or_else(String::new, |(r, _)| r.prev);
        let names: Vec<String> = doomed.iter().map(|(n, _)| files::name(*n)).collect();
        for (_, p) in doomed {
            std::fs::remove_file(p)?;
        }
        let e = Entry::new(
            "audit.rotate",
            Outcome::Ok,
            format!("removed {} (keeping {keep} files)", names.join(", ")),
        );
        let expired = Expired {
            file: *newest_doomed,
            last_hash,
        };
        self.write(e, None, Some(expired))?;
        Ok(())
    }
}

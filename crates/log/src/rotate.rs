//! A log file capped at a size and rotated like virtlogd's: when the next
//! line would take `NAME` past `max_bytes`, `NAME.K-1` becomes `NAME.K`
//! (the oldest, `NAME.K`, is dropped), ..., `NAME` becomes `NAME.1`, and
//! a new `NAME` begins. Rotation happens only between lines, so no line is
//! split across files; a line without a newline is written at once (a
//! console's prompt must show) and the file rotates after it ends: so a
//! file may pass `max_bytes` by the rest of the line being written when
//! it reached it. Only a line longer than `max_bytes` on its own is cut
//! (at `max_bytes`), so no file ever holds more than twice `max_bytes`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How big a log gets and how many old ones are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes in one file before it rotates (at least 1).
    pub max_bytes: u64,
    /// Rotated files kept besides the current one (`NAME.1` ... `NAME.K`).
    pub files: u32,
}

/// An open, rotating log.
pub struct RotatingFile {
    path: PathBuf,
    limits: Limits,
    file: File,
    size: u64,
    /// The file ends with a newline (or is empty): a rotation point.
    at_line_start: bool,
    /// Bytes of the line now being written (for the cut of a huge line).
    line_len: u64,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// `NAME.n`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

impl RotatingFile {
    /// Opens (appending) or creates `path`.
    pub fn open(path: &Path, limits: Limits) -> io::Result<Self> {
        let file = open(path)?;
        let size = file.metadata()?.len();
        let at_line_start = size == 0 || last_byte(path)? == Some(b'\n');
        Ok(RotatingFile {
            path: path.to_path_buf(),
            limits: Limits {
                max_bytes: limits.max_bytes.max(1),
                files: limits.files,
            },
            file,
            size,
            at_line_start,
            line_len: 0,
        })
    }

    /// Shifts the files and starts a new `NAME`.
    fn rotate(&mut self) -> io::Result<()> {
        let k = self.limits.files;
        if k == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..k).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = open(&self.path)?;
        self.size = 0;
        self.at_line_start = true;
        Ok(())
    }

    /// Writes one piece: a whole line (with its newline) or a line's part.
    fn piece(&mut self, p: &[u8]) -> io::Result<()> {
        let max = self.limits.max_bytes;
        let full = self.size > 0 && self.size + p.len() as u64 > max;
        let huge = self.line_len >= max;
        if (full && self.at_line_start) || (huge && self.size >= 2 * max) {
            self.rotate()?;
        }
        self.file.write_all(p)?;
        self.size += p.len() as u64;
        self.at_line_start = p.last() == Some(&b'\n');
        self.line_len = if self.at_line_start {
            0
        } else {
            self.line_len + p.len() as u64
        };
        Ok(())
    }

    /// Appends `data`, rotating between lines as needed.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let max = usize::try_from(self.limits.max_bytes).unwrap_or(usize::MAX);
        for line in data.split_inclusive(|b| *b == b'\n') {
            // A line longer than a file is cut into file-sized parts.
            for part in line.chunks(max) {
                self.piece(part)?;
            }
        }
        Ok(())
    }
}

fn last_byte(path: &Path) -> io::Result<Option<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    if f.seek(SeekFrom::End(0))? == 0 {
        return Ok(None);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    Ok(Some(b[0]))
}

/// Reads `input` until its end into a [`RotatingFile`] at `path` (the
/// `vt-logger` helper's loop). Errors: the file cannot be written.
pub fn copy_until_eof(mut input: impl io::Read, path: &Path, limits: Limits) -> io::Result<()> {
    let mut out = RotatingFile::open(path, limits)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vt-rotate-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Oldest first: NAME.K ... NAME.1, NAME.
    fn all(path: &Path, k: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for n in (1..=k).rev() {
            if let Ok(b) = std::fs::read(rotated(path, n)) {
                out.push(b);
            }
        }
        out.push(std::fs::read(path).unwrap());
        out
    }

    /// Lines of varied lengths, numbered, written in odd-sized chunks.
    fn lines(count: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..count {
            v.extend(format!("line {i} {}\n", "x".repeat(i * 7 % 90)).as_bytes());
        }
        v
    }

    #[test]
    fn keeps_the_newest_whole_lines_within_the_cap() {
        let d = dir("cap");
        let path = d.join("console.log");
        let limits = Limits {
            max_bytes: 1000,
            files: 3,
        };
        let input = lines(400);
        let mut f = RotatingFile::open(&path, limits).unwrap();
        for chunk in input.chunks(37) {
            f.write(chunk).unwrap();
        }
        let files = all(&path, 5);
        assert_eq!(files.len(), 4, "three rotated files and the current one");
        assert!(!rotated(&path, 4).exists(), "the oldest is dropped");
        for f in &files {
            // At most the cap plus the rest of one line (lines < 100 bytes).
            assert!(f.len() <= 1100, "{}", f.len());
            assert!(f.starts_with(b"line "), "no file starts mid-line");
            assert_eq!(f.last(), Some(&b'\n'), "no file ends mid-line");
        }
        // Together they are the newest part of the input, lost nothing
        // after their first line, and the first rotated file was full.
        let kept: Vec<u8> = files.concat();
        assert!(input.ends_with(&kept));
        assert!(kept.len() > 3000);
    }

    #[test]
    fn nothing_is_lost_below_the_cap_and_a_reopen_appends() {
        let d = dir("all");
        let path = d.join("console.log");
        let limits = Limits {
            max_bytes: 4096,
            files: 4,
        };
        let input = lines(150);
        let (a, b) = input.split_at(input.len() / 2);
        // A partial line at the split: it continues after the reopen.
        RotatingFile::open(&path, limits).unwrap().write(a).unwrap();
        RotatingFile::open(&path, limits).unwrap().write(b).unwrap();
        assert_eq!(all(&path, 4).concat(), input);
    }

    #[test]
    fn a_partial_line_is_written_at_once_and_rotation_waits_for_its_end() {
        let d = dir("partial");
        let path = d.join("console.log");
        let limits = Limits {
            max_bytes: 10,
            files: 1,
        };
        let mut f = RotatingFile::open(&path, limits).unwrap();
        f.write(b"12345678\nlogin: ").unwrap();
        // The prompt is in the file now; the file rotated before it.
        assert_eq!(std::fs::read(&path).unwrap(), b"login: ");
        assert_eq!(std::fs::read(rotated(&path, 1)).unwrap(), b"12345678\n");
        f.write(b"root\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"login: root\n");
    }

    #[test]
    fn a_huge_line_is_cut_into_capped_files() {
        let d = dir("huge");
        let path = d.join("console.log");
        let limits = Limits {
            max_bytes: 100,
            files: 2,
        };
        let mut f = RotatingFile::open(&path, limits).unwrap();
        f.write(&[b'a'; 1000]).unwrap();
        for b in all(&path, 2) {
            assert!(b.len() <= 200, "{}", b.len());
        }
    }
}

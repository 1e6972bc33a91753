//! The trail's files: `DIR/trail-NNNNNN.log` (numbered from 1, oldest
//! first) and `DIR/head`, and reading their lines with a bound on length
//! (a garbage file must not make a reader hold gigabytes).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Longest line read whole; longer ones are reported, not parsed.
pub const MAX_LINE: usize = 1 << 20;

/// The name of trail file `n`.
pub fn name(n: u64) -> String {
    format!("trail-{n:06}.log")
}

/// Highest file number (files are numbered from 1).
pub const MAX_FILE: u64 = 999_999_999_999;

/// The number in a trail file's name (1 to [`MAX_FILE`]).
pub fn number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("trail-")?.strip_suffix(".log")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| (1..=MAX_FILE).contains(n))
}

/// The trail files in `dir`, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(n) = e.file_name().to_str().and_then(number) {
            out.push((n, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// One line of a file.
#[derive(Debug)]
pub struct Line {
    /// 1-based.
    pub number: u64,
    /// Without the newline; empty when the line was too long.
    pub bytes: Vec<u8>,
    /// Ended with a newline (false: the file's last, cut-off line).
    pub complete: bool,
    /// Longer than [`MAX_LINE`] (its bytes are dropped).
    pub too_long: bool,
}

/// Reads `file` line by line.
pub struct Lines {
    reader: BufReader<File>,
    number: u64,
}

impl Lines {
    pub fn open(path: &Path) -> io::Result<Lines> {
        Ok(Lines {
            reader: BufReader::new(File::open(path)?),
            number: 0,
        })
    }
}

/// Discards the rest of a line; whether it ended with a newline.
fn skip_line(r: &mut BufReader<File>) -> io::Result<bool> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
            r.consume(i + 1);
            return Ok(true);
        }
        let n = buf.len();
        r.consume(n);
    }
}

impl Iterator for Lines {
    type Item = io::Result<Line>;

    fn next(&mut self) -> Option<io::Result<Line>> {
        let mut buf = Vec::new();
        let limit = MAX_LINE as u64 + 1;
        match (&mut self.reader).take(limit).read_until(b'\n', &mut buf) {
            Err(e) => return Some(Err(e)),
            Ok(0) => return None,
            Ok(_) => {}
        }
        self.number += 1;
        let mut complete = buf.last() == Some(&b'\n');
        let too_long = !complete && buf.len() > MAX_LINE;
        if too_long {
            buf.clear();
            complete = match skip_line(&mut self.reader) {
                Ok(ended) => ended,
                Err(e) => return Some(Err(e)),
            };
        } else if complete {
            buf.pop();
        }
        Some(Ok(Line {
            number: self.number,
            bytes: buf,
            complete,
            too_long,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(name(7), "trail-000007.log");
        assert_eq!(number("trail-000007.log"), Some(7));
        assert_eq!(number("trail-1234567.log"), Some(1234567));
        assert_eq!(number("trail-.log"), None);
        assert_eq!(number("trail-000000.log"), None);
        assert_eq!(number("trail-18446744073709551615.log"), None);
        assert_eq!(number("trail-1.log.bak"), None);
        assert_eq!(number("head"), None);
    }

    #[test]
    fn lines_are_bounded_and_cut_lines_marked() {
        let dir = std::env::temp_dir().join(format!("audit-lines-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        let mut data = b"a\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        data.extend(b"\nb\ncut");
        std::fs::write(&p, &data).unwrap();
        let lines: Vec<Line> = Lines::open(&p).unwrap().map(Result::unwrap).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            (lines[0].bytes.as_slice(), lines[0].complete),
            (&b"a"[..], true)
        );
        assert!(lines[1].too_long && lines[1].complete && lines[1].bytes.is_empty());
        assert_eq!(lines[2].bytes, b"b");
        assert_eq!(lines[2].number, 3);
        assert_eq!(
            (lines[3].bytes.as_slice(), lines[3].complete),
            (&b"cut"[..], false)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Checking a trail: every record's own hash, the chain of `prev` links,
//! consecutive sequence numbers, the files' continuity (a gap is a removed
//! file unless a rotation record says it was expired), checkpoint seals and
//! the sealed head (a cut-off end). Each problem names the file, the line
//! and the record number.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::files::{self, Lines};
use crate::record::{decode, unhex, LineError, Record, GENESIS};
use crate::seal::{same, Key};
use crate::trail::Head;

/// One thing wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The trail file (`trail-000003.log`), or `head`.
    pub file: String,
    /// 1-based line in that file; 0 for the file as a whole.
    pub line: u64,
    /// The record's sequence number, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, " line {}", self.line)?;
        }
        if let Some(s) = self.seq {
            write!(f, " (record {s})")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// No problem found.
    pub ok: bool,
    /// Trail files read.
    pub files: usize,
    /// Good records read.
    pub records: u64,
    /// The first and last record numbers seen.
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Checkpoints with a valid seal (0 when no key was given).
    pub checkpoints: u64,
    /// Every record up to this one is covered by a valid seal.
    pub sealed_through: Option<u64>,
    /// Whether seals were checked (a key was given).
    pub seals_checked: bool,
    /// What is wrong (at most [`MAX_PROBLEMS`]).
    pub problems: Vec<Problem>,
    /// Problems beyond [`MAX_PROBLEMS`], not listed.
    pub more_problems: u64,
}

/// Problems listed in a report.
pub const MAX_PROBLEMS: usize = 100;

impl Report {
    fn problem(&mut self, file: &str, line: u64, seq: Option<u64>, what: impl Into<String>) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem {
                file: file.to_string(),
                line,
                seq,
                what: what.into(),
            });
        } else {
            self.more_problems += 1;
        }
    }
}

/// The `seq` of a line whose hash is wrong, if its fields still parse.
fn peek_seq(bytes: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("seq")?.as_u64()
}

/// State carried from record to record.
#[derive(Default)]
struct Chain {
    /// The next record's expected number and `prev` (None: unknown, after
    /// a record that could not be read).
    seq: Option<u64>,
    prev: Option<String>,
    /// The newest rotation record: files up to `.0` expired, the last
    /// hash in them `.1`.
    expired: Option<(u64, String)>,
    /// The first file read: its number and its first record's `prev`.
    first: Option<(u64, Option<String>)>,
    head_hash: Option<String>,
}

/// Verifies the trail in `dir`; with `key`, checks the seals too.
/// Errors only when the directory cannot be read; everything wrong with
/// the files is a [`Problem`] in the report.
pub fn verify(dir: &Path, key: Option<&Key>) -> io::Result<Report> {
    let mut report = Report {
        seals_checked: key.is_some(),
        ..Report::default()
    };
    let head = Head::read(dir);
    let list = files::list(dir)?;
    if list.is_empty() {
        report.problem("", 0, None, "no trail files (trail-NNNNNN.log) here");
    }
    let mut chain = Chain::default();
    let mut prev_no: Option<u64> = None;
    for (no, path) in &list {
        let name = files::name(*no);
        report.files += 1;
        if let Some(p) = prev_no.filter(|p| p + 1 != *no) {
            report.problem(
                &name,
                0,
                chain.seq,
                format!(
                    "{} missing: removed (files are numbered without gaps)",
                    if p + 2 == *no {
                        files::name(p + 1)
                    } else {
                        format!("{} to {}", files::name(p + 1), files::name(no - 1))
                    }
                ),
            );
            chain.prev = None;
        }
        prev_no = Some(*no);
        let mut first_in_file = true;
        let lines = match Lines::open(path) {
            Ok(l) => l,
            Err(e) => {
                report.problem(&name, 0, None, format!("cannot read: {e}"));
                continue;
            }
        };
        for line in lines {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    report.problem(&name, 0, None, format!("read error: {e}"));
                    break;
                }
            };
            check_line(&mut report, &mut chain, key, &name, &line, head.as_ref());
            if first_in_file && chain.first.is_none() {
                chain.first = Some((*no, decode(&line.bytes).ok().map(|(r, _)| r.prev)));
            }
            first_in_file = false;
        }
    }
    check_start(&mut report, &chain);
    check_head(&mut report, &chain, head.as_ref(), key);
    report.ok = report.problems.is_empty() && report.more_problems == 0;
    Ok(report)
}

fn check_line(
    report: &mut Report,
    chain: &mut Chain,
    key: Option<&Key>,
    name: &str,
    line: &files::Line,
    head: Option<&Head>,
) {
    let n = line.number;
    if line.too_long {
        report.problem(
            name,
            n,
            None,
            "not a record: line too long (inserted garbage)",
        );
        chain.prev = None;
        return;
    }
    let (record, hash) = match decode(&line.bytes) {
        Ok(x) => x,
        Err(e) => {
            let seq = peek_seq(&line.bytes);
            let what = match (e, line.complete) {
                (_, false) => "cut off: the file ends inside this record (truncated)".to_string(),
                (LineError::BadHash, _) => {
                    "edited: the record's hash does not match its contents".to_string()
                }
                (LineError::NoHash, _) => "not a record (no hash): inserted or damaged".into(),
                (LineError::BadJson(j), _) => format!("not a record ({j}): inserted or damaged"),
            };
            report.problem(name, n, seq, what);
            chain.prev = None;
            // Unknown number (a cut-off record, garbage): do not guess.
            chain.seq = seq.map(|s| s.saturating_add(1));
            return;
        }
    };
    let seq = record.seq;
    if !line.complete {
        report.problem(
            name,
            n,
            Some(seq),
            "cut off: no newline after the record (truncated)",
        );
    }
    match chain.seq {
        Some(want) if seq > want => report.problem(
            name,
            n,
            Some(seq),
            if seq == want.saturating_add(1) {
                format!("record {want} missing before this one (deleted)")
            } else {
                format!(
                    "records {want}-{} missing before this one (deleted)",
                    seq - 1
                )
            },
        ),
        Some(want) if seq < want => report.problem(
            name,
            n,
            Some(seq),
            format!(
                "out of order: record {seq} comes after record {} (reordered or inserted)",
                want - 1
            ),
        ),
        Some(_) => {
            if let Some(p) = chain.prev.as_ref().filter(|p| **p != record.prev) {
                let _ = p;
                report.problem(
                    name,
                    n,
                    Some(seq),
                    "chain broken: its prev is not the hash of the record before (replaced or inserted)",
                );
            }
        }
        None => {}
    }
    if let Some(seal) = &record.seal {
        check_seal(report, key, name, n, &record, seal);
    }
    if let Some(x) = &record.expired {
        chain.expired = Some((x.file, x.last_hash.clone()));
    }
    if head.is_some_and(|h| h.seq == seq) {
        chain.head_hash = Some(hash.clone());
    }
    report.records += 1;
    report.first_seq.get_or_insert(seq);
    report.last_seq = Some(seq);
    chain.seq = Some(seq.saturating_add(1));
    chain.prev = Some(hash);
}

fn check_seal(
    report: &mut Report,
    key: Option<&Key>,
    name: &str,
    n: u64,
    record: &Record,
    seal: &str,
) {
    let Some(key) = key else { return };
    let prev = unhex(&record.prev).unwrap_or([0; 32]);
    if same(seal, &key.checkpoint(record.seq, &prev)) {
        report.checkpoints += 1;
        // Only a seal over an unbroken chain covers what is before it.
        if report.problems.is_empty() {
            report.sealed_through = Some(record.seq);
        }
    } else {
        report.problem(
            name,
            n,
            Some(record.seq),
            "checkpoint seal is wrong: the records before it were rewritten (or another key)",
        );
    }
}

/// The oldest file must start the trail, or follow files a rotation
/// record expired.
fn check_start(report: &mut Report, chain: &Chain) {
    let Some((no, first_prev)) = &chain.first else {
        return;
    };
    let name = files::name(*no);
    let Some(first_prev) = first_prev else {
        return; // Its first line is already reported.
    };
    match &chain.expired {
        None if *no == 1 => {
            if first_prev != GENESIS {
                report.problem(
                    &name,
                    1,
                    None,
                    "the first record does not start a trail (records before it removed)",
                );
            }
        }
        None => report.problem(
            &name,
            0,
            None,
            format!(
                "{} to {} missing: removed, and no rotation record says so",
                files::name(1),
                files::name(no - 1)
            ),
        ),
        Some((upto, hash)) => {
            if upto.saturating_add(1) < *no {
                report.problem(
                    &name,
                    0,
                    None,
                    format!(
                        "{} to {} missing: rotation expired only up to {}",
                        files::name(upto.saturating_add(1)),
                        files::name(no - 1),
                        files::name(*upto)
                    ),
                );
            } else if upto.saturating_add(1) == *no && hash != first_prev {
                report.problem(
                    &name,
                    1,
                    None,
                    "its first record does not follow the expired file's last (chain broken)",
                );
            }
        }
    }
}

/// The head names the newest record: the trail must end there.
fn check_head(report: &mut Report, chain: &Chain, head: Option<&Head>, key: Option<&Key>) {
    let Some(last) = report.last_seq else { return };
    let Some(head) = head else {
        report.problem(
            "head",
            0,
            None,
            "missing or unreadable: the end of the trail is not sealed",
        );
        return;
    };
    if let Some(key) = key {
        let hash = unhex(&head.hash).unwrap_or([0; 32]);
        if !same(&head.seal, &key.head(head.seq, &hash)) {
            report.problem(
                "head",
                0,
                Some(head.seq),
                "seal is wrong: the head was rewritten (or another key)",
            );
            return;
        }
    }
    if head.seq > last {
        report.problem(
            "head",
            0,
            Some(head.seq),
            format!(
                "the trail ends at record {last} but was sealed up to record {}: records {}-{} removed (truncated)",
                head.seq,
                last + 1,
                head.seq
            ),
        );
    } else if head.seq < last {
        report.problem(
            "head",
            0,
            Some(head.seq),
            format!(
                "records {}-{last} come after the sealed end (appended by someone else, or vtd died between its two writes)",
                head.seq + 1
            ),
        );
    } else if chain.head_hash.as_deref() != Some(head.hash.as_str()) {
        report.problem(
            "head",
            0,
            Some(head.seq),
            "the newest record is not the one sealed (replaced)",
        );
    }
}

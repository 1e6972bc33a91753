//! One record of the trail and its line format.
//!
//! A record is one line of JSON: the record's fields (without `hash`),
//! then `"hash"`, the SHA-256 (hex) of exactly the bytes of that JSON
//! object without the hash member. `prev` is the hash of the record
//! before it (64 zeros for the first record of a new trail), so each
//! record commits to every record before it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done (or, for a watch record, observed).
    Ok,
    /// Refused: not allowed for this caller, or bad input (4xx).
    Denied,
    /// Allowed, but it failed (5xx, a crash).
    Failed,
}

impl Outcome {
    /// The outcome of an HTTP status: 2xx/3xx ok, 4xx denied, 5xx failed.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            400..=499 => Outcome::Denied,
            500.. => Outcome::Failed,
            _ => Outcome::Ok,
        }
    }

    /// `ok`, `denied` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ok" => Ok(Outcome::Ok),
            "denied" => Ok(Outcome::Denied),
            "failed" => Ok(Outcome::Failed),
            _ => Err(format!("result must be ok, denied or failed, not '{s}'")),
        }
    }
}

/// What a caller records: who, what, on which VM, how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The acting process's user (SO_PEERCRED for API calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Its group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Its process id (in `vtd`'s pid namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Its executable (watch records: `/proc/PID/exe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// What happened: `start`, `define`, `lifecycle.stopped`, `watch.read`, ...
    pub action: String,
    /// The VM acted on, or whose VMM made the access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// A watch's key (`auditctl -k`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// How it ended.
    pub result: Outcome,
    /// One line for people: the request, the error, the file.
    #[serde(default)]
    pub detail: String,
}

impl Entry {
    /// An entry with no actor: `action`, `result`, `detail`.
    pub fn new(action: impl Into<String>, result: Outcome, detail: impl Into<String>) -> Self {
        Entry {
            uid: None,
            gid: None,
            pid: None,
            exe: None,
            action: action.into(),
            vm: None,
            key: None,
            result,
            detail: detail.into(),
        }
    }
}

/// Which trail files were removed by rotation: written into the trail
/// when it happens, so `verify` can tell rotation from deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expired {
    /// The newest file number removed (all older ones are gone too).
    pub file: u64,
    /// The hash of the last record in it (the next file's first `prev`).
    pub last_hash: String,
}

/// A record as stored: sequence number, time, the entry, the chain links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// 1, 2, 3, ... across all files of the trail.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    #[serde(flatten)]
    pub entry: Entry,
    /// Checkpoints: HMAC-SHA256 (hex) over `seq` and `prev` (see `seal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
    /// Rotation records: what was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<Expired>,
    /// The hash of the record before (hex), [`GENESIS`] for the first.
    pub prev: String,
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a 64-digit hex string.
pub fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

const HASH_MEMBER: &[u8] = b",\"hash\":\"";

impl Record {
    /// The record as one line (with its hash, without the newline), and
    /// its hash.
    pub fn encode(&self) -> (String, String) {
        // Serialising a struct of strings and numbers cannot fail.
        let body = serde_json::to_string(self).unwrap_or_default();
        let hash = hex(&Sha256::digest(body.as_bytes()));
        let open = body.strip_suffix('}').unwrap_or(&body);
        (format!("{open},\"hash\":\"{hash}\"}}"), hash)
    }
}

/// Why a line is not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// No `"hash"` member at the end: cut short or not a record.
    NoHash,
    /// The hash does not match the bytes: edited.
    BadHash,
    /// The fields do not parse.
    BadJson(String),
}

/// Parses one line (without its newline) and checks its own hash;
/// returns the record and its hash.
pub fn decode(line: &[u8]) -> Result<(Record, String), LineError> {
    let at = line
        .windows(HASH_MEMBER.len())
        .rposition(|w| w == HASH_MEMBER)
        .ok_or(LineError::NoHash)?;
    let tail = &line[at + HASH_MEMBER.len()..];
    if tail.len() != 66 || tail.get(64..) != Some(b"\"}".as_slice()) {
        return Err(LineError::NoHash);
    }
    let stored = std::str::from_utf8(&tail[..64]).map_err(|_| LineError::NoHash)?;
    let mut body = line[..at].to_vec();
    body.push(b'}');
    let record: Record =
        serde_json::from_slice(&body).map_err(|e| LineError::BadJson(e.to_string()))?;
    if hex(&Sha256::digest(&body)) != stored {
        return Err(LineError::BadHash);
    }
    Ok((record, stored.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record {
        Record {
            seq: 7,
            time_ms: 1,
            entry: Entry {
                uid: Some(1000),
                pid: Some(42),
                vm: Some("a".into()),
                ..Entry::new("start", Outcome::Ok, "POST /vms/a/start: 200")
            },
            seal: None,
            expired: None,
            prev: GENESIS.into(),
        }
    }

    #[test]
    fn a_line_decodes_to_its_record_and_hash() {
        let (line, hash) = rec().encode();
        assert!(line.ends_with(&format!("\"hash\":\"{hash}\"}}")));
        let (r, h) = decode(line.as_bytes()).unwrap();
        assert_eq!((r, h), (rec(), hash));
        // The line is plain JSON for jq and friends.
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["action"], "start");
        assert_eq!(v["result"], "ok");
    }

    #[test]
    fn any_edit_breaks_the_hash() {
        let (line, _) = rec().encode();
        let edited = line.replace("\"uid\":1000", "\"uid\":1001");
        assert_eq!(decode(edited.as_bytes()), Err(LineError::BadHash));
        let cut = &line[..line.len() - 3];
        assert_eq!(decode(cut.as_bytes()), Err(LineError::NoHash));
        assert_eq!(decode(b"").unwrap_err(), LineError::NoHash);
    }

    #[test]
    fn hex_round_trips() {
        let h = hex(&[0xab; 32]);
        assert_eq!(unhex(&h), Some([0xab; 32]));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"é".repeat(32)), None);
    }
}

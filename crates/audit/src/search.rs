//! Searching the trail (`ausearch`): every readable record that passes
//! a [`Filter`], oldest first. Damaged lines are skipped (`verify` reports
//! them).

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::files::{self, Lines};
use crate::record::{decode, Outcome, Record};

/// What to look for; every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub vm: Option<String>,
    pub key: Option<String>,
    /// `start` matches `start`; `watch` matches `watch.read`, `watch.open`, ...
    pub action: Option<String>,
    pub uid: Option<u32>,
    pub pid: Option<i32>,
    /// Milliseconds since the epoch, inclusive.
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub result: Option<Outcome>,
}

impl Filter {
    /// Whether `r` passes.
    pub fn matches(&self, r: &Record) -> bool {
        let e = &r.entry;
        let action_ok = self.action.as_ref().is_none_or(|a| {
            e.action == *a
                || e.action
                    .strip_prefix(a.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        });
        action_ok
            && self.vm.as_ref().is_none_or(|v| e.vm.as_ref() == Some(v))
            && self.key.as_ref().is_none_or(|k| e.key.as_ref() == Some(k))
            && self.uid.is_none_or(|u| e.uid == Some(u))
            && self.pid.is_none_or(|p| e.pid == Some(p))
            && self.since_ms.is_none_or(|t| r.time_ms >= t)
            && self.until_ms.is_none_or(|t| r.time_ms <= t)
            && self.result.is_none_or(|o| e.result == o)
    }
}

/// The newest `limit` matching records in `dir`, oldest first.
pub fn search(dir: &Path, filter: &Filter, limit: usize) -> io::Result<Vec<Record>> {
    let mut out = std::collections::VecDeque::new();
    for (_, path) in files::list(dir)? {
        let Ok(lines) = Lines::open(&path) else {
            continue; // Removed by rotation meanwhile.
        };
        for line in lines {
            let Ok((r, _)) = decode(&line?.bytes) else {
                continue;
            };
            if filter.matches(&r) {
                if out.len() == limit {
                    out.pop_front();
                }
                if limit > 0 {
                    out.push_back(r);
                }
            }
        }
    }
    Ok(out.into())
}

/// A time for `--since`/`--until`, as milliseconds since the epoch:
/// `now`, `today` (midnight UTC), seconds since the epoch, RFC 3339
/// (`2026-11-29T17:00:00Z`, or without the zone meaning UTC, or a date
/// alone), or a duration ago (`10m`, `2h`, `1d`, `90s`).
pub fn parse_time(s: &str, now_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    match s {
        "now" => return Ok(now_ms),
        "today" => return Ok(now_ms - now_ms % 86_400_000),
        _ => {}
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .ok()
            .and_then(|secs| secs.checked_mul(1000))
            .ok_or_else(|| format!("time '{s}' is out of range"));
    }
    let iso = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    if let Ok(t) = humantime::parse_rfc3339_weak(&iso) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .map_err(|_| format!("time '{s}' is before 1970"));
    }
    let ago = s.strip_suffix(" ago").unwrap_or(s);
    if let Ok(d) = humantime::parse_duration(ago) {
        return Ok(now_ms.saturating_sub(d.as_millis() as u64));
    }
    Err(format!(
        "bad time '{s}': give now, today, seconds since 1970, 2026-11-29T17:00:00Z, or an age such as 10m, 2h, 1d"
    ))
}

/// A record's time as RFC 3339 (UTC, seconds).
pub fn format_time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("1700000000", now), Ok(1_700_000_000_000));
        assert_eq!(parse_time("10m", now), Ok(now - 600_000));
        assert_eq!(parse_time("2h ago", now), Ok(now - 7_200_000));
        assert_eq!(
            parse_time("2026-11-29T17:00:00Z", now),
            Ok(1_795_971_600_000)
        );
        assert_eq!(parse_time("2026-11-29", now), Ok(1_795_910_400_000));
        assert!(parse_time("yesterday-ish", now).is_err());
        assert!(parse_time("99999999999999999999", now).is_err());
        assert_eq!(format_time(1_795_971_600_000), "2026-11-29T17:00:00Z");
    }
}

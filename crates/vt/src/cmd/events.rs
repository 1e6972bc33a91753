//! `vt events`: follow state changes; local times for people
//! (`2026-11-29 20:55:01.234`), the raw milliseconds in `--output json`.

use std::io::BufRead;

use api::manager::Event;

use super::client::{CliError, CliResult, Client};
use super::output::Format;

pub fn run(c: &Client, format: Format) -> CliResult {
    let reader = c.stream("/events")?;
    for line in reader.lines() {
        let line = line.map_err(|e| CliError {
            code: 1,
            message: format!("event stream: {e}"),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match (format, serde_json::from_str::<Event>(&line)) {
            (Format::Table, Ok(e)) => println!(
                "{} {} {} {}{}",
                local_time(e.time_ms),
                e.vm,
                e.event,
                e.state.as_str(),
                e.reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ),
            _ => println!("{line}"),
        }
    }
    Ok(())
}

/// `ms` since the Unix epoch as this host's local time, to the millisecond.
pub fn local_time(ms: u64) -> String {
    let secs = (ms / 1000) as libc::time_t;
    // SAFETY: an all-zero tm is a valid value to be overwritten.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; localtime_r is the
    // thread-safe form and keeps neither.
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return ms.to_string();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_time_in_utc() {
        // The only test of this binary that reads the time zone.
        std::env::set_var("TZ", "UTC");
        assert_eq!(
            super::local_time(1_780_000_000_123),
            "2026-05-28 20:26:40.123"
        );
    }
}

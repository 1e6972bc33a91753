//! Logging for `vtd` and `vt-vmm`.
//!
//! - [`init`]: the `tracing` subscriber both install first thing: level
//!   and targets from `VT_LOG` (tracing-subscriber's `EnvFilter` syntax,
//!   e.g. `debug` or `info,devices=debug`; default `info`), to stderr.
//!   On a terminal: colours and a level word. Elsewhere (journald, a log
//!   file): no escape codes, each line starts with its syslog priority as
//!   `<N>` (sd-daemon(3): journald reads it as the priority and strips
//!   it), then the time, the level word and the message. Records of the
//!   `log` crate (the devices crate's warnings) go through it too.
//! - [`rotate::RotatingFile`]: a log file capped at a size, rotated like
//!   virtlogd does (`NAME.1` ... `NAME.K`), whole lines only.

/// Size-capped log files rotated between lines (`vt-logger`'s).
pub mod rotate;

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The environment variable with the filter.
pub const ENV: &str = "VT_LOG";

/// One line per event: `<N>TIME LEVEL program: message fields`.
struct Journal {
    program: &'static str,
    priority: bool,
}

/// syslog(3) priority of a level: err, warning, notice... debug.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// UTC `YYYY-MM-DDTHH:MM:SS.mmmZ` of a Unix time in milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let (secs, milli) = (ms / 1000, ms % 1000);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = event.metadata().level();
        if self.priority {
            write!(w, "<{}>", priority(level))?;
        }
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let word = level.as_str().to_ascii_lowercase();
        if w.has_ansi_escapes() {
            let colour = match *level {
                Level::ERROR => 31,
                Level::WARN => 33,
                Level::INFO => 32,
                _ => 34,
            };
            write!(
                w,
                "{} \x1b[{colour}m{word:>5}\x1b[0m {}: ",
                rfc3339_ms(ms),
                self.program
            )?;
        } else {
            write!(w, "{} {word} {}: ", rfc3339_ms(ms), self.program)?;
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// The filter of `VT_LOG` (default `info`); an invalid one is reported
/// and the default used.
fn filter() -> EnvFilter {
    match std::env::var(ENV) {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("{ENV}={spec}: {e}; logging at info");
            EnvFilter::new("info")
        }),
        _ => EnvFilter::new("info"),
    }
}

/// Installs the subscriber for `program` (its name in each line). Once
/// per process; a second call changes nothing.
pub fn init(program: &'static str) {
    let tty = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(tty)
        .event_format(Journal {
            program,
            priority: !tty,
        })
        .try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(super::rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339_ms(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            super::rfc3339_ms(1_795_984_099_360),
            "2026-11-29T20:28:19.360Z"
        );
    }
}

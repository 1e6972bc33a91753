//! How `vt` reports a failure: one line on stderr, `vt: error: ...`; with
//! `--output json`, one JSON object on stderr instead,
//! `{"error":"...","exit_code":N}` (stdout carries only results, so a
//! script reading it never takes an error for data).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set when `--output json` was asked for (even on a command line clap
/// refused).
static JSON: AtomicBool = AtomicBool::new(false);

/// Errors as JSON from now on.
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// Whether `args` ask for `--output json` (looked at before clap parses
/// them, so that clap's own refusals are JSON too).
pub fn wants_json(args: &[String]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "--output" && w[1] == "json")
        || args.iter().any(|a| a == "--output=json")
}

/// Prints `message` as the error of this run and returns `code`.
pub fn report(code: u8, message: &str) -> ExitCode {
    if JSON.load(Ordering::Relaxed) {
        let v = serde_json::json!({ "error": message, "exit_code": code });
        eprintln!("{v}");
    } else {
        eprintln!("vt: error: {message}");
    }
    ExitCode::from(code)
}

/// clap's refusal (several lines: the error, a tip, the usage, a pointer
/// to `--help`) as one line: the error, its tips and the usage.
pub fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid command line");
    let mut first = first.strip_prefix("error: ").unwrap_or(first).to_string();
    for tip in text.lines().filter_map(|l| l.trim().strip_prefix("tip: ")) {
        first.push_str("; ");
        first.push_str(tip);
    }
    match text.lines().find_map(|l| l.trim().strip_prefix("Usage: ")) {
        Some(usage) => format!("{first} (usage: {usage}; see --help)"),
        None => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_seen_in_both_spellings() {
        let a = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert!(wants_json(&a("vt list --output json")));
        assert!(wants_json(&a("vt --output=json list")));
        assert!(!wants_json(&a("vt list --output table")));
    }
}

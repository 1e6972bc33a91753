//! `vt events`: follow state changes.

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
                e.time_ms,
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

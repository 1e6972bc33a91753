//! `vt policy list` and `vt policy set NAME on|off [--persistent]`.

use api::network::{PolicySet, PolicySwitch};
use clap::Subcommand;

use super::client::{CliError, CliResult, Client};
use super::options::boolean;
use super::output::{print_json, table, Format};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Every switch: name, state, state after a restart, what it allows.
    List,
    /// Turn a switch on or off (root only).
    Set {
        name: String,
        /// `on` or `off`.
        state: String,
        /// Also keep it across vtd restarts.
        #[arg(long)]
        persistent: bool,
    },
}

fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.into()
}

pub fn run(c: &Client, cmd: PolicyCommand, f: Format) -> CliResult {
    match cmd {
        PolicyCommand::List => {
            let all: Vec<PolicySwitch> = c.json("GET", "/policy", None)?;
            if f == Format::Json {
                print_json(&all);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        on_off(s.state),
                        on_off(s.persistent),
                        s.description.clone(),
                    ]
                })
                .collect();
            table(&["NAME", "STATE", "PERSISTENT", "DESCRIPTION"], &rows);
            Ok(())
        }
        PolicyCommand::Set {
            name,
            state,
            persistent,
        } => {
            let state = boolean(&name, &state).map_err(CliError::usage)?;
            let body = serde_json::to_vec(&PolicySet { state, persistent })
                .map_err(|e| CliError::usage(e.to_string()))?;
            let s: PolicySwitch = c.json("PUT", &format!("/policy/{name}"), Some(body))?;
            match f {
                Format::Json => print_json(&s),
                Format::Table => println!(
                    "{}: {} (persistent: {})",
                    s.name,
                    on_off(s.state),
                    on_off(s.persistent)
                ),
            }
            Ok(())
        }
    }
}

//! `vt shutdown NAME`: press the power button and wait, with a spinner on
//! a terminal; exit 6 when the guest did not power off itself and vtd
//! stopped it by force.

use std::io::IsTerminal;
use std::time::Duration;

use api::manager::VmStatus;

use super::client::{CliError, CliResult, Client};
use super::output::{print_json, Format};

/// The exit code of a shutdown that had to be forced.
pub const FORCED: u8 = 6;

/// The reasons vtd gives a shutdown it had to force (a clean one is
/// "guest powered off").
fn forced(vm: &VmStatus) -> bool {
    vm.reason
        .as_deref()
        .is_some_and(|r| r.starts_with("shut down:"))
}

/// `vt shutdown NAME --timeout SECS`: `POST /vms/NAME/shutdown` (vtd
/// presses the power button and waits up to `timeout` seconds, then stops
/// the VM), with a spinner on a terminal; prints the VM's state and
/// reason. Exit [`FORCED`] (6) when vtd had to stop it, the API's error
/// code else.
pub fn shutdown(c: &Client, name: &str, timeout: u64, format: Format) -> CliResult {
    let spinner = std::io::stderr().is_terminal().then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_message(format!(
            "{name}: power button pressed, waiting up to {timeout}s for the guest to power off"
        ));
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
    let path = format!("/vms/{name}/shutdown?timeout_secs={timeout}");
    let vm: CliResult<VmStatus> = c.json("POST", &path, None);
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let vm = vm?;
    let reason = vm.reason.clone().unwrap_or_default();
    match format {
        Format::Json => print_json(&vm),
        Format::Table => println!("{name}: {} ({reason})", vm.state.as_str()),
    }
    if forced(&vm) {
        return Err(CliError {
            code: FORCED,
            message: format!("{name}: the guest did not power off itself: {reason}"),
        });
    }
    Ok(())
}

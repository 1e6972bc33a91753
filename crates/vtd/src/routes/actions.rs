//! `POST /vms/{name}/{action}`: start, shutdown, stop, pause, resume,
//! reboot (graceful: the power button, started again once off), reset
//! (hard), repair. Each answers the VM's status afterwards.

use std::time::Duration;

use vt_http::Request;

use super::{json, Answer};
use crate::daemon::Daemon;
use crate::error::ApiError;

/// Shutdown's wait for the guest, unless `?timeout_secs=` says otherwise.
const SHUTDOWN_TIMEOUT: u64 = 30;
/// How long a graceful reboot waits for the guest to power off, unless
/// `?timeout_secs=` says otherwise.
const REBOOT_TIMEOUT: u64 = 120;

/// `?timeout_secs=` (at most an hour), else `default`.
fn timeout(req: &Request, default: u64) -> Result<Duration, ApiError> {
    let secs = match req.query_param("timeout_secs") {
        None => default,
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= 3600)
            .ok_or_else(|| {
                ApiError::bad_request("timeout_secs must be a number of seconds, at most 3600")
            })?,
    };
    Ok(Duration::from_secs(secs))
}

pub fn run(d: &Daemon, name: &str, action: &str, req: &Request, peer: &vt_http::Peer) -> Answer {
    if action == "repair" {
        return json(200, &d.repair(name)?.status(false));
    }
    let vm = d.get(name)?;
    let _op = vm.op();
    d.still_current(&vm, Some(peer))?;
    match action {
        "start" => {
            // A change made while the VM ran becomes its definition now.
            d.apply_pending(&vm)?;
            d.start_vm(&vm, Some(peer))?
        }
        "stop" => {
            d.reboots.cancel(name);
            vm.stop("stopped by request")?
        }
        "shutdown" => {
            let wait = timeout(req, SHUTDOWN_TIMEOUT)?;
            d.reboots.cancel(name);
            vm.shutdown(wait)?
        }
        "pause" => vm.pause()?,
        "resume" => vm.resume()?,
        "reboot" => d.reboot_gracefully(&vm, timeout(req, REBOOT_TIMEOUT)?)?,
        "reset" => {
            d.reboots.cancel(name);
            vm.reboot()?
        }
        other => return Err(ApiError::new(404, format!("no action '{other}'"))),
    }
    json(200, &vm.status(false))
}

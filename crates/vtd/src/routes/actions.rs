//! `POST /vms/{name}/{action}`: start, shutdown, stop, pause, resume,
//! reboot, repair. Each answers the VM's status afterwards.

use std::time::Duration;

use vt_http::Request;

use super::{json, Answer};
use crate::daemon::Daemon;
use crate::error::ApiError;

/// Shutdown's wait for the guest, unless `?timeout_secs=` says otherwise.
const SHUTDOWN_TIMEOUT: u64 = 30;

pub fn run(d: &Daemon, name: &str, action: &str, req: &Request, peer: &vt_http::Peer) -> Answer {
    if action == "repair" {
        return json(200, &d.repair(name)?.status(false));
    }
    // A change made while the VM ran becomes its definition now.
    let vm = match action {
        "start" => d.apply_pending(name)?,
        _ => d.get(name)?,
    };
    let _op = vm.op();
    match action {
        "start" => d.start_vm(&vm, Some(peer))?,
        "stop" => vm.stop("stopped by request")?,
        "shutdown" => {
            let secs = match req.query_param("timeout_secs") {
                None => SHUTDOWN_TIMEOUT,
                Some(s) => s
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s <= 3600)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "timeout_secs must be a number of seconds, at most 3600",
                        )
                    })?,
            };
            vm.shutdown(Duration::from_secs(secs))?
        }
        "pause" => vm.pause()?,
        "resume" => vm.resume()?,
        "reboot" => vm.reboot()?,
        other => return Err(ApiError::new(404, format!("no action '{other}'"))),
    }
    json(200, &vm.status(false))
}

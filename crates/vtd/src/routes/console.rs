//! `GET /vms/{name}/console`: the serial console log, then (with
//! `?follow=1`) what the guest prints next, until the VM stops or the
//! client leaves. `POST /vms/{name}/console`: bytes typed into the guest.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use vt_http::{Reply, Response};

use super::Answer;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::vm::Vm;

const POLL: Duration = Duration::from_millis(20);

/// `GET /vms/{name}/console[?follow=1|true]`: `console.log` streamed as
/// `application/octet-stream`, following new output (and rotations) while
/// the VM is active when asked to.
pub fn stream(d: &Daemon, name: &str, req: &vt_http::Request) -> Answer {
    let vm = d.get(name)?;
    let follow = matches!(req.query_param("follow"), Some("1" | "true"));
    let file = File::open(vm.dir.console()).ok();
    Ok(Reply::Stream {
        content_type: "application/octet-stream".into(),
        body: Box::new(move |w| copy(file, &vm, follow, w)),
    })
}

fn copy(mut file: Option<File>, vm: &Arc<Vm>, follow: bool, w: &mut UnixStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if file.is_none() {
            file = File::open(vm.dir.console()).ok();
        }
        // A reset (vt reboot) empties the log: start again from its top.
        if let Some(f) = file.as_mut() {
            let len = f.metadata().map_or(0, |m| m.len());
            if f.stream_position().is_ok_and(|pos| pos > len) {
                let _ = f.seek(SeekFrom::Start(0));
            }
        }
        // Checked before reading: output written before the VM ended is
        // still sent.
        let active = vm.state().is_active();
        let n = file.as_mut().map_or(0, |f| f.read(&mut buf).unwrap_or(0));
        if n > 0 {
            if w.write_all(&buf[..n]).is_err() {
                return;
            }
            continue;
        }
        if rotated(file.as_ref(), vm) {
            // Its logger began a new console.log: on to that one, from
            // its start (what was left in the old one was read above).
            file = None;
            continue;
        }
        if !follow || !active || peer_gone(w) {
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// Whether `console.log` now is another file than `file` (the console
/// logger rotated it).
fn rotated(file: Option<&File>, vm: &Vm) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Some(f), Ok(now)) = (file, std::fs::metadata(vm.dir.console())) else {
        return false;
    };
    f.metadata()
        .is_ok_and(|m| m.ino() != now.ino() || m.dev() != now.dev())
}

/// Whether the client closed its end (a streamed reply has nothing else to
/// read from it).
pub fn peer_gone(w: &UnixStream) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: a one-byte peek into a valid buffer, non-blocking.
    let n = unsafe {
        libc::recv(
            w.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock)
}

/// `POST /vms/{name}/console`: `body` typed into the guest's serial
/// console (passed to its VMM); 204 No Content. Errors: an empty body
/// (400), a VM that is not running, or the VMM's own error status.
pub fn input(d: &Daemon, name: &str, body: &[u8]) -> Answer {
    if body.is_empty() {
        return Err(ApiError::bad_request("nothing to type"));
    }
    d.get(name)?.console_input(body.to_vec())?;
    Ok(Reply::Full(Response::new(204, "application/json", "")))
}

//! `GET /events`: state changes as JSON lines, until the client leaves.

use std::io::Write;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use vt_http::Reply;

use super::Answer;
use crate::daemon::Daemon;

pub fn stream(d: &Daemon) -> Answer {
    let rx = d.events.follow();
    Ok(Reply::Stream {
        content_type: "application/x-ndjson".into(),
        body: Box::new(move |w| loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(line) => {
                    if writeln!(w, "{line}").and_then(|()| w.flush()).is_err() {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if super::console::peer_gone(w) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }),
    })
}

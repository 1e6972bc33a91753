//! A thread-per-connection server on a Unix socket.
//!
//! Each connection reads requests one after another (keep-alive) and hands
//! each to the [`Handler`] with the peer's credentials. A [`Reply::Stream`]
//! takes the connection over: the head goes out with `Connection: close`
//! and no length, then the handler writes until it is done or the client
//! goes away. Idle connections are closed after [`IDLE_TIMEOUT`].

use std::io::{BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::head::{read_request, Limits};
use crate::message::{reason, Request, Response};
use crate::peer::{peer_credentials, Peer};

/// How long a connection may sit between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes a streamed body; returns when done or when a write fails.
pub type StreamFn = Box<dyn FnOnce(&mut UnixStream) + Send>;

/// What a handler answers.
pub enum Reply {
    Full(Response),
    Stream {
        content_type: String,
        body: StreamFn,
    },
}

/// Serves requests.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request, peer: &Peer) -> Reply;

    /// The answer to a request that could not be read.
    fn error(&self, status: u16, message: &str) -> Response {
        Response::new(status, "text/plain", message)
    }

    /// The answer to a request from `peer` that could not be read (too
    /// big, malformed); by default [`Handler::error`]. A daemon that
    /// audits refusals records it here.
    fn refused(&self, peer: &Peer, status: u16, message: &str) -> Response {
        let _ = peer;
        self.error(status, message)
    }
}

/// Accepts connections forever, at most `max_connections` at once (the
/// rest get 503).
pub fn serve(
    listener: UnixListener,
    handler: Arc<dyn Handler>,
    limits: Limits,
    max_connections: usize,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= max_connections {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = handler
                .error(503, "too many connections")
                .write_to(&mut stream, false);
            continue;
        }
        let (handler, active2) = (handler.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || {
                connection(stream, &*handler, &limits);
                active2.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn connection(stream: UnixStream, handler: &dyn Handler, limits: &Limits) {
    let peer = peer_credentials(&stream).unwrap_or_default();
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let req = match read_request(&mut reader, limits) {
            Ok(r) => r,
            Err(e) => {
                if let Some(status) = e.status() {
                    let _ = handler
                        .refused(&peer, status, &e.to_string())
                        .write_to(&mut writer, false);
                }
                return;
            }
        };
        let keep = req.keep_alive();
        match handler.handle(req, &peer) {
            Reply::Full(resp) => {
                if resp.write_to(&mut writer, keep).is_err() || !keep {
                    return;
                }
            }
            Reply::Stream { content_type, body } => {
                let head = format!(
                    "HTTP/1.1 200 {}\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n",
                    reason(200)
                );
                if writer.write_all(head.as_bytes()).is_ok() {
                    body(&mut writer);
                }
                return;
            }
        }
    }
}

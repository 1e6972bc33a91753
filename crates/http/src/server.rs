//! A thread-per-connection server on a Unix socket.
//!
//! Each connection reads requests one after another (keep-alive) and hands
//! each to the [`Handler`] with the peer's credentials. A [`Reply::Stream`]
//! takes the connection over: the head goes out with `Connection: close`
//! and no length, then the handler writes until it is done or the client
//! goes away.
//!
//! One client cannot hold the server ([`Connections`]): a connection may sit
//! idle between requests for [`ConnectionLimits::idle`], and once a request
//! has begun, all of it (head and body) must arrive within
//! [`ConnectionLimits::request`] however slowly it trickles; every write,
//! streamed ones too, gives up after [`ConnectionLimits::write`]; each
//! non-root uid holds at most [`ConnectionLimits::per_uid`] connections, and
//! the last [`ConnectionLimits::reserved_for_root`] slots are root's.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::head::{read_request_continue, Limits};
use crate::message::{reason, Request, Response};
use crate::peer::{peer_credentials, Peer};

/// How long a connection may sit between requests (the default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Limits on connections, shared by the listeners given the same
/// [`Connections`].
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections at once, all uids.
    pub max: usize,
    /// Connections at once of one non-root uid.
    pub per_uid: usize,
    /// Of `max`, how many only root (uid 0) may take.
    pub reserved_for_root: usize,
    /// Wait for the first byte of a request.
    pub idle: Duration,
    /// From the first byte of a request to its last (head and body).
    pub request: Duration,
    /// One write (of an answer or a stream) to the client.
    pub write: Duration,
}

impl ConnectionLimits {
    /// `max` connections, an eighth of them (at least one) per non-root
    /// uid, another eighth kept for root; idle 60 s, request 10 s, write 30 s.
    pub fn new(max: usize) -> Self {
        ConnectionLimits {
            max,
            per_uid: (max / 8).max(1),
            reserved_for_root: max / 8,
            idle: IDLE_TIMEOUT,
            request: Duration::from_secs(10),
            write: Duration::from_secs(30),
        }
    }
}

/// The connection slots of one or more listeners.
#[derive(Debug)]
pub struct Connections {
    limits: ConnectionLimits,
    /// Open connections by uid.
    open: Mutex<HashMap<u32, usize>>,
}

impl Connections {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Connections {
            limits,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a slot for `uid`, or says why not.
    fn take(self: &Arc<Self>, uid: u32) -> Result<Slot, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        let mine = open.get(&uid).copied().unwrap_or(0);
        let l = &self.limits;
        if total >= l.max {
            return Err("too many connections");
        }
        if uid != 0 {
            if mine >= l.per_uid {
                return Err("too many connections from this user");
            }
            if total >= l.max.saturating_sub(l.reserved_for_root) {
                return Err("too many connections (the rest are kept for root)");
            }
        }
        *open.entry(uid).or_insert(0) += 1;
        Ok(Slot(self.clone(), uid))
    }
}

/// One taken slot, given back on drop.
struct Slot(Arc<Connections>, u32);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// The read half of a connection: waits up to `idle` for a request to
/// begin, then enforces the request's deadline on every read.
struct Deadline {
    stream: UnixStream,
    idle: Duration,
    until: Option<Instant>,
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let wait = match self.until {
            None => self.idle,
            Some(t) => t.saturating_duration_since(Instant::now()),
        };
        if wait.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(wait))?;
        self.stream.read(buf)
    }
}

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

/// Accepts connections forever within the slots of `connections` (a
/// connection over a limit gets 503 and is closed).
pub fn serve(
    listener: UnixListener,
    handler: Arc<dyn Handler>,
    limits: Limits,
    connections: Arc<Connections>,
) {
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let cl = &connections.limits;
        // The refusal must not block the accept loop either.
        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
        let Ok(peer) = peer_credentials(&stream) else {
            continue;
        };
        let slot = match connections.take(peer.uid) {
            Ok(s) => s,
            Err(why) => {
                let _ = handler.error(503, why).write_to(&mut stream, false);
                continue;
            }
        };
        let _ = stream.set_write_timeout(Some(cl.write));
        let (idle, request) = (cl.idle, cl.request);
        let handler = handler.clone();
        let _ = std::thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || {
                connection(stream, peer, &*handler, &limits, idle, request);
                drop(slot);
            });
    }
}

fn connection(
    stream: UnixStream,
    peer: Peer,
    handler: &dyn Handler,
    limits: &Limits,
    idle: Duration,
    request: Duration,
) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(Deadline {
        stream: read_half,
        idle,
        until: None,
    });
    let mut writer = stream;
    loop {
        // Idle until a request begins; from its first byte, the deadline.
        reader.get_mut().until = None;
        match reader.fill_buf() {
            Ok([]) | Err(_) => return,
            Ok(_) => {}
        }
        reader.get_mut().until = Some(Instant::now() + request);
        let mut send_continue = || {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            writer.flush()
        };
        let mut req = match read_request_continue(&mut reader, limits, &mut send_continue) {
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
        // HEAD is the GET of the same target, answered without its body.
        let head_only = req.method == "HEAD";
        if head_only {
            req.method = "GET".into();
            req.head = true;
        }
        match handler.handle(req, &peer) {
            Reply::Full(resp) => {
                if resp.write(&mut writer, keep, !head_only).is_err() || !keep {
                    return;
                }
            }
            Reply::Stream { content_type, body } => {
                let head = format!(
                    "HTTP/1.1 200 {}\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n",
                    reason(200)
                );
                if writer.write_all(head.as_bytes()).is_ok() && !head_only {
                    body(&mut writer);
                }
                return;
            }
        }
    }
}

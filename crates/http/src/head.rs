//! Reading a request or a response off a stream, within limits.

use std::io::{self, BufRead, Read};

use crate::body::{expects_continue, framing, read_chunked, read_length, Framing};
use crate::message::{split_target, Request, Response};

/// Size limits for what a peer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request/status line plus headers, in bytes.
    pub max_head: usize,
    /// Number of headers.
    pub max_headers: usize,
    /// Body, in bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8 * 1024,
            max_headers: 64,
            max_body: 1024 * 1024,
        }
    }
}

/// Why a message could not be read.
#[derive(Debug)]
pub enum Error {
    /// The peer closed the connection before sending anything.
    Closed,
    /// The connection failed (or timed out) mid-message.
    Io(io::Error),
    /// Malformed: the text says what.
    Bad(&'static str),
    /// The head is larger than [`Limits::max_head`] or has too many headers.
    HeadTooLarge,
    /// The declared body is larger than [`Limits::max_body`].
    BodyTooLarge(u64),
    /// A feature this subset does not speak (transfer codings, HTTP/2, ...).
    Unsupported(&'static str),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Closed => write!(f, "connection closed"),
            Error::Io(e) => write!(f, "connection error: {e}"),
            Error::Bad(what) => write!(f, "malformed request: {what}"),
            Error::HeadTooLarge => write!(f, "request head too large"),
            Error::BodyTooLarge(n) => write!(f, "body of {n} bytes is too large"),
            Error::Unsupported(what) => write!(f, "not supported: {what}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The status to answer with, when an answer is still possible.
    pub fn status(&self) -> Option<u16> {
        match self {
            // A request that did not arrive within its deadline.
            Error::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                Some(408)
            }
            Error::Closed | Error::Io(_) => None,
            Error::Bad(_) => Some(400),
            Error::HeadTooLarge => Some(431),
            Error::BodyTooLarge(_) => Some(413),
            Error::Unsupported("HTTP version") => Some(505),
            Error::Unsupported(_) => Some(501),
        }
    }
}

/// The first line and the headers of a message.
struct Head {
    start: String,
    headers: Vec<(String, String)>,
}

/// Reads one line (up to `\n`) of at most `budget` bytes.
fn read_line(r: &mut impl BufRead, budget: &mut usize) -> Result<Option<String>, Error> {
    let mut buf = Vec::new();
    let limit = (*budget as u64).saturating_add(1);
    let n = r
        .by_ref()
        .take(limit)
        .read_until(b'\n', &mut buf)
        .map_err(Error::Io)?;
    if n == 0 {
        return Ok(None);
    }
    if n > *budget {
        return Err(Error::HeadTooLarge);
    }
    *budget -= n;
    if buf.last() != Some(&b'\n') {
        return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| Error::Bad("head is not UTF-8"))
}

fn read_head(r: &mut impl BufRead, limits: &Limits) -> Result<Head, Error> {
    let mut budget = limits.max_head;
    // Tolerate empty lines before the start line (RFC 9112 section 2.2).
    let start = loop {
        match read_line(r, &mut budget)? {
            None => return Err(Error::Closed),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut headers = Vec::new();
    loop {
        let line =
            read_line(r, &mut budget)?.ok_or(Error::Io(io::ErrorKind::UnexpectedEof.into()))?;
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            return Err(Error::Bad("folded header line"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(Error::Bad("header without ':'"))?;
        if name.is_empty() || !name.bytes().all(is_token) {
            return Err(Error::Bad("invalid header name"));
        }
        if headers.len() == limits.max_headers {
            return Err(Error::HeadTooLarge);
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Head { start, headers })
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads one request. [`Error::Closed`] means a clean end of the connection.
pub fn read_request(r: &mut impl BufRead, limits: &Limits) -> Result<Request, Error> {
    read_request_continue(r, limits, &mut || Ok(()))
}

/// Reads one request; when the client sent `Expect: 100-continue` and the
/// body it declares is within the limits, `send_continue` is called (to
/// write `HTTP/1.1 100 Continue`) before the body is read. A body declared
/// too large is refused without it, so the client never sends it.
pub fn read_request_continue(
    r: &mut impl BufRead,
    limits: &Limits,
    send_continue: &mut dyn FnMut() -> io::Result<()>,
) -> Result<Request, Error> {
    let head = read_head(r, limits)?;
    let mut parts = head.start.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::Bad("request line is not 'METHOD TARGET VERSION'"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::Bad("invalid method"));
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Bad("invalid request target"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v if v.starts_with("HTTP/") => return Err(Error::Unsupported("HTTP version")),
        _ => return Err(Error::Bad("invalid HTTP version")),
    };
    let framing = framing(&head.headers)?;
    if http10 && framing == Framing::Chunked {
        // HTTP/1.0 has no chunked coding (RFC 9112 section 6.1): its
        // framing cannot be trusted, the connection is closed.
        return Err(Error::Bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    if let Framing::Length(len) = framing {
        if len > limits.max_body as u64 {
            return Err(Error::BodyTooLarge(len));
        }
    }
    if framing != Framing::None && !http10 && expects_continue(&head.headers) {
        send_continue().map_err(Error::Io)?;
    }
    let body = match framing {
        Framing::None => Vec::new(),
        Framing::Length(len) => read_length(r, len, limits)?,
        Framing::Chunked => read_chunked(r, limits)?,
    };
    let (path, query) = split_target(target);
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: head.headers,
        body,
        http10,
        head: false,
    })
}

/// Reads one response; a body without `Content-Length` runs to the end of
/// the connection (still bounded by `limits.max_body`).
pub fn read_response(r: &mut impl BufRead, limits: &Limits) -> Result<Response, Error> {
    let mut resp = read_response_head(r, limits)?;
    resp.body = match framing(&resp.headers)? {
        Framing::Length(len) => read_length(r, len, limits)?,
        Framing::Chunked => read_chunked(r, limits)?,
        Framing::None => {
            let mut body = Vec::new();
            r.by_ref()
                .take(limits.max_body as u64 + 1)
                .read_to_end(&mut body)
                .map_err(Error::Io)?;
            if body.len() > limits.max_body {
                return Err(Error::BodyTooLarge(body.len() as u64));
            }
            body
        }
    };
    Ok(resp)
}

/// Reads a response's status line and headers; the body is left unread.
pub fn read_response_head(r: &mut impl BufRead, limits: &Limits) -> Result<Response, Error> {
    let head = read_head(r, limits)?;
    let mut parts = head.start.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(Error::Bad("status line is not 'VERSION CODE REASON'"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Error::Unsupported("HTTP version"));
    }
    let status: u16 = match code.parse() {
        Ok(s) if (100..=999).contains(&s) && code.len() == 3 => s,
        _ => return Err(Error::Bad("invalid status code")),
    };
    Ok(Response {
        status,
        headers: head.headers,
        body: Vec::new(),
    })
}

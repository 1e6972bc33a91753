//! The client side: one request per connection, or a keep-alive
//! connection, or a streamed response.

use std::io::{BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::head::{read_response, read_response_head, Error, Limits};
use crate::message::{Request, Response};

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// Nobody listens at the socket (or it is not there).
    Connect(PathBuf, std::io::Error),
    /// The exchange failed.
    Http(Error),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(p, e) => write!(f, "cannot connect to {}: {e}", p.display()),
            ClientError::Http(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

fn connect(socket: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(socket).map_err(|e| ClientError::Connect(socket.to_path_buf(), e))
}

/// Sends `req` on `stream` and reads the answer. When the server answers
/// and closes before taking the whole request (413, 431), that answer is
/// still returned.
fn exchange(
    stream: &mut UnixStream,
    reader: &mut impl std::io::BufRead,
    req: &Request,
    keep_alive: bool,
    limits: &Limits,
) -> Result<Response, ClientError> {
    let sent = req.write_to(stream, keep_alive);
    match read_response(reader, limits) {
        Ok(r) => Ok(r),
        Err(e) => Err(ClientError::Http(match sent {
            Err(io) => Error::Io(io),
            Ok(()) => e,
        })),
    }
}

/// One request on a fresh connection (`Connection: close`), waiting as
/// long as the server takes.
pub fn call(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<Vec<u8>>,
) -> Result<Response, ClientError> {
    call_with_timeout(socket, method, target, body, None)
}

/// [`call`], giving up when a read or write stalls for `timeout`.
pub fn call_with_timeout(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<Vec<u8>>,
    timeout: Option<std::time::Duration>,
) -> Result<Response, ClientError> {
    let mut stream = connect(socket)?;
    let set = stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout));
    set.map_err(|e| ClientError::Http(Error::Io(e)))?;
    let read_half = stream
        .try_clone()
        .map_err(|e| ClientError::Http(Error::Io(e)))?;
    let mut reader = BufReader::new(read_half);
    let req = Request::new(method, target, body);
    exchange(&mut stream, &mut reader, &req, false, &Limits::default())
}

/// Sends one request and returns the answer's head (body empty) and the
/// connection to read a streamed body from. A non-200 answer comes back
/// whole, with its body.
pub fn open_stream(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<Vec<u8>>,
) -> Result<(Response, BufReader<UnixStream>), ClientError> {
    let mut stream = connect(socket)?;
    let io = |e| ClientError::Http(Error::Io(e));
    let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
    Request::new(method, target, body)
        .write_to(&mut stream, false)
        .map_err(io)?;
    let limits = Limits::default();
    let mut head = read_response_head(&mut reader, &limits).map_err(ClientError::Http)?;
    if let Some(len) = head.header("content-length") {
        let len: u64 = len.parse().unwrap_or(0).min(limits.max_body as u64);
        reader
            .by_ref()
            .take(len)
            .read_to_end(&mut head.body)
            .map_err(io)?;
    }
    Ok((head, reader))
}

/// A keep-alive connection for many requests in a row.
pub struct Connection {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Connection {
    pub fn open(socket: &Path) -> Result<Self, ClientError> {
        let stream = connect(socket)?;
        let read_half = stream
            .try_clone()
            .map_err(|e| ClientError::Http(Error::Io(e)))?;
        Ok(Connection {
            stream,
            reader: BufReader::new(read_half),
        })
    }

    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let req = Request::new(method, target, body);
        exchange(
            &mut self.stream,
            &mut self.reader,
            &req,
            true,
            &Limits::default(),
        )
    }
}

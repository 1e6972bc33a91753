//! `vt-http`: the HTTP/1.1 subset VT System speaks on its Unix sockets.
//!
//! - requests: a request line, headers, and a body framed by
//!   `Content-Length` or `Transfer-Encoding: chunked` (other codings are
//!   refused with 501; both framings at once with 400);
//! - `Expect: 100-continue` is answered with `100 Continue` once the head
//!   is read and the declared body is within the limits;
//! - `HEAD` is served as the `GET` of the same target, without the body;
//! - responses: `Content-Length` bodies, or a stream ended by closing the
//!   connection (`Connection: close`, used for event and console streams);
//! - keep-alive by default (HTTP/1.1), `Connection: close` honoured;
//! - every size is bounded by [`Limits`]: an oversized head is 431, an
//!   oversized body 413, without reading it.
//!
//! Nothing here panics on what a peer sends.

mod body;
mod client;
mod head;
mod message;
mod peer;
mod server;

pub use client::{call, call_with_timeout, open_stream, ClientError, Connection};
pub use head::{
    read_request, read_request_continue, read_response, read_response_head, Error, Limits,
};
pub use message::{reason, Request, Response};
pub use peer::{peer_credentials, Peer};
pub use server::{serve, ConnectionLimits, Connections, Handler, Reply, StreamFn, IDLE_TIMEOUT};

//! Reading a message body: `Content-Length` framed, or `chunked`
//! (RFC 9112 section 7.1), always within [`Limits::max_body`].

use std::io::{self, BufRead, Read};

use crate::head::{Error, Limits};
use crate::message::find_header;

/// How a body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body framing declared.
    None,
    /// `Content-Length: N`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The framing the headers declare. Only `chunked` is a known transfer
/// coding (others are 501); a message with both `Transfer-Encoding` and
/// `Content-Length` is refused (RFC 9112 section 6.3: a smuggling sign).
pub(crate) fn framing(headers: &[(String, String)]) -> Result<Framing, Error> {
    let te: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.as_str())
        .collect();
    let len = content_length(headers)?;
    if te.is_empty() {
        return Ok(len.map_or(Framing::None, Framing::Length));
    }
    if len.is_some() {
        return Err(Error::Bad("both Transfer-Encoding and Content-Length"));
    }
    if te.len() == 1 && te[0].eq_ignore_ascii_case("chunked") {
        Ok(Framing::Chunked)
    } else {
        Err(Error::Unsupported("Transfer-Encoding other than chunked"))
    }
}

fn content_length(headers: &[(String, String)]) -> Result<Option<u64>, Error> {
    let mut len = None;
    for (_, v) in headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Bad("invalid Content-Length"));
        }
        let n: u64 = v
            .parse()
            .map_err(|_| Error::Bad("invalid Content-Length"))?;
        if len.is_some_and(|l| l != n) {
            return Err(Error::Bad("conflicting Content-Length headers"));
        }
        len = Some(n);
    }
    Ok(len)
}

/// Whether the client asked for `100 Continue` before it sends the body.
pub(crate) fn expects_continue(headers: &[(String, String)]) -> bool {
    find_header(headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// Reads exactly `len` bytes.
pub(crate) fn read_length(
    r: &mut impl BufRead,
    len: u64,
    limits: &Limits,
) -> Result<Vec<u8>, Error> {
    if len > limits.max_body as u64 {
        return Err(Error::BodyTooLarge(len));
    }
    let mut body = Vec::with_capacity(len as usize);
    r.by_ref()
        .take(len)
        .read_to_end(&mut body)
        .map_err(Error::Io)?;
    if body.len() as u64 != len {
        return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(body)
}

/// The longest chunk-size line (size, extensions, CRLF) read.
const MAX_CHUNK_LINE: usize = 256;

/// Reads one CRLF-ended line of at most `max` bytes.
fn line(r: &mut impl BufRead, max: usize) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(max as u64 + 1)
        .read_until(b'\n', &mut buf)
        .map_err(Error::Io)?;
    if n > max {
        return Err(Error::Bad("chunk line too long"));
    }
    if buf.pop() != Some(b'\n') {
        return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(buf)
}

/// Reads a chunked body: chunks until the last (size 0), then trailer
/// lines (read and dropped, within [`Limits::max_head`] and
/// [`Limits::max_headers`]). The decoded total may not pass
/// [`Limits::max_body`].
pub(crate) fn read_chunked(r: &mut impl BufRead, limits: &Limits) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    loop {
        let l = line(r, MAX_CHUNK_LINE)?;
        let size = l.split(|b| *b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size)
            .ok()
            .map(|s| s.trim_end_matches([' ', '\t']))
            .filter(|s| !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or(Error::Bad("invalid chunk size"))?;
        if size == 0 {
            break;
        }
        let total = (body.len() as u64).saturating_add(size);
        if total > limits.max_body as u64 {
            return Err(Error::BodyTooLarge(total));
        }
        let got = r
            .by_ref()
            .take(size)
            .read_to_end(&mut body)
            .map_err(Error::Io)?;
        if got as u64 != size {
            return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        if !line(r, 2)?.is_empty() {
            return Err(Error::Bad("chunk data longer than its size"));
        }
    }
    let mut budget = limits.max_head;
    for _ in 0..=limits.max_headers {
        let l = line(r, budget)?;
        if l.is_empty() {
            return Ok(body);
        }
        budget = budget.saturating_sub(l.len() + 2);
    }
    Err(Error::HeadTooLarge)
}

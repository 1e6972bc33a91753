//! `Expect: 100-continue`, chunked request bodies and `HEAD`, over a real
//! Unix socket (and, for 100-continue, with curl as the client).

use std::io::{Cursor, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vt_http::{
    read_request, ConnectionLimits, Connections, Handler, Limits, Peer, Reply, Request, Response,
};

struct Echo;

impl Handler for Echo {
    fn handle(&self, req: Request, _peer: &Peer) -> Reply {
        let text = format!(
            "{} {} [{}]",
            req.method,
            req.path,
            String::from_utf8_lossy(&req.body)
        );
        Reply::Full(Response::new(200, "text/plain", text))
    }
}

fn server(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vt-http-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let limits = Limits {
        max_body: 1024,
        ..Limits::default()
    };
    let c = Connections::new(ConnectionLimits::new(8));
    std::thread::spawn(move || vt_http::serve(listener, Arc::new(Echo), limits, c));
    path
}

/// Sends `bytes`, half-closes, reads everything the server answers.
fn exchange(s: &PathBuf, bytes: &[u8]) -> String {
    let mut raw = UnixStream::connect(s).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(bytes).unwrap();
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    let _ = raw.read_to_string(&mut out);
    out
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let s = server("continue");
    let mut raw = UnixStream::connect(&s).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    raw.write_all(
        b"POST /x HTTP/1.1\r\nHost: l\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut interim = [0u8; 25];
    raw.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    raw.write_all(b"hello").unwrap();
    let mut out = String::new();
    raw.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert!(out.ends_with("POST /x [hello]"), "{out}");
}

#[test]
fn expect_100_continue_with_a_body_over_the_limit_gets_413_and_no_100() {
    let s = server("continue-big");
    let out = exchange(
        &s,
        b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4096\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
}

/// curl sends `Expect: 100-continue` and, without an answer, waits a
/// second before it sends the body anyway.
#[test]
fn curl_does_not_wait_for_100_continue() {
    let s = server("curl");
    let start = Instant::now();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&s)
        .args([
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "5",
            "--data-binary",
            "abc",
            "http://localhost/x",
        ])
        .output()
        .expect("curl");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "POST /x [abc]");
    assert!(took < Duration::from_millis(900), "curl took {took:?}");
}

#[test]
fn chunked_bodies_are_decoded() {
    let s = server("chunked");
    let out = exchange(
        &s,
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
    );
    assert!(out.ends_with("POST /c [hello world]"), "{out}");
}

#[test]
fn hostile_chunked_bodies_are_refused() {
    let s = server("chunked-bad");
    let cases: &[(&[u8], &str)] = &[
        // Decoded size over max_body (1024), announced in one chunk.
        (b"FFFFFFFFFFFFFFFF\r\n", "413"),
        // Over max_body across many small chunks.
        (&b"100\r\n"[..], "413"),
        (b"zz\r\nhi\r\n0\r\n\r\n", "400"),
        (b"11111111111111111\r\n", "400"),
        (b"2\r\nhello\r\n0\r\n\r\n", "400"),
    ];
    for (body, want) in cases {
        let mut req = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        if body == b"100\r\n" {
            for _ in 0..5 {
                req.extend_from_slice(b"100\r\n");
                req.extend_from_slice(&[b'a'; 256]);
                req.extend_from_slice(b"\r\n");
            }
        } else {
            req.extend_from_slice(body);
        }
        let out = exchange(&s, &req);
        assert!(
            out.starts_with(&format!("HTTP/1.1 {want} ")),
            "{:?}: {out}",
            String::from_utf8_lossy(body)
        );
    }
    // Both framings at once: a request-smuggling sign.
    let out = exchange(
        &s,
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    // Endless trailers stop at the head limits.
    let mut req = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
    for _ in 0..2000 {
        req.extend_from_slice(b"X-T: aaaaaaaa\r\n");
    }
    let out = exchange(&s, &req);
    assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
}

#[test]
fn chunked_parser_keeps_the_next_request() {
    let bytes = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
    let mut c = Cursor::new(bytes.to_vec());
    let r = read_request(&mut c, &Limits::default()).unwrap();
    assert_eq!(r.body, b"abc");
    let next = read_request(&mut c, &Limits::default()).unwrap();
    assert_eq!(next.path, "/next");
}

#[test]
fn head_answers_the_gets_length_without_its_body() {
    let s = server("head");
    let out = exchange(&s, b"HEAD /h HTTP/1.1\r\nConnection: close\r\n\r\n");
    let get = "GET /h []";
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert!(
        out.contains(&format!("Content-Length: {}\r\n", get.len())),
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\n"), "a body was sent: {out}");
}

/// HTTP/1.0 has no chunked coding: a request that claims it is refused
/// with 400 and the connection closed (the request after it unread).
#[test]
fn chunked_framing_on_http_1_0_is_refused_and_closes() {
    let s = server("chunked-http10");
    let out = exchange(
        &s,
        b"POST /c HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n\
          0\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
}

//! The server and client over a real Unix socket.

use std::io::{BufRead, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vt_http::{
    call, open_stream, Connection, ConnectionLimits, Connections, Handler, Limits, Peer, Reply,
    Request, Response,
};

/// Set when the endless stream's writer gave up.
static ENDLESS_ENDED: AtomicBool = AtomicBool::new(false);

struct Echo;

impl Handler for Echo {
    fn handle(&self, req: Request, peer: &Peer) -> Reply {
        if req.path == "/endless" {
            return Reply::Stream {
                content_type: "text/plain".into(),
                body: Box::new(|w| {
                    let chunk = [b'x'; 4096];
                    while w.write_all(&chunk).is_ok() {}
                    ENDLESS_ENDED.store(true, Ordering::SeqCst);
                }),
            };
        }
        if req.path == "/stream" {
            return Reply::Stream {
                content_type: "application/x-ndjson".into(),
                body: Box::new(|w| {
                    for i in 0..3 {
                        let _ = writeln!(w, "{{\"n\":{i}}}");
                    }
                }),
            };
        }
        let text = format!(
            "{} {} {} pid={} uid={}",
            req.method,
            req.path,
            String::from_utf8_lossy(&req.body),
            peer.pid,
            peer.uid
        );
        Reply::Full(Response::new(200, "text/plain", text))
    }
}

fn server(name: &str, max_connections: usize) -> PathBuf {
    server_with(name, ConnectionLimits::new(max_connections))
}

fn server_with(name: &str, connections: ConnectionLimits) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vt-http-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let limits = Limits {
        max_body: 1024,
        ..Limits::default()
    };
    let connections = Connections::new(connections);
    std::thread::spawn(move || vt_http::serve(listener, Arc::new(Echo), limits, connections));
    path
}

#[test]
fn one_shot_calls_carry_peer_credentials() {
    let s = server("oneshot", 8);
    let r = call(&s, "POST", "/x", Some(b"hi".to_vec())).unwrap();
    assert_eq!(r.status, 200);
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    assert_eq!(
        r.text(),
        format!("POST /x hi pid={} uid={uid}", std::process::id())
    );
}

#[test]
fn keep_alive_connection_serves_many_requests() {
    let s = server("keepalive", 8);
    let mut c = Connection::open(&s).unwrap();
    for i in 0..20 {
        let r = c.request("GET", &format!("/n{i}"), None).unwrap();
        assert!(r.text().starts_with(&format!("GET /n{i} ")));
    }
}

#[test]
fn oversized_body_gets_413_even_while_the_client_is_still_sending() {
    let s = server("big", 8);
    let r = call(&s, "POST", "/x", Some(vec![b'a'; 4 * 1024 * 1024])).unwrap();
    assert_eq!(r.status, 413);
    let r = call(&s, "POST", "/x", Some(vec![b'a'; 1024])).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn malformed_request_gets_400_and_close() {
    let s = server("bad", 8);
    let mut raw = UnixStream::connect(&s).unwrap();
    raw.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let mut out = String::new();
    raw.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert!(out.contains("Connection: close"));
}

#[test]
fn streams_run_until_the_server_closes() {
    let s = server("stream", 8);
    let (head, mut reader) = open_stream(&s, "GET", "/stream", None).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<String> = (&mut reader).lines().map(Result::unwrap).collect();
    assert_eq!(lines, ["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"]);
}

#[test]
fn connections_over_the_limit_get_503() {
    let s = server("limit", 2);
    let _a = Connection::open(&s).unwrap();
    let _b = Connection::open(&s).unwrap();
    // Let the server account for both before the third arrives.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let r = call(&s, "GET", "/", None).unwrap();
    assert_eq!(r.status, 503);
}

#[test]
fn connecting_to_nothing_is_a_connect_error() {
    let e = call(
        std::path::Path::new("/nonexistent/x.sock"),
        "GET",
        "/",
        None,
    )
    .unwrap_err();
    assert!(e
        .to_string()
        .starts_with("cannot connect to /nonexistent/x.sock"));
}

#[test]
fn a_request_trickling_in_gets_408_at_its_deadline() {
    let mut limits = ConnectionLimits::new(8);
    limits.request = Duration::from_millis(800);
    limits.idle = Duration::from_secs(5);
    let s = server_with("trickle", limits);
    let mut raw = UnixStream::connect(&s).unwrap();
    let start = Instant::now();
    // One byte every 100 ms: each read is far within the idle timeout.
    let head = b"GET /slow HTTP/1.1\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    for b in head {
        if raw.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let mut out = String::new();
    let _ = raw.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_stream_nobody_reads_is_ended_by_the_write_timeout() {
    let mut limits = ConnectionLimits::new(1);
    limits.write = Duration::from_millis(300);
    let s = server_with("unread", limits);
    let mut raw = UnixStream::connect(&s).unwrap();
    raw.write_all(b"GET /endless HTTP/1.1\r\n\r\n").unwrap();
    // Never read: the socket buffer fills and the writer must give up.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ENDLESS_ENDED.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the stream still holds its slot");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The one slot is free again.
    std::thread::sleep(Duration::from_millis(50));
    let r = call(&s, "GET", "/again", None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    drop(raw);
}

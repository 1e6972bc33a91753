//! Parsing requests and responses, including every way a peer can get it wrong.

use std::io::Cursor;

use vt_http::{read_request, read_response, Error, Limits, Request, Response};

fn parse(bytes: &[u8]) -> Result<Request, Error> {
    read_request(&mut Cursor::new(bytes.to_vec()), &Limits::default())
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    parse(bytes).unwrap_err().status()
}

#[test]
fn simple_get_with_query_and_headers() {
    let r = parse(b"GET /vms/a?follow=1&x HTTP/1.1\r\nHost: x\r\nX-Thing:  v  \r\n\r\n").unwrap();
    assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/vms/a"));
    assert_eq!(r.query_param("follow"), Some("1"));
    assert_eq!(r.query_param("x"), Some(""));
    assert_eq!(r.query_param("y"), None);
    assert_eq!(r.header("x-thing"), Some("v"));
    assert_eq!(r.header("X-THING"), Some("v"));
    assert!(r.keep_alive());
    assert!(r.body.is_empty());
}

#[test]
fn keep_alive_rules() {
    assert!(!parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive());
    assert!(parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap()
        .keep_alive());
    assert!(!parse(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
        .unwrap()
        .keep_alive());
}

#[test]
fn body_by_content_length_and_pipelining() {
    let mut c = Cursor::new(
        b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\n\n".to_vec(),
    );
    let l = Limits::default();
    let a = read_request(&mut c, &l).unwrap();
    assert_eq!(a.body, b"hello");
    let b = read_request(&mut c, &l).unwrap();
    assert_eq!(b.path, "/b");
    assert!(matches!(read_request(&mut c, &l), Err(Error::Closed)));
}

#[test]
fn empty_input_is_a_clean_close() {
    assert!(matches!(parse(b""), Err(Error::Closed)));
    assert!(matches!(parse(b"\r\n\r\n"), Err(Error::Closed)));
}

#[test]
fn malformed_requests_are_400() {
    for bad in [
        &b"GET\r\n\r\n"[..],
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"GET vms HTTP/1.1\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"GET / FOO/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\n: empty\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 12a\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET /\xff HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: \xff\xfe\r\n\r\n",
    ] {
        assert_eq!(
            status_of(bad),
            Some(400),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn unsupported_features() {
    assert_eq!(status_of(b"GET / HTTP/2.0\r\n\r\n"), Some(505));
    assert_eq!(
        status_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        Some(501)
    );
}

#[test]
fn size_limits() {
    let l = Limits {
        max_head: 64,
        max_headers: 2,
        max_body: 10,
    };
    let p = |b: &[u8]| read_request(&mut Cursor::new(b.to_vec()), &l).unwrap_err();
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100));
    assert_eq!(p(long.as_bytes()).status(), Some(431));
    assert_eq!(
        p(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n").status(),
        Some(431)
    );
    // The body is refused from its declared length, before it is read.
    let e = p(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n");
    assert!(matches!(e, Error::BodyTooLarge(11)));
    assert_eq!(e.status(), Some(413));
    // Exactly at the limit is fine.
    let ok = read_request(
        &mut Cursor::new(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789".to_vec()),
        &l,
    )
    .unwrap();
    assert_eq!(ok.body.len(), 10);
    // A head line that never ends is cut at the limit.
    let endless = vec![b'A'; 10_000];
    assert_eq!(p(&endless).status(), Some(431));
}

#[test]
fn truncated_messages_are_io_errors_without_an_answer() {
    for cut in [
        &b"GET / HTTP/1.1"[..],
        b"GET / HTTP/1.1\r\nA: b",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
    ] {
        let e = parse(cut).unwrap_err();
        assert!(matches!(e, Error::Io(_)), "{e:?}");
        assert_eq!(e.status(), None);
    }
}

#[test]
fn request_and_response_round_trip() {
    let mut req = Request::new("PUT", "/vm.pause?now=1", Some(b"{}".to_vec()));
    req.headers.push(("X-A".into(), "b".into()));
    let mut wire = Vec::new();
    req.write_to(&mut wire, false).unwrap();
    let back = parse(&wire).unwrap();
    assert_eq!(
        (back.method.as_str(), back.path.as_str()),
        ("PUT", "/vm.pause")
    );
    assert_eq!(back.query, "now=1");
    assert_eq!(back.body, b"{}");
    assert!(!back.keep_alive());

    let resp = Response::json(409, r#"{"error":"x"}"#);
    let mut wire = Vec::new();
    resp.write_to(&mut wire, true).unwrap();
    let back = read_response(&mut Cursor::new(wire), &Limits::default()).unwrap();
    assert_eq!(back.status, 409);
    assert_eq!(back.header("content-type"), Some("application/json"));
    assert_eq!(back.text(), r#"{"error":"x"}"#);
}

#[test]
fn response_without_length_runs_to_eof_within_limits() {
    let wire = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nline1\nline2\n".to_vec();
    let r = read_response(&mut Cursor::new(wire), &Limits::default()).unwrap();
    assert_eq!(r.text(), "line1\nline2\n");
    let l = Limits {
        max_body: 4,
        ..Limits::default()
    };
    let wire = b"HTTP/1.1 200 OK\r\n\r\n0123456789".to_vec();
    assert!(matches!(
        read_response(&mut Cursor::new(wire), &l),
        Err(Error::BodyTooLarge(_))
    ));
    for bad in [
        &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
        b"HTTP/1.1 abc\r\n\r\n",
        b"HTTP/1.1\r\n\r\n",
    ] {
        assert!(read_response(&mut Cursor::new(bad.to_vec()), &l).is_err());
    }
}

//! `vt-api-call`: a test helper for places without an HTTP client (the
//! lab's busybox): one request on a `vt-vmm --api-socket`, the answer's
//! status and body on stdout.
//!
//! ```text
//! vt-api-call SOCKET METHOD PATH [BODY]
//! ```
//!
//! Exit status: 0 for a 2xx answer, 1 for any other, 2 for bad use or a
//! socket that cannot be reached.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (socket, method, path) = match args.as_slice() {
        [s, m, p] | [s, m, p, _] => (s, m, p),
        _ => {
            eprintln!("usage: vt-api-call SOCKET METHOD PATH [BODY]");
            return ExitCode::from(2);
        }
    };
    let body = args.get(3).map_or("", String::as_str);
    let answer = (|| -> std::io::Result<String> {
        let mut s = UnixStream::connect(socket)?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: vt\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })();
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vt-api-call: {socket}: {e}");
            return ExitCode::from(2);
        }
    };
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    println!("{status} {body}");
    if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

//! Issue 15, case 6: one non-root client opening connections that trickle
//! a byte now and then cannot lock root (or other users) out of `vtd`.

mod common;

use std::io::{BufRead, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Vtd;

/// The uid (and gid) of the flooding client.
const FLOODER: u32 = 65534;
/// More than vtd's whole connection table.
const FLOOD: usize = 600;

/// Not a test on its own: the flooding client, run as [`FLOODER`] by
/// [`a_flood_of_trickling_connections_locks_nobody_out`] (this test binary
/// re-executed with `VT_FLOOD_SOCKET` set).
#[test]
fn flood_helper() {
    let Some(socket) = std::env::var_os("VT_FLOOD_SOCKET") else {
        return;
    };
    let mut held = Vec::new();
    for _ in 0..FLOOD {
        if let Ok(mut c) = UnixStream::connect(&socket) {
            // A request begun, never finished.
            let _ = c.write_all(b"G");
            held.push(c);
        }
    }
    println!("held {}", held.len());
    std::io::stdout().flush().unwrap();
    // Trickle one byte a second on each until the parent closes stdin.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    while rx.recv_timeout(Duration::from_secs(1)).is_err() {
        for c in &mut held {
            let _ = c.write_all(b"E");
        }
    }
}

#[test]
fn a_flood_of_trickling_connections_locks_nobody_out() {
    let vtd = Vtd::start_with_args("flood", &["--socket-group", &FLOODER.to_string()]);
    use std::os::unix::process::CommandExt;
    let mut flooder = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "flood_helper",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("VT_FLOOD_SOCKET", &vtd.socket)
        .uid(FLOODER)
        .gid(FLOODER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(flooder.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("held ") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the flooder ended");
    }
    // Let vtd take every connection it will.
    std::thread::sleep(Duration::from_millis(300));
    // Root is answered, at once, on the admin socket and the read-only one.
    for socket in [vtd.socket.clone(), vtd.socket.with_file_name("vtd-ro.sock")] {
        let t = Instant::now();
        let r = vt_http::call(&socket, "GET", "/vms", None).unwrap();
        assert_eq!(r.status, 200, "{}: {}", socket.display(), r.text());
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    let list = vtd.vt(&["list"]);
    assert!(list.status.success(), "{list:?}");
    // Another user too (the read-only socket).
    let other = vtd.vt_as(
        FLOODER - 1,
        &vtd.socket.with_file_name("vtd-ro.sock"),
        &["list"],
    );
    assert!(other.status.success(), "{other:?}");
    // The flooder itself gets no more than its share.
    let mine = vtd.vt_as(FLOODER, &vtd.socket, &["list"]);
    assert!(!mine.status.success());
    let err = String::from_utf8_lossy(&mine.stderr);
    assert!(err.contains("too many connections"), "{err}");
    drop(flooder.stdin.take());
    let _ = flooder.kill();
    let _ = flooder.wait();
}

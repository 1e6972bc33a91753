//! The systemd unit (contrib/systemd/vtd.service) and vtd's readiness
//! notification. systemd is not PID 1 on the test hosts, so the unit is
//! checked with `systemd-analyze verify` and `READY=1` is received on a
//! `NOTIFY_SOCKET` of the test's own, as systemd would receive it.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

const UNIT: &str = include_str!("../../../contrib/systemd/vtd.service");

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vtd-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_unit_file_verifies_without_a_warning() {
    let Some(analyze) = network::find_program("systemd-analyze") else {
        eprintln!("skipped: no systemd-analyze");
        return;
    };
    for line in ["Type=notify", "KillMode=process", "NotifyAccess=main"] {
        assert!(UNIT.lines().any(|l| l == line), "the unit lacks {line}");
    }
    let dir = scratch("unit");
    // The unit names the installed vtd; verify checks that it exists.
    let unit = UNIT.replace("/usr/local/bin/vtd", env!("CARGO_BIN_EXE_vtd"));
    assert_ne!(unit, UNIT);
    let path = dir.join("vtd.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // systemd-analyze exits 0 on settings it ignores: none allowed.
    assert!(err.trim().is_empty(), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vtd_sends_ready_once_its_socket_answers() {
    let dir = scratch("notify");
    let notify = dir.join("notify.sock");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let socket = dir.join("vtd.sock");
    let mut vtd = Command::new(env!("CARGO_BIN_EXE_vtd"))
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--jail")
        .arg("off")
        .env("NOTIFY_SOCKET", &notify)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let got = listener.recv(&mut buf);
    // Asked right away: READY=1 comes only once the API answers.
    let answered = vt_http::call(&socket, "GET", "/vms", None).map(|r| r.status);
    let _ = vtd.kill();
    let _ = vtd.wait();
    let n = got.expect("no notification from vtd");
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    let status = format!("STATUS=serving {} (0 VMs defined)", socket.display());
    assert!(msg.lines().any(|l| l == status), "{msg}");
    assert_eq!(answered.ok(), Some(200));
    let _ = std::fs::remove_dir_all(&dir);
}

//! `vt` whose reader went away (`vt ... | head`) ends by SIGPIPE, as cat
//! does, not by a panic in `println!` (exit 101 and a backtrace hint).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

#[test]
fn a_closed_pipe_ends_vt_quietly() {
    // `completions bash` writes ~120 KiB: more than a pipe holds.
    let mut child = Command::new(env!("CARGO_BIN_EXE_vt"))
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vt");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for vt");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

//! The `vt-logger` binary as vtd runs it: lines on standard input end up
//! in the log file, rotated between lines, the newest kept; bad arguments
//! are a usage error. (Also makes `cargo test --workspace` build the
//! binary that vtd's own tests start beside `vtd`.)

use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn input_is_logged_whole_lines_rotated_newest_kept() {
    let dir = std::env::temp_dir().join(format!("vt-logger-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("console.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vt-logger"))
        .args(["--max-bytes", "4096", "--files", "2"])
        .arg(&log)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run vt-logger");
    let mut input = child.stdin.take().unwrap();
    for i in 0..1000 {
        writeln!(input, "line {i:04} of the console").unwrap();
    }
    drop(input);
    assert!(child.wait().unwrap().success());
    let mut kept = String::new();
    for f in ["console.log.2", "console.log.1", "console.log"] {
        if let Ok(t) = std::fs::read_to_string(dir.join(f)) {
            assert!(t.len() <= 2 * 4096, "{f}: {} bytes", t.len());
            kept.push_str(&t);
        }
    }
    let lines: Vec<&str> = kept.lines().collect();
    assert!(lines.len() > 100, "{} lines kept", lines.len());
    assert_eq!(lines.last(), Some(&"line 0999 of the console"));
    // Whole lines, in order, none missing from the first one kept.
    let first: usize = lines[0][5..9].parse().unwrap();
    for (k, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("line {:04} of the console", first + k));
    }
    assert!(!dir.join("console.log.3").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_are_a_usage_error() {
    for args in [
        &["--files", "2", "/tmp/x"][..],
        &["--max-bytes", "0", "--files", "1", "/tmp/x"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vt-logger"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: vt-logger"));
    }
}

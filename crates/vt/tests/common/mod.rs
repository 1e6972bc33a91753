//! Helpers for the `vt image` tests: scratch directories and running
//! `vt` or qemu-img in them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Scratch(pub PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn scratch(name: &str) -> Scratch {
    let p = std::env::temp_dir().join(format!("vt-image-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    Scratch(p)
}

/// Runs `prog` in `dir` (so relative names are what both tools see).
pub fn run(dir: &Path, prog: &str, args: &[&str]) -> Output {
    let prog = if prog == "vt" {
        env!("CARGO_BIN_EXE_vt")
    } else {
        prog
    };
    Command::new(prog)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

pub fn ok(dir: &Path, prog: &str, args: &[&str]) -> String {
    let out = run(dir, prog, args);
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn code(dir: &Path, prog: &str, args: &[&str]) -> i32 {
    run(dir, prog, args).status.code().unwrap_or(-1)
}

pub fn json(dir: &Path, prog: &str, file: &str) -> serde_json::Value {
    let args = ["image", "info", "--output=json", file];
    let args = if prog == "vt" { &args[..] } else { &args[1..] };
    serde_json::from_str(&ok(dir, prog, args)).unwrap()
}

pub fn vt_image(dir: &Path, args: &[&str]) -> String {
    let mut a = vec!["image"];
    a.extend_from_slice(args);
    ok(dir, "vt", &a)
}

pub fn vt_code(dir: &Path, args: &[&str]) -> i32 {
    let mut a = vec!["image"];
    a.extend_from_slice(args);
    code(dir, "vt", &a)
}

/// Runs qemu-io on `img` (format `fmt`) with each of `cmds` as a `-c`.
pub fn qemu_io(d: &Path, fmt: &str, img: &str, cmds: &[&str]) {
    let mut a = vec!["-f", fmt];
    for c in cmds {
        a.extend(["-c", c]);
    }
    a.push(img);
    ok(d, "qemu-io", &a);
}

/// `qemu-img check` finds `img` clean (no corruption, no leak).
pub fn clean(d: &Path, img: &str) {
    let out = run(d, "qemu-img", &["check", img]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "qemu-img check {img}:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `qemu-img compare` finds the raw file `raw` and the image `img` equal.
pub fn same(d: &Path, raw: &str, img: &str) {
    ok(d, "qemu-img", &["compare", "-f", "raw", raw, img]);
}

//! `vt run` is `vt-vmm` in the foreground: same flags, output and exit status.

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn vt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vt"));
    // Built by the same `cargo test` run; `vt` also finds it beside itself.
    let vmm = PathBuf::from(env!("CARGO_BIN_EXE_vt")).with_file_name("vt-vmm");
    c.env("VT_VMM", vmm);
    c.stdin(Stdio::null());
    c
}

#[test]
fn run_boots_the_tiny_guest_and_passes_the_exit_status() {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vt-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let k = dir.join("tiny.elf");
    std::fs::write(&k, tinyguest::elf("via vt run\n", true)).unwrap();
    let out = vt()
        .args(["run", "--memory", "16", "--kernel"])
        .arg(&k)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via vt run\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn run_reports_bad_flags_like_the_vmm() {
    let out = vt()
        .args(["run", "--kernel", "/x", "--cpus", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("vCPU count must be between 1 and 254"));
}

//! vt-vmm's log on stderr (vmm.log under vtd): journald priority prefixes
//! off a terminal, no escape codes, and the level from VT_LOG (its
//! `VM built` line is at debug).

use std::process::{Command, Stdio};

fn require_kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Runs a tiny guest that powers off, with `VT_LOG=filter`; its stderr.
fn run(filter: Option<&str>) -> String {
    let dir = std::env::temp_dir().join(format!("vt-vmm-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join(format!("guest-{}", filter.unwrap_or("none")));
    std::fs::write(&kernel, tinyguest::elf("logged guest\n", true)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vt-vmm"));
    cmd.arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "16", "--serial", "null"])
        .stdin(Stdio::null())
        .env_remove("VT_LOG");
    if let Some(f) = filter {
        cmd.env("VT_LOG", f);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn the_vmm_logs_for_journald_at_the_vt_log_level() {
    if !require_kvm() {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    }
    // By default (info) stderr has no log lines: a VMM run by hand ends
    // with its one-line verdict only.
    let default = run(None);
    assert!(!default.contains("VM built"), "{default}");
    let debug = run(Some("debug"));
    let built = debug
        .lines()
        .find(|l| l.contains("VM built"))
        .unwrap_or_else(|| panic!("{debug}"));
    assert!(built.starts_with("<7>"), "{built}");
    assert!(
        built.contains(" debug vt-vmm: VM built vcpus=1 memory_mib=16"),
        "{built}"
    );
    assert!(!debug.contains('\x1b'), "{debug}");
    // A per-target filter.
    assert!(run(Some("warn,vmm=debug")).contains("VM built"));
    assert!(!run(Some("debug,vmm=info")).contains("VM built"));
    // A filter that does not parse: said so, and info is used.
    let bad = run(Some("vmm=nonsense-level"));
    assert!(bad.contains("VT_LOG=vmm=nonsense-level"), "{bad}");
    assert!(!bad.contains("VM built"), "{bad}");
}

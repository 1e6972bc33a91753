//! Disk formats through the manager: `vt create` makes qcow2 images and
//! linked clones, decides each disk's format once and stores it in the
//! definition, and `vtd` passes it to the VMM as `format=` (qemu-img, from
//! Debian's qemu-utils, checks the images).

mod common;

use std::process::Command;

use common::{require_kvm, Vtd};

fn qemu_info(path: &std::path::Path) -> serde_json::Value {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ok(vtd: &Vtd, args: &[&str]) {
    let out = vtd.vt(args);
    assert!(
        out.status.success(),
        "vt {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn create_makes_qcow2_and_linked_clones_and_stores_formats() {
    let vtd = Vtd::start("disks");
    let d = &vtd.dir;
    ok(
        &vtd,
        &[
            "create",
            "--name",
            "q",
            "--disk",
            "path=base.qcow2,format=qcow2,size=1",
        ],
    );
    let base = qemu_info(&d.join("base.qcow2"));
    assert_eq!(base["format"], "qcow2");
    assert_eq!(base["virtual-size"], 1u64 << 30);
    ok(
        &vtd,
        &[
            "create",
            "--name",
            "c",
            "--disk",
            "path=clone.qcow2,backing=base.qcow2",
        ],
    );
    let clone = qemu_info(&d.join("clone.qcow2"));
    assert_eq!(clone["format"], "qcow2");
    assert_eq!(clone["virtual-size"], 1u64 << 30);
    assert_eq!(
        clone["backing-filename"],
        d.join("base.qcow2").display().to_string()
    );
    assert_eq!(clone["backing-filename-format"], "qcow2");
    // vt info shows each disk's format and allocation.
    let out = vtd.vt(&["info", "c"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("clone.qcow2 (qcow2, "), "{text}");
    assert!(text.contains(" allocated of 1 GiB)"), "{text}");
    // An existing image given without format= is probed once, here.
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(d.join("old.qcow2"))
        .arg("1M")
        .status()
        .unwrap();
    assert!(out.success());
    ok(
        &vtd,
        &[
            "create",
            "--name",
            "o",
            "--disk",
            "path=old.qcow2",
            "--disk",
            "path=r.img,size=1",
        ],
    );
    for (vm, want) in [("q", "qcow2"), ("c", "qcow2")] {
        let s = vtd.status(vm);
        assert_eq!(
            s.definition.disks[0].format.map(|f| f.name()),
            Some(want),
            "{vm}"
        );
    }
    let s = vtd.status("o");
    let formats: Vec<_> = s
        .definition
        .disks
        .iter()
        .map(|d| d.format.map(|f| f.name()))
        .collect();
    assert_eq!(formats, [Some("qcow2"), Some("raw")]);
    // backing= with format=raw, an unknown format, format=qcow2 on a raw file.
    for spec in [
        "path=x.img,backing=base.qcow2,format=raw",
        "path=x.img,format=vmdk,size=1",
        "path=r.img,format=qcow2",
    ] {
        let out = vtd.vt(&["create", "--name", "bad", "--disk", spec]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{spec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!d.join("x.img").exists());

    require_kvm!();
    ok(&vtd, &["start", "c"]);
    let pid = vtd.status("c").pid.expect("running VM has a pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    // Jailed: vtd opened the clone and its base (as the owner) and passed
    // both; the VMM has no path to either.
    assert!(cmdline.contains(",format=qcow2,backing_fds="), "{cmdline}");
    assert!(!cmdline.contains("clone.qcow2"), "{cmdline}");
    // The running clone holds its base shared: a writer on the base is refused.
    let out = vtd.vt(&["image", "resize", "base.qcow2", "+1M"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another process"));
    ok(&vtd, &["stop", "c"]);
}

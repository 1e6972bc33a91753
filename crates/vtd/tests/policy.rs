//! Policy switches: each flipped, and its effect seen (a refused define
//! or start, then an allowed one); runtime against persistent; unknown
//! names; every change and refusal in the action log.

mod common;

use std::path::Path;
use std::process::Command;

use api::manager::VmState;
use api::network::PolicySwitch;
use common::Vtd;

fn set(vtd: &Vtd, name: &str, on: bool, persistent: bool) {
    let body = format!(r#"{{"state":{on},"persistent":{persistent}}}"#);
    vtd.expect("PUT", &format!("/policy/{name}"), Some(&body), 200);
}

fn switches(vtd: &Vtd) -> Vec<PolicySwitch> {
    serde_json::from_value(vtd.expect("GET", "/policy", None, 200)).unwrap()
}

fn state(vtd: &Vtd, name: &str) -> (bool, bool) {
    let s = switches(vtd).into_iter().find(|s| s.name == name).unwrap();
    (s.state, s.persistent)
}

/// A VM with one disk (and more JSON fields).
fn vm(name: &str, disk: &Path, extra: &str) -> String {
    format!(
        r#"{{"name":"{name}","memory_mib":16,"disks":[{{"path":"{}"{extra}}}]}}"#,
        disk.display()
    )
}

fn refused(vtd: &Vtd, method: &str, path: &str, body: Option<&str>, text: &str) {
    let r = vtd.call(method, path, body);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains(text), "wanted '{text}' in {}", r.text());
}

/// The details of the audit records of `action` (`vt audit search`).
fn audited(vtd: &Vtd, action: &str) -> Vec<String> {
    let out = vtd.vt(&["audit", "search", "--action", action, "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    recs.iter()
        .map(|r| format!("{} {} {}", r["vm"], r["result"], r["detail"]))
        .collect()
}

fn image(p: &Path) {
    std::fs::write(p, vec![0u8; 1 << 20]).unwrap();
}

#[test]
fn switches_list_set_persist_and_refuse_unknown_names() {
    let mut vtd = Vtd::start_with_args("policy", &["--socket-group", "4242"]);
    let all = switches(&vtd);
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "vm_inter_vm_traffic",
            "vm_use_nfs",
            "vm_use_fusefs",
            "vm_host_paths",
            "vm_shared_disks",
            "vm_unconfined",
            "vm_host_devices"
        ]
    );
    assert!(all.iter().all(|s| !s.description.is_empty()));
    assert_eq!(state(&vtd, "vm_host_paths"), (true, true));
    assert_eq!(state(&vtd, "vm_host_devices"), (false, false));

    // vt policy: unknown names, bad values.
    let out = vtd.vt(&["policy", "set", "vm_nope", "on"]);
    assert_eq!(out.status.code(), Some(4));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("no policy switch named 'vm_nope'") && e.contains("vm_use_nfs"),
        "{e}"
    );
    let out = vtd.vt(&["policy", "set", "vm_use_nfs", "maybe"]);
    assert_eq!(out.status.code(), Some(2));
    // Only root changes them (a member of the socket group may not).
    let out = vtd.vt_as(4242, &vtd.socket, &["policy", "set", "vm_use_nfs", "on"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("only root may change policy switches"));
    assert_eq!(state(&vtd, "vm_use_nfs"), (false, false));

    // Runtime only: gone after a restart; --persistent: kept.
    let out = vtd.vt(&["policy", "set", "vm_host_devices", "on"]);
    assert!(out.status.success());
    assert_eq!(state(&vtd, "vm_host_devices"), (true, false));
    let out = vtd.vt(&["policy", "set", "vm_use_nfs", "on", "--persistent"]);
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&vtd.vt(&["policy", "list"]).stdout).into_owned();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("vm_use_nfs") && l.contains(" on ")),
        "{listed}"
    );
    vtd.kill9();
    vtd.restart();
    assert_eq!(state(&vtd, "vm_host_devices"), (false, false));
    assert_eq!(state(&vtd, "vm_use_nfs"), (true, true));
    // Each change is in the audit trail, with the old and new value.
    let l = audited(&vtd, "policy.set").join("\n");
    assert!(l.contains("vm_host_devices off -> on"), "{l}");
    assert!(l.contains("vm_use_nfs off -> on (persistent)"), "{l}");
}

#[test]
fn vm_host_paths_keeps_files_in_the_storage_dirs() {
    let dir = std::env::temp_dir().join(format!("vtd-store-{}", std::process::id()));
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let vtd = Vtd::start_with_args("hostpaths", &["--storage-dir", images.to_str().unwrap()]);
    let inside = images.join("in.img");
    let outside = vtd.dir.join("out.img");
    image(&inside);
    image(&outside);
    std::os::unix::fs::symlink(&outside, images.join("link.img")).unwrap();
    // On by default: anywhere.
    vtd.expect("POST", "/vms", Some(&vm("out1", &outside, "")), 201);
    set(&vtd, "vm_host_paths", false, false);
    refused(
        &vtd,
        "POST",
        "/vms",
        Some(&vm("out2", &outside, "")),
        "is outside the storage directories",
    );
    // A symlink in the storage directory to a file outside is outside.
    refused(
        &vtd,
        "POST",
        "/vms",
        Some(&vm("out3", &images.join("link.img"), "")),
        "outside",
    );
    // The default kernel (outside too) is the admin's: allowed.
    vtd.expect("POST", "/vms", Some(&vm("in1", &inside, "")), 201);
    // A VM defined earlier is checked again at start.
    refused(
        &vtd,
        "POST",
        "/vms/out1/start",
        None,
        "vt policy set vm_host_paths on",
    );
    let records = audited(&vtd, "start.refused");
    assert!(
        records
            .iter()
            .any(|r| r.contains("\"out1\" \"denied\"")
                && r.contains("outside the storage directories")),
        "refusal not in the audit trail: {records:?}"
    );
    // A qcow2 inside whose backing file is outside: caught on the files
    // opened for the VMM (the definition names only the top image).
    let base = vtd.dir.join("base.qcow2");
    let clone = images.join("clone.qcow2");
    for args in [
        vec![
            "image",
            "create",
            "-f",
            "qcow2",
            base.to_str().unwrap(),
            "1M",
        ],
        vec![
            "image",
            "create",
            "-f",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "qcow2",
            clone.to_str().unwrap(),
        ],
    ] {
        let out = vtd.vt(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let body = vm("clone", &clone, r#","format":"qcow2""#);
    vtd.expect("POST", "/vms", Some(&body), 201);
    if jail::is_root() {
        refused(&vtd, "POST", "/vms/clone/start", None, "backing file");
    }
    set(&vtd, "vm_host_paths", true, false);
    vtd.expect("POST", "/vms", Some(&vm("out2", &outside, "")), 201);
    if common::have_kvm() {
        vtd.expect("POST", "/vms/out1/start", None, 200);
        vtd.expect("POST", "/vms/out1/stop", None, 200);
    }
    drop(vtd);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shareable_disks_need_vm_shared_disks() {
    let vtd = Vtd::start("shared");
    let disk = vtd.dir.join("shared.img");
    image(&disk);
    refused(
        &vtd,
        "POST",
        "/vms",
        Some(&vm("s1", &disk, r#","shareable":true"#)),
        "is shareable=on: refused by policy",
    );
    set(&vtd, "vm_shared_disks", true, false);
    vtd.expect(
        "POST",
        "/vms",
        Some(&vm("s1", &disk, r#","shareable":true"#)),
        201,
    );
    vtd.expect(
        "POST",
        "/vms",
        Some(&vm("s2", &disk, r#","shareable":true"#)),
        201,
    );
    vtd.expect("POST", "/vms", Some(&vm("locked1", &disk, "")), 201);
    vtd.expect("POST", "/vms", Some(&vm("locked2", &disk, "")), 201);
    if common::have_kvm() {
        // Without shareable=on the image's lock keeps a second VM out...
        vtd.expect("POST", "/vms/locked1/start", None, 200);
        // start answers once the VM is built: this one never was.
        let r = vtd.call("POST", "/vms/locked2/start", None);
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(
            r.text().contains("in use by another process"),
            "{}",
            r.text()
        );
        assert_eq!(vtd.status("locked2").state, VmState::Stopped);
        vtd.expect("POST", "/vms/locked1/stop", None, 200);
        // ...shared, both VMs write the one image (no lock taken).
        vtd.expect("POST", "/vms/s1/start", None, 200);
        vtd.expect("POST", "/vms/s2/start", None, 200);
        vtd.expect("POST", "/vms/s2/stop", None, 200);
        set(&vtd, "vm_shared_disks", false, false);
        refused(&vtd, "POST", "/vms/s2/start", None, "shareable=on");
        vtd.expect("POST", "/vms/s1/stop", None, 200);
    }
}

#[test]
fn unconfined_vms_need_vm_unconfined() {
    common::require_kvm!();
    if !jail::is_root() {
        eprintln!("skipped: the cell needs root");
        return;
    }
    let vtd = Vtd::start("unconfined");
    let body = r#"{"name":"free","memory_mib":16,"unconfined":true}"#;
    refused(
        &vtd,
        "POST",
        "/vms",
        Some(body),
        "to run without its cell: refused by policy",
    );
    set(&vtd, "vm_unconfined", true, false);
    vtd.expect("POST", "/vms", Some(body), 201);
    vtd.define("caged");
    vtd.expect("POST", "/vms/free/start", None, 200);
    vtd.expect("POST", "/vms/caged/start", None, 200);
    let free = vtd.status("free");
    let caged = vtd.status("caged");
    assert_eq!(free.state, VmState::Running);
    // Unconfined: the VMM runs as vtd's uid (root), no cell.
    assert!(free.confinement.is_none(), "{free:?}");
    let uid = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!(uid(free.pid.unwrap()), "0");
    assert_ne!(uid(caged.pid.unwrap()), "0");
    assert!(caged.confinement.is_some());
    vtd.expect("POST", "/vms/free/stop", None, 200);
    set(&vtd, "vm_unconfined", false, false);
    refused(
        &vtd,
        "POST",
        "/vms/free/start",
        None,
        "vt policy set vm_unconfined on",
    );
    vtd.expect("POST", "/vms/caged/stop", None, 200);
}

/// A squashfuse mount, unmounted when dropped.
struct Fuse(std::path::PathBuf);

impl Drop for Fuse {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn images_on_fuse_need_vm_use_fusefs() {
    let tools = ["squashfuse", "mksquashfs"]
        .iter()
        .all(|t| network::find_program(t).is_some());
    if !tools || !Path::new("/dev/fuse").exists() || !jail::is_root() {
        eprintln!("skipped: needs root, /dev/fuse, squashfuse and squashfs-tools");
        return;
    }
    let vtd = Vtd::start("fuse");
    let src = vtd.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    image(&src.join("disk.img"));
    let sqfs = vtd.dir.join("img.sqfs");
    let mnt = vtd.dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mk = Command::new(network::find_program("mksquashfs").unwrap())
        .args([&src, &sqfs])
        .args(["-quiet", "-noappend", "-no-progress"])
        .output()
        .unwrap();
    assert!(
        mk.status.success(),
        "{}",
        String::from_utf8_lossy(&mk.stderr)
    );
    // allow_other: a FUSE file system answers only its mounter's uid
    // otherwise, and a jailed VMM runs as its VM's own uid.
    let m = Command::new(network::find_program("squashfuse").unwrap())
        .args(["-o", "allow_other"])
        .args([&sqfs, &mnt])
        .output()
        .unwrap();
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let _mount = Fuse(mnt.clone());
    let disk = mnt.join("disk.img");
    let ro = r#","readonly":true"#;
    refused(
        &vtd,
        "POST",
        "/vms",
        Some(&vm("f", &disk, ro)),
        "is on a FUSE file system: refused by policy",
    );
    set(&vtd, "vm_use_fusefs", true, false);
    vtd.expect("POST", "/vms", Some(&vm("f", &disk, ro)), 201);
    if common::have_kvm() {
        vtd.expect("POST", "/vms/f/start", None, 200);
        assert_eq!(vtd.status("f").state, VmState::Running);
        vtd.expect("POST", "/vms/f/stop", None, 200);
    }
    set(&vtd, "vm_use_fusefs", false, false);
    refused(
        &vtd,
        "POST",
        "/vms/f/start",
        None,
        "vt policy set vm_use_fusefs on",
    );
    let records = audited(&vtd, "start.refused");
    assert!(
        records.iter().any(|r| r.contains("on a FUSE file system")),
        "{records:?}"
    );
}

//! Editing VMs (issue 12 part 4): `PATCH /vms/NAME` (a JSON merge patch),
//! `vt edit`, `vt autostart`, `vt dumpdef` / `vt define`. A stopped VM
//! changes at once; a running one at its next start; every change is
//! checked like a new definition, and a refused one changes nothing.

mod common;

use std::process::Output;

use api::manager::{VmDefinition, VmState};
use common::Vtd;

const MEMBER: u32 = 60_010;
const OTHER: u32 = 60_011;

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn refused(o: Output, code: i32, text: &str) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{e}");
    assert!(e.contains(text), "wanted '{text}' in: {e}");
}

fn definition(vtd: &Vtd, name: &str) -> VmDefinition {
    let v = vtd.expect("GET", &format!("/vms/{name}/definition"), None, 200);
    serde_json::from_value(v).unwrap()
}

fn stored(vtd: &Vtd, name: &str) -> VmDefinition {
    let p = vtd.state.join("vms").join(name).join("definition.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn pending_file(vtd: &Vtd, name: &str) -> std::path::PathBuf {
    vtd.state
        .join("vms")
        .join(name)
        .join("definition.next.json")
}

#[test]
fn a_stopped_vm_changes_at_once_and_on_disk() {
    let vtd = Vtd::start("editstopped");
    vtd.define("e");
    let out = ok(vtd.vt(&[
        "edit",
        "e",
        "--memory",
        "32",
        "--vcpus",
        "2",
        "--cmdline",
        "console=ttyS0 quiet",
        "--autostart",
        "on",
    ]));
    assert_eq!(out, "e: changed\n");
    let d = vtd.status("e").definition;
    assert_eq!((d.memory_mib, d.vcpus, d.autostart), (32, 2, true));
    assert_eq!(d.cmdline, "console=ttyS0 quiet");
    assert_eq!(stored(&vtd, "e"), d);
    assert!(!pending_file(&vtd, "e").exists());
    assert!(!vtd.status("e").pending_changes);
    // Disks: added (the image made, as vt create makes it) and removed.
    let img = vtd.dir.join("extra.img");
    ok(vtd.vt(&[
        "edit",
        "e",
        "--disk-add",
        &format!("path={},size=1", img.display()),
    ]));
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 1 << 30);
    let d = vtd.status("e").definition;
    assert_eq!(d.disks.len(), 1);
    assert_eq!(d.disks[0].format, Some(api::DiskFormat::Raw));
    ok(vtd.vt(&["edit", "e", "--disk-remove", img.to_str().unwrap()]));
    assert!(vtd.status("e").definition.disks.is_empty());
    assert!(img.exists(), "the image is kept");
    refused(
        vtd.vt(&["edit", "e", "--disk-remove", img.to_str().unwrap()]),
        2,
        "has no such disk",
    );
    // NICs: added with a MAC, removed by MAC.
    ok(vtd.vt(&[
        "edit",
        "e",
        "--network-add",
        "bridge=vtbr9,mac=52:54:00:AA:00:01",
    ]));
    let d = vtd.status("e").definition;
    assert_eq!(d.networks[0].mac.as_deref(), Some("52:54:00:aa:00:01"));
    ok(vtd.vt(&["edit", "e", "--network-remove", "52:54:00:aa:00:01"]));
    assert!(vtd.status("e").definition.networks.is_empty());
    // vt autostart.
    ok(vtd.vt(&["autostart", "e", "--disable"]));
    assert!(!vtd.status("e").definition.autostart);
    ok(vtd.vt(&["autostart", "e"]));
    assert!(stored(&vtd, "e").autostart);
}

#[test]
fn a_running_vm_gets_its_change_at_the_next_start() {
    common::require_kvm!();
    let vtd = Vtd::start("editrunning");
    vtd.define("r");
    ok(vtd.vt(&["start", "r"]));
    let out = ok(vtd.vt(&["edit", "r", "--memory", "24"]));
    assert_eq!(out, "r: changed; pending changes apply at next start\n");
    let s = vtd.status("r");
    assert!(s.pending_changes);
    assert_eq!(s.definition.memory_mib, 16, "what runs is unchanged");
    assert_eq!(definition(&vtd, "r").memory_mib, 24);
    assert_eq!(stored(&vtd, "r").memory_mib, 16);
    let info = ok(vtd.vt(&["info", "r"]));
    assert!(
        info.contains("Changes:   pending changes apply at next start"),
        "{info}"
    );
    ok(vtd.vt(&["stop", "r"]));
    assert!(
        vtd.status("r").pending_changes,
        "still pending while stopped"
    );
    ok(vtd.vt(&["start", "r"]));
    let s = vtd.status("r");
    assert!(!s.pending_changes);
    assert_eq!(s.definition.memory_mib, 24);
    assert_eq!(stored(&vtd, "r").memory_mib, 24);
    assert!(!pending_file(&vtd, "r").exists());
    // The VMM that runs now was given the new size.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", s.pid.unwrap())).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = args.iter().position(|a| a == "--memory").unwrap();
    assert!(args[at + 1].starts_with("24"), "{args:?}");
    ok(vtd.vt(&["stop", "r"]));
}

#[test]
fn a_pending_change_waits_for_the_start_after_a_vtd_restart() {
    common::require_kvm!();
    let mut vtd = Vtd::start("editrestart");
    vtd.define("p");
    ok(vtd.vt(&["start", "p"]));
    ok(vtd.vt(&["edit", "p", "--vcpus", "2"]));
    ok(vtd.vt(&["stop", "p"]));
    vtd.kill9();
    vtd.restart();
    // Not applied at load (it would be unchecked): still pending.
    let s = vtd.status("p");
    assert_eq!(s.definition.vcpus, 1);
    assert!(s.pending_changes);
    ok(vtd.vt(&["start", "p"]));
    let s = vtd.status("p");
    assert_eq!(s.definition.vcpus, 2);
    assert!(!s.pending_changes);
    ok(vtd.vt(&["stop", "p"]));
}

/// A pending definition vtd never checked (written by hand, or by an
/// older vtd) is not taken at vtd's start: the start checks it and
/// refuses an invalid one, and the VM keeps its definition.
#[test]
fn an_invalid_pending_change_is_not_applied_at_load() {
    let mut vtd = Vtd::start("editbadpending");
    vtd.define("b");
    let mut bad = serde_json::to_value(stored(&vtd, "b")).unwrap();
    bad["vcpus"] = 0.into();
    std::fs::write(pending_file(&vtd, "b"), bad.to_string()).unwrap();
    vtd.kill9();
    vtd.restart();
    let s = vtd.status("b");
    assert_eq!(s.definition.vcpus, 1);
    assert!(s.pending_changes);
    assert_eq!(stored(&vtd, "b").vcpus, 1);
    let o = vtd.vt(&["start", "b"]);
    refused(o, 1, "the pending change of VM 'b' no longer passes");
    assert_eq!(vtd.status("b").state, VmState::Stopped);
    assert_eq!(stored(&vtd, "b").vcpus, 1);
}

/// Two PATCHes at once, of two different fields: both land (each works
/// on the VM as the other left it, never on a stale copy).
#[test]
fn concurrent_patches_both_land() {
    let vtd = Vtd::start("editconcurrent");
    vtd.define("c");
    for round in 0..15u32 {
        let (mem, cpus) = (32 + u64::from(round) * 4, 1 + round % 4);
        std::thread::scope(|s| {
            let a = s.spawn(|| {
                vtd.call(
                    "PATCH",
                    "/vms/c",
                    Some(&format!(r#"{{"memory_mib":{mem}}}"#)),
                )
            });
            let b =
                s.spawn(|| vtd.call("PATCH", "/vms/c", Some(&format!(r#"{{"vcpus":{cpus}}}"#))));
            assert_eq!(a.join().unwrap().status, 200);
            assert_eq!(b.join().unwrap().status, 200);
        });
        let d = vtd.status("c").definition;
        assert_eq!((d.memory_mib, d.vcpus), (mem, cpus), "round {round}");
        assert_eq!(stored(&vtd, "c"), d, "round {round}");
    }
}

/// A PATCH racing a start: whatever the order, the VM that runs is the
/// one vtd reports (no start on a copy the map no longer holds: that
/// showed a running VM as stopped), and the change is either its
/// definition or pending.
#[test]
fn a_patch_racing_a_start_leaves_one_consistent_vm() {
    common::require_kvm!();
    let vtd = Vtd::start("editracestart");
    vtd.define("r");
    for round in 0..6u32 {
        let mem = 20 + u64::from(round) * 4;
        std::thread::scope(|s| {
            let a = s.spawn(|| vtd.call("POST", "/vms/r/start", None));
            let b = s.spawn(|| {
                vtd.call(
                    "PATCH",
                    "/vms/r",
                    Some(&format!(r#"{{"memory_mib":{mem}}}"#)),
                )
            });
            assert_eq!(a.join().unwrap().status, 200);
            assert_eq!(b.join().unwrap().status, 200);
        });
        let s = vtd.status("r");
        assert_eq!(s.state, VmState::Running, "round {round}");
        let pid = s.pid.expect("a running VM has a pid");
        assert!(common::pid_alive(pid));
        let wanted = definition(&vtd, "r").memory_mib;
        assert_eq!(wanted, mem, "round {round}: the change is kept");
        assert_eq!(
            s.pending_changes,
            s.definition.memory_mib != mem,
            "round {round}"
        );
        ok(vtd.vt(&["stop", "r"]));
        assert!(
            !common::pid_alive(pid),
            "round {round}: the VMM vtd knew ended"
        );
        assert_eq!(vtd.status("r").state, VmState::Stopped, "round {round}");
    }
}

#[test]
fn a_refused_patch_changes_nothing() {
    let vtd = Vtd::start("editbad");
    vtd.define("b");
    let before = vtd.snapshot();
    for (patch, status, text) in [
        (r#"{"vcpus":0}"#, 400, "vCPU count"),
        (r#"{"name":"c"}"#, 400, "cannot be renamed"),
        (
            r#"{"kernel":"/nonexistent/vmlinux"}"#,
            400,
            "does not exist",
        ),
        (r#"{"memory_mib":"lots"}"#, 400, "invalid VM definition"),
        (
            r#"{"networks":[{"bridge":"br0","mac":"00:00:00:00:00:00"}]}"#,
            400,
            "all-zero",
        ),
        (r#"{"unknown_field":1}"#, 400, "unknown"),
        (r#"[1,2]"#, 400, "JSON object"),
        ("not json", 400, "invalid merge patch"),
    ] {
        let r = vtd.call("PATCH", "/vms/b", Some(patch));
        assert_eq!(r.status, status, "{patch}: {}", r.text());
        assert!(r.text().contains(text), "{patch}: {}", r.text());
    }
    assert_eq!(vtd.call("PATCH", "/vms/ghost", Some("{}")).status, 404);
    assert_eq!(vtd.snapshot(), before, "a refused patch changed the state");
    // null resets a field to its default (RFC 7396 removes the member).
    vtd.expect("PATCH", "/vms/b", Some(r#"{"vcpus":3}"#), 200);
    vtd.expect("PATCH", "/vms/b", Some(r#"{"vcpus":null}"#), 200);
    assert_eq!(vtd.status("b").definition.vcpus, 1);
}

#[test]
fn dumpdef_then_define_gives_the_same_definition() {
    let vtd = Vtd::start("roundtrip");
    ok(vtd.vt(&[
        "create",
        "--name",
        "d",
        "--ram",
        "32,merge=on",
        "--vcpus",
        "2",
        "--network",
        "bridge=vtbr9",
        "--autostart",
    ]));
    let dumped = ok(vtd.vt(&["dumpdef", "d"]));
    let original: VmDefinition = serde_json::from_str(&dumped).unwrap();
    assert_eq!(original, vtd.status("d").definition);
    let file = vtd.dir.join("d.json");
    std::fs::write(&file, &dumped).unwrap();
    // Onto a changed VM: define makes it exactly the file again.
    ok(vtd.vt(&[
        "edit",
        "d",
        "--vcpus",
        "4",
        "--memory",
        "48",
        "--autostart",
        "off",
    ]));
    assert_ne!(definition(&vtd, "d"), original);
    ok(vtd.vt(&["define", file.to_str().unwrap()]));
    assert_eq!(definition(&vtd, "d"), original);
    assert_eq!(ok(vtd.vt(&["dumpdef", "d"])), dumped);
    // Onto nothing: undefined, then defined from the file.
    ok(vtd.vt(&["undefine", "d"]));
    let out = ok(vtd.vt(&["define", file.to_str().unwrap()]));
    assert_eq!(out, "VM 'd' defined\n");
    assert_eq!(ok(vtd.vt(&["dumpdef", "d"])), dumped);
    assert_eq!(vtd.status("d").state, VmState::Stopped);
    // A file that is no definition.
    std::fs::write(&file, "{\"name\":\"d\",\"vcpus\":\"x\"}").unwrap();
    refused(
        vtd.vt(&["define", file.to_str().unwrap()]),
        2,
        "not a VM definition",
    );
}

#[test]
fn only_the_owner_or_root_may_edit() {
    if !jail::is_root() {
        eprintln!("not root: skipped");
        return;
    }
    let vtd = Vtd::start_with_args("editaccess", &["--socket-group", &MEMBER.to_string()]);
    let sock = vtd.socket.clone();
    ok(vtd.vt_as(MEMBER, &sock, &["create", "--name", "m", "--ram", "16"]));
    ok(vtd.vt_as(MEMBER, &sock, &["edit", "m", "--vcpus", "2"]));
    let out = vtd.vt_as_ids(OTHER, MEMBER, &sock, &["edit", "m", "--vcpus", "3"]);
    refused(out, 1, "VM 'm' belongs to uid 60010");
    // The owner may not give the VM away; root may.
    let owner = format!(r#"{{"owner":{{"uid":{OTHER},"gid":{MEMBER}}}}}"#);
    let o = std::process::Command::new("curl")
        .args(["-sS", "-X", "PATCH", "--unix-socket"])
        .arg(&sock)
        .args(["--data-binary", &owner, "http://x/vms/m"])
        .uid_gid(MEMBER)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("only root may change"));
    vtd.expect("PATCH", "/vms/m", Some(&owner), 200);
    assert_eq!(vtd.status("m").definition.owner.unwrap().uid, OTHER);
    assert_eq!(vtd.status("m").definition.vcpus, 2);
    // The audit record says what changed, and whose the VM was and is.
    let edits: Vec<String> = vtd
        .audit("action=edit&vm=m")
        .iter()
        .filter(|r| r["result"] == "ok")
        .map(|r| r["detail"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        edits,
        [
            "PATCH /vms/m: 200 changed: vcpus".to_string(),
            format!("PATCH /vms/m: 200 changed: owner; owner: uid {MEMBER} -> uid {OTHER}"),
        ]
    );
}

trait AsUser {
    fn uid_gid(&mut self, id: u32) -> &mut Self;
}

impl AsUser for std::process::Command {
    fn uid_gid(&mut self, id: u32) -> &mut Self {
        use std::os::unix::process::CommandExt;
        self.uid(id).gid(id)
    }
}

#[test]
fn a_pending_change_that_no_longer_passes_refuses_the_start() {
    common::require_kvm!();
    let vtd = Vtd::start("editstale");
    vtd.define("s");
    ok(vtd.vt(&["start", "s"]));
    let img = vtd.dir.join("data.img");
    ok(vtd.vt(&[
        "edit",
        "s",
        "--disk-add",
        &format!("path={},size=1", img.display()),
    ]));
    ok(vtd.vt(&["stop", "s"]));
    // The image goes before the next start: the change is checked again.
    std::fs::remove_file(&img).unwrap();
    let o = vtd.vt(&["start", "s"]);
    refused(o, 1, "the pending change of VM 's' no longer passes");
    let s = vtd.status("s");
    assert_eq!(s.state, VmState::Stopped);
    assert!(s.pending_changes);
    assert!(s.definition.disks.is_empty());
    // Undone by patching the disk away again: it starts.
    ok(vtd.vt(&["edit", "s", "--disk-remove", img.to_str().unwrap()]));
    ok(vtd.vt(&["start", "s"]));
    assert!(!vtd.status("s").pending_changes);
    ok(vtd.vt(&["stop", "s"]));
}

/// `vt edit` changes only what it names: two `--network-remove` indexes
/// both mean the NICs as they were; `--memory SIZE` keeps the memory
/// options; `vt define` of a file without an owner keeps the owner.
#[test]
fn vt_edit_changes_only_what_it_names() {
    let vtd = Vtd::start("editcli");
    vtd.define("n");
    ok(vtd.vt(&["policy", "set", "vm_host_bridges", "on"]));
    let nics: Vec<String> = (0..3)
        .map(|i| format!(r#"{{"bridge":"vtbr9","mac":"52:54:00:aa:00:0{i}"}}"#))
        .collect();
    let body = format!(r#"{{"networks":[{}]}}"#, nics.join(","));
    vtd.expect("PATCH", "/vms/n", Some(&body), 200);
    ok(vtd.vt(&[
        "edit",
        "n",
        "--network-remove",
        "0",
        "--network-remove",
        "1",
    ]));
    let macs: Vec<String> = vtd
        .status("n")
        .definition
        .networks
        .iter()
        .filter_map(|n| n.mac.clone())
        .collect();
    assert_eq!(macs, ["52:54:00:aa:00:02"]);
    refused(
        vtd.vt(&["edit", "n", "--network-remove", "1"]),
        2,
        "has no such NIC",
    );
    // Memory options stay unless named.
    ok(vtd.vt(&["edit", "n", "--memory", "32,thp=off"]));
    ok(vtd.vt(&["edit", "n", "--memory", "48"]));
    let d = vtd.status("n").definition;
    assert_eq!((d.memory_mib, d.memory.thp), (48, false));
    ok(vtd.vt(&["edit", "n", "--memory", "48,thp=on"]));
    assert!(vtd.status("n").definition.memory.thp);
    if !jail::is_root() {
        return;
    }
    // A file without an owner: the owner stays.
    let owner = format!(r#"{{"owner":{{"uid":{MEMBER},"gid":{MEMBER}}}}}"#);
    vtd.expect("PATCH", "/vms/n", Some(&owner), 200);
    let mut file: serde_json::Value = serde_json::from_str(&ok(vtd.vt(&["dumpdef", "n"]))).unwrap();
    file.as_object_mut().unwrap().remove("owner");
    file["vcpus"] = 2.into();
    let path = vtd.dir.join("n.json");
    std::fs::write(&path, file.to_string()).unwrap();
    ok(vtd.vt(&["define", path.to_str().unwrap()]));
    let d = vtd.status("n").definition;
    assert_eq!((d.owner.map(|o| o.uid), d.vcpus), (Some(MEMBER), 2));
}

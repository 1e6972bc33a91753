//! Issue 15, cases 1-4: what a `kill -9` of `vtd` at a bad moment, or a
//! corrupt state file, left behind; and VMs that cannot be built. Each
//! checks the invariant against `/proc`: every VMM belongs to exactly one
//! VM vtd knows, no VM has two, what vtd reports is what runs.

mod common;

use std::path::PathBuf;

use api::manager::VmState;
use common::{pid_alive, require_kvm, wait_for, Vtd};

fn vm_dir(vtd: &Vtd, name: &str) -> PathBuf {
    vtd.state.join("vms").join(name)
}

#[test]
fn leftovers_of_a_killed_define_wedge_no_name() {
    let mut vtd = Vtd::start("wedge");
    vtd.kill9();
    let vms = vtd.state.join("vms");
    // A vtd killed while writing the definition (older vtd: the VM's
    // directory made first), and one killed while building it under a
    // temporary name.
    std::fs::create_dir_all(vms.join("half")).unwrap();
    std::fs::write(vms.join("half/.definition.json.tmp.77.0"), b"{\"na").unwrap();
    std::fs::create_dir_all(vms.join(".creating.other.77.1")).unwrap();
    vtd.restart();
    vtd.define("half");
    vtd.define("other");
    assert_eq!(vtd.status("half").state, VmState::Stopped);
    vtd.expect("DELETE", "/vms/half", None, 204);
    vtd.expect("DELETE", "/vms/other", None, 204);
    // Nothing but what is defined remains.
    let left: Vec<_> = std::fs::read_dir(&vms).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn corrupt_state_files_are_reported_and_no_live_vmm_is_lost() {
    require_kvm!();
    let mut vtd = Vtd::start("corrupt");
    for name in ["rt", "def", "idle"] {
        vtd.define(name);
    }
    for name in ["rt", "def"] {
        vtd.expect("POST", &format!("/vms/{name}/start"), None, 200);
    }
    let rt_pid = vtd.status("rt").pid.unwrap();
    let def_pid = vtd.status("def").pid.unwrap();
    vtd.kill9();
    std::fs::write(vm_dir(&vtd, "rt").join("runtime.json"), b"\x00garbage").unwrap();
    let def = vm_dir(&vtd, "def").join("definition.json");
    let text = std::fs::read(&def).unwrap();
    std::fs::write(&def, &text[..text.len() / 2]).unwrap();
    let idle = vm_dir(&vtd, "idle").join("definition.json");
    std::fs::write(&idle, b"{\"name\": \"idle\",\n \"vcpus\": [").unwrap();
    vtd.restart();

    // A garbage runtime.json: the VMM serving the VM is found, not lost.
    let rt = vtd.status("rt");
    assert_eq!((rt.state, rt.pid), (VmState::Running, Some(rt_pid)));
    vtd.expect("DELETE", "/vms/rt", None, 409);
    vtd.expect("POST", "/vms/rt/start", None, 409);

    // A truncated definition: visible as unknown, with file, position and
    // parse error, and the way out.
    let d = vtd.status("def");
    assert_eq!(d.state, VmState::Unknown);
    let why = d.reason.unwrap();
    assert!(why.contains(&def.display().to_string()), "{why}");
    assert!(why.contains("line ") && why.contains("column "), "{why}");
    assert!(
        why.contains("vt undefine def") && why.contains("vt repair def"),
        "{why}"
    );
    assert_eq!(d.pid, Some(def_pid));
    vtd.expect("POST", "/vms/def/start", None, 409);
    // Its VMM is alive: undefine is refused, stop kills it, then undefine works.
    let r = vtd.call("DELETE", "/vms/def", None);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains(&def_pid.to_string()), "{}", r.text());
    assert!(pid_alive(def_pid));
    vtd.expect("POST", "/vms/def/stop", None, 200);
    assert!(!pid_alive(def_pid));
    vtd.expect("DELETE", "/vms/def", None, 204);
    vtd.define("def");

    // A stopped VM with a bad definition: unknown, and undefine is the way out.
    let i = vtd.status("idle");
    assert_eq!(i.state, VmState::Unknown);
    assert!(i.reason.unwrap().contains("line 2 column"));
    vtd.expect("DELETE", "/vms/idle", None, 204);
    vtd.define("idle");
    vtd.check_invariant().unwrap();
}

#[test]
fn a_vmm_vtd_did_not_record_is_found_and_never_doubled() {
    require_kvm!();
    let mut vtd = Vtd::start("unrecorded");
    vtd.define("a");
    vtd.define("gone");
    vtd.expect("POST", "/vms/a/start", None, 200);
    vtd.expect("POST", "/vms/gone/start", None, 200);
    let pid = vtd.status("a").pid.unwrap();
    let gone = vtd.status("gone").pid.unwrap();
    vtd.kill9();
    // As if vtd died between spawning the VMM and recording it.
    std::fs::remove_file(vm_dir(&vtd, "a").join("runtime.json")).unwrap();
    // And a VMM whose VM is no more (its directory removed by hand).
    std::fs::remove_dir_all(vm_dir(&vtd, "gone")).unwrap();
    vtd.restart();
    let a = vtd.status("a");
    assert_eq!((a.state, a.pid), (VmState::Running, Some(pid)));
    // A second start would put a second VMM on the same disks.
    vtd.expect("POST", "/vms/a/start", None, 409);
    wait_for(|| !pid_alive(gone), "the VMM of no VM to be killed");
    vtd.check_invariant().unwrap();
    // Recorded again: the next vtd finds it by runtime.json too.
    vtd.kill9();
    vtd.restart();
    assert_eq!(vtd.status("a").pid, Some(pid));
    vtd.expect("POST", "/vms/a/stop", None, 200);
    vtd.check_invariant().unwrap();
}

#[test]
fn a_vm_that_cannot_be_built_fails_to_start_and_bad_definitions_are_refused() {
    require_kvm!();
    let vtd = Vtd::start("unbuildable");
    let junk = vtd.dir.join("not-a-kernel");
    std::fs::write(&junk, b"this is not a kernel").unwrap();
    let odd = vtd.dir.join("odd.img");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    let empty = vtd.dir.join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    // An initrd larger than the guest's 16 MiB.
    let big = vtd.dir.join("big-initrd");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let body = |name: &str, extra: &str| format!(r#"{{"name":"{name}","memory_mib":16{extra}}}"#);
    let cases = [
        ("junk", format!(r#","kernel":"{}""#, junk.display())),
        (
            "odd",
            format!(
                r#","disks":[{{"path":"{}","format":"raw"}}]"#,
                odd.display()
            ),
        ),
        ("initrd", format!(r#","initrd":"{}""#, big.display())),
        (
            "empty",
            format!(
                r#","disks":[{{"path":"{}","format":"raw"}}]"#,
                empty.display()
            ),
        ),
    ];
    for (name, extra) in &cases {
        vtd.expect("POST", "/vms", Some(&body(name, extra)), 201);
        let r = vtd.call("POST", &format!("/vms/{name}/start"), None);
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        assert!(r.text().contains("failed to start"), "{name}: {}", r.text());
        let s = vtd.status(name);
        assert_eq!(s.state, VmState::Stopped, "{name}: {s:?}");
        assert!(s.pid.is_none());
        let reason = s.reason.unwrap();
        assert!(reason.starts_with("failed to start: "), "{name}: {reason}");
        // The VMM's own reason, not a bare status.
        assert!(reason.contains("vt-vmm failed: "), "{name}: {reason}");
    }
    // What can be known at definition time is refused then, as 400.
    for (cmdline, word) in [
        ("x".repeat(100_000), "bytes"),
        ("console=ttyS0\\u0000init=/x".to_string(), "NUL"),
        ("-s".to_string(), "'-'"),
    ] {
        let b = body("cmd", &format!(r#","cmdline":"{cmdline}""#));
        let r = vtd.call("POST", "/vms", Some(&b));
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(word), "{}", r.text());
    }
    vtd.check_invariant().unwrap();
}

#[test]
fn a_vmm_inherits_no_descriptor_of_vtd() {
    require_kvm!();
    no_inherited_descriptor("fds", &[]);
    no_inherited_descriptor("fds-nojail", &["--jail", "off"]);
}

fn no_inherited_descriptor(name: &str, args: &[&str]) {
    let mut vtd = Vtd::start_with_args(name, args);
    let marker = vtd.dir.join("leaked-to-vtd");
    let f = std::fs::File::create(&marker).unwrap();
    vtd.kill9();
    vtd.restart_inheriting(Some(&f));
    // vtd itself did get it (the test would prove nothing otherwise).
    let vtd_pid = vtd.pid().unwrap();
    let target = std::fs::read_link(format!("/proc/{vtd_pid}/fd/77")).unwrap();
    assert_eq!(target, marker);
    vtd.define("a");
    vtd.expect("POST", "/vms/a/start", None, 200);
    let pid = vtd.status("a").pid.unwrap();
    let fds: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .collect();
    assert!(!fds.is_empty());
    assert!(
        !fds.contains(&marker),
        "the VMM holds vtd's descriptor: {fds:?}"
    );
    vtd.expect("POST", "/vms/a/stop", None, 200);
}

#[test]
fn a_fixed_definition_is_taken_back_by_vt_repair() {
    require_kvm!();
    let mut vtd = Vtd::start("repair");
    vtd.define("a");
    vtd.expect("POST", "/vms/a/start", None, 200);
    let pid = vtd.status("a").pid.unwrap();
    vtd.kill9();
    let def = vm_dir(&vtd, "a").join("definition.json");
    let good = std::fs::read(&def).unwrap();
    std::fs::write(&def, &good[..good.len() - 3]).unwrap();
    vtd.restart();
    let s = vtd.status("a");
    assert_eq!(s.state, VmState::Unknown);
    assert!(s.reason.unwrap().contains("vt repair a"));
    // Still broken: refused, saying why.
    let out = vtd.vt(&["repair", "a"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line "));
    // Restored by hand: taken back, its VMM re-attached.
    std::fs::write(&def, &good).unwrap();
    let out = vtd.vt(&["repair", "a"]);
    assert!(out.status.success(), "{out:?}");
    let s = vtd.status("a");
    assert_eq!((s.state, s.pid), (VmState::Running, Some(pid)));
    vtd.expect("POST", "/vms/a/repair", None, 409);
    vtd.expect("POST", "/vms/a/stop", None, 200);
    vtd.check_invariant().unwrap();
}

/// A process any user could start that looks like VM `name`'s VMM by its
/// command line alone (`exec -a vt-vmm ... --id SOCKET --jail-uid 0`),
/// run as `nobody`.
fn fake_vmm(vtd: &Vtd, name: &str) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let sock = vm_dir(vtd, name).join("control.sock");
    std::process::Command::new("/bin/bash")
        .arg0("/usr/local/bin/vt-vmm")
        .args(["-c", "sleep 120; :", "--id"])
        .arg(&sock)
        .args(["--jail-uid", "0"])
        .uid(65_534)
        .gid(65_534)
        .spawn()
        .unwrap()
}

#[test]
fn a_fake_vmm_blocks_nothing_and_is_neither_adopted_nor_killed() {
    require_kvm!();
    if !jail::is_root() {
        eprintln!("skipped: a fake as another user needs root");
        return;
    }
    let mut vtd = Vtd::start("fake-vmm");
    vtd.define("a");
    vtd.define("b");
    let mut fa = fake_vmm(&vtd, "a");
    let mut fb = fake_vmm(&vtd, "b");
    let mut fgone = fake_vmm(&vtd, "gone");
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Not "a VMM still runs": a starts, and stops.
    vtd.expect("POST", "/vms/a/start", None, 200);
    let real = vtd.status("a").pid.unwrap();
    assert_ne!(real, fa.id());
    // At a restart: no fake adopted (b stays stopped), none killed, and
    // the real VMM is not taken for a second one.
    vtd.kill9();
    vtd.restart();
    assert_eq!(vtd.status("a").pid, Some(real));
    assert_eq!(vtd.status("b").state, VmState::Stopped);
    assert_eq!(vtd.status("b").pid, None);
    for f in [&fa, &fb, &fgone] {
        assert!(pid_alive(f.id()), "fake {} was killed", f.id());
    }
    assert!(pid_alive(real));
    vtd.expect("POST", "/vms/a/stop", None, 200);
    // b undefines: no VMM of it runs.
    vtd.expect("DELETE", "/vms/b", None, 204);
    vtd.check_invariant().unwrap();
    for f in [&mut fa, &mut fb, &mut fgone] {
        f.kill().unwrap();
        f.wait().unwrap();
    }
}

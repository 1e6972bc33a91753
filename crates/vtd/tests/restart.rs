//! VMs outlive `vtd`: `kill -9` of the daemon leaves them running, a new
//! `vtd` finds them again; `kill -9` of one VMM is a crash of that VM only.

mod common;

use api::manager::VmState;
use common::{pid_alive, require_kvm, wait_for, Vtd};

fn kill9(pid: u32) {
    // SAFETY: kill has no memory effects; the pid is a VMM of this test.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
}

#[test]
fn vms_survive_kill_9_of_vtd_and_stay_controllable() {
    require_kvm!();
    let mut vtd = Vtd::start("restart");
    for name in ["one", "two", "idle"] {
        vtd.define(name);
    }
    let p1 = vtd.expect("POST", "/vms/one/start", None, 200)["pid"]
        .as_u64()
        .unwrap() as u32;
    let p2 = vtd.expect("POST", "/vms/two/start", None, 200)["pid"]
        .as_u64()
        .unwrap() as u32;
    vtd.expect("POST", "/vms/two/pause", None, 200);

    vtd.kill9();
    assert!(vt_http::call(&vtd.socket, "GET", "/vms", None).is_err());
    assert!(pid_alive(p1) && pid_alive(p2), "the VMMs outlive vtd");

    vtd.restart();
    let one = vtd.status("one");
    assert_eq!((one.state, one.pid), (VmState::Running, Some(p1)));
    let two = vtd.status("two");
    assert_eq!((two.state, two.pid), (VmState::Paused, Some(p2)));
    assert_eq!(vtd.status("idle").state, VmState::Stopped);
    assert!(one.counters.is_some(), "the control socket answers again");

    // Controllable: resume, console input, stop.
    vtd.expect("POST", "/vms/two/resume", None, 200);
    vtd.expect("POST", "/vms/two/console", Some("x"), 204);
    let s = vtd.expect("POST", "/vms/one/stop", None, 200);
    assert_eq!(s["state"], "stopped");
    wait_for(|| !pid_alive(p1), "VMM one to end");
    assert_eq!(vtd.status("two").state, VmState::Running);

    // A re-attached VMM that is killed is seen through its pidfd.
    kill9(p2);
    let two = vtd.wait_state("two", VmState::Crashed);
    let reason = two.reason.unwrap();
    assert!(reason.contains("ended without saying why"), "{reason}");
    // And the next vtd still knows how it ended.
    vtd.kill9();
    vtd.restart();
    let two = vtd.status("two");
    assert_eq!(two.state, VmState::Crashed);
    assert_eq!(two.reason.as_deref(), Some(reason.as_str()));
}

#[test]
fn kill_9_of_one_vmm_crashes_that_vm_only() {
    require_kvm!();
    let vtd = Vtd::start("crash");
    vtd.define("victim");
    vtd.define("bystander");
    let pv = vtd.expect("POST", "/vms/victim/start", None, 200)["pid"]
        .as_u64()
        .unwrap() as u32;
    let pb = vtd.expect("POST", "/vms/bystander/start", None, 200)["pid"]
        .as_u64()
        .unwrap() as u32;
    kill9(pv);
    let v = vtd.wait_state("victim", VmState::Crashed);
    assert_eq!(
        v.reason.as_deref(),
        Some("vt-vmm was killed by signal 9 (SIGKILL)")
    );
    assert_eq!(v.pid, None);
    let b = vtd.status("bystander");
    assert_eq!((b.state, b.pid), (VmState::Running, Some(pb)));
    assert!(pid_alive(pb));
    // `vt list` shows it, and a crashed VM can be started again.
    let out = vtd.vt(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("victim") && l.contains("crashed") && l.contains("SIGKILL")),
        "{text}"
    );
    vtd.expect("POST", "/vms/victim/start", None, 200);
    assert_eq!(vtd.status("victim").reason, None);
}

#[test]
fn a_vmm_that_died_while_vtd_was_down_is_found_crashed() {
    require_kvm!();
    let mut vtd = Vtd::start("downtime");
    vtd.define("a");
    let pid = vtd.expect("POST", "/vms/a/start", None, 200)["pid"]
        .as_u64()
        .unwrap() as u32;
    vtd.kill9();
    kill9(pid);
    wait_for(|| !pid_alive(pid), "the VMM to die");
    vtd.restart();
    let a = vtd.status("a");
    assert_eq!((a.state, a.pid), (VmState::Crashed, None));
    assert!(!vtd.state.join("vms/a/runtime.json").exists());
    vtd.expect("POST", "/vms/a/start", None, 200);
}

#[test]
fn autostart_runs_once_per_host_boot() {
    require_kvm!();
    let mut vtd = Vtd::start("autostart");
    vtd.expect(
        "POST",
        "/vms",
        Some(r#"{"name":"auto","memory_mib":16,"autostart":true}"#),
        201,
    );
    vtd.define("manual");
    // This vtd already ran its autostart for this boot (nothing to start then).
    vtd.kill9();
    vtd.restart();
    assert_eq!(vtd.status("auto").state, VmState::Stopped);
    // As after a host reboot: the boot id no longer matches.
    vtd.kill9();
    std::fs::write(vtd.state.join("autostart.done"), "another boot").unwrap();
    vtd.restart();
    vtd.wait_state("auto", VmState::Running);
    assert_eq!(vtd.status("manual").state, VmState::Stopped);
    wait_for(
        || vtd.console_log("auto") == "tiny guest up\n",
        "the autostarted guest",
    );
}

#[test]
fn a_hung_vmm_is_still_shown_and_stopped() {
    require_kvm!();
    let vtd = Vtd::start("hung");
    vtd.define("h");
    let pid = vtd.expect("POST", "/vms/h/start", None, 200)["pid"]
        .as_u64()
        .unwrap() as u32;
    // SAFETY: kill has no memory effects; the pid is this test's VMM.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let t = std::time::Instant::now();
    let s = vtd.status("h");
    assert_eq!((s.state, s.counters), (VmState::Running, None));
    let s = vtd.expect("POST", "/vms/h/stop", None, 200);
    assert_eq!(s["state"], "stopped");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(6),
        "{:?}",
        t.elapsed()
    );
    wait_for(|| !pid_alive(pid), "the hung VMM to be killed");
}

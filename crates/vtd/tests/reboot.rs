//! `vt reboot` is graceful (virsh's): the power button, then vtd starts
//! the VM again once the guest has powered off; `vt reset` is the hard
//! one. The tiny guests cannot hear the button, so the restart is shown
//! with a guest that powers itself off a few seconds after it boots
//! (vtd cannot tell why a guest powered off: a power-off while a reboot
//! is pending is the reboot's); a Linux guest that powers off on the
//! button is rebooted in the lab (tests/linux_lab.rs).

mod common;

use std::io::BufRead;
use std::time::{Duration, Instant};

use api::manager::{Event, VmState};
use common::{wait_for, Vtd};

/// A VM whose guest prints `boot` and powers off about 3 s later (PVM).
fn later_vm(vtd: &Vtd, name: &str) {
    let k = vtd.dir.join("later");
    std::fs::write(
        &k,
        tinyguest::elf_with("boot\n", true, tinyguest::Ending::PowerOffAfter(2_000_000)),
    )
    .unwrap();
    let def = format!(
        r#"{{"name":"{name}","memory_mib":16,"kernel":"{}"}}"#,
        k.display()
    );
    vtd.expect("POST", "/vms", Some(&def), 201);
}

fn ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_guest_that_powers_off_during_a_reboot_is_started_again() {
    common::require_kvm!();
    let vtd = Vtd::start("powerreboot");
    later_vm(&vtd, "g");
    let (_, mut events) = vt_http::open_stream(&vtd.socket, "GET", "/events", None).unwrap();
    ok(vtd.vt(&["start", "g"]));
    let first = vtd.status("g").pid.unwrap();
    assert_eq!(ok(vtd.vt(&["reboot", "g"])), "g: running\n");
    // Powered off by itself, then started again by vtd: a new VMM, the
    // guest booting again (console.log begins anew at each start).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = vtd.status("g");
        if s.state == VmState::Running && s.pid.is_some_and(|p| p != first) {
            break;
        }
        assert!(Instant::now() < deadline, "never started again: {s:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    // No reboot pending now: the next power-off is final.
    events
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut seen = Vec::new();
    for line in (&mut events).lines() {
        let line = line.unwrap_or_else(|e| panic!("{e}: events so far {seen:?}"));
        let Ok(e) = serde_json::from_str::<Event>(&line) else {
            continue;
        };
        seen.push((e.event, e.reason.unwrap_or_default()));
        if seen.len() == 5 {
            break;
        }
    }
    let names: Vec<&str> = seen.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        ["started", "rebooting", "stopped", "started", "stopped"]
    );
    assert_eq!(seen[2].1, "guest powered off");
    assert_eq!(seen[4].1, "guest powered off");
    std::thread::sleep(Duration::from_millis(500));
    let s = vtd.status("g");
    assert_eq!(
        (s.state, s.reason.as_deref()),
        (VmState::Stopped, Some("guest powered off"))
    );
    assert_eq!(vtd.console_log("g"), "boot\n");
}

#[test]
fn a_guest_that_ignores_the_button_keeps_running_and_stop_or_shutdown_cancel() {
    common::require_kvm!();
    let vtd = Vtd::start("buttonignored");
    vtd.define("h");
    ok(vtd.vt(&["start", "h"]));
    let pid = vtd.status("h").pid;
    // The halting guest never powers off: nothing is forced.
    ok(vtd.vt(&["reboot", "h", "--timeout", "1"]));
    std::thread::sleep(Duration::from_millis(1500));
    let s = vtd.status("h");
    assert_eq!((s.state, s.pid), (VmState::Running, pid));
    // vt reset is the hard way: same VMM, the guest boots again.
    assert_eq!(ok(vtd.vt(&["reset", "h"])), "h: running\n");
    wait_for(
        || vtd.console_log("h") == "tiny guest up\n".repeat(2),
        "the reset's boot",
    );
    assert_eq!(vtd.status("h").pid, pid);
    ok(vtd.vt(&["stop", "h"]));

    // A reboot then a shutdown: the guest powers off (by itself here)
    // while the shutdown waits; the shutdown cancelled the restart.
    later_vm(&vtd, "s");
    ok(vtd.vt(&["start", "s"]));
    ok(vtd.vt(&["reboot", "s"]));
    let o = vtd.vt(&["shutdown", "s", "--timeout", "30"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::thread::sleep(Duration::from_secs(1));
    let s = vtd.status("s");
    assert_eq!(
        (s.state, s.reason.as_deref()),
        (VmState::Stopped, Some("guest powered off"))
    );
    assert_eq!(vtd.console_log("s"), "boot\n");
}

/// A reboot then a stop before the guest powers off: the stop cancelled
/// the restart, the VM stays off.
#[test]
fn a_stop_cancels_a_pending_reboot() {
    common::require_kvm!();
    let vtd = Vtd::start("rebootstop");
    later_vm(&vtd, "t");
    ok(vtd.vt(&["start", "t"]));
    ok(vtd.vt(&["reboot", "t"]));
    ok(vtd.vt(&["stop", "t"]));
    // Past the time the guest would have powered off by itself.
    std::thread::sleep(Duration::from_secs(4));
    let s = vtd.status("t");
    assert_eq!(
        (s.state, s.reason.as_deref()),
        (VmState::Stopped, Some("stopped by request"))
    );
    assert_eq!(vtd.console_log("t"), "boot\n");
}

/// The vm-reboot threads of vtd (`/proc/PID/task/*/comm`).
fn reboot_watchers(vtd: &Vtd) -> usize {
    let tasks = format!("/proc/{}/task", vtd.pid().unwrap());
    std::fs::read_dir(tasks)
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim() == "vm-reboot")
        .count()
}

/// Many reboots of a guest that ignores the button: one watcher thread
/// (each reboot only moves its deadline), gone once the wait ran out.
#[test]
fn repeated_reboots_share_one_watcher() {
    common::require_kvm!();
    let vtd = Vtd::start("rebootflood");
    vtd.define("f");
    ok(vtd.vt(&["start", "f"]));
    for _ in 0..30 {
        vtd.expect("POST", "/vms/f/reboot?timeout_secs=2", None, 200);
    }
    assert_eq!(reboot_watchers(&vtd), 1);
    wait_for(|| reboot_watchers(&vtd) == 0, "the watcher to end");
    assert_eq!(vtd.status("f").state, VmState::Running);
    ok(vtd.vt(&["stop", "f"]));
}

/// A restart after the power-off that fails (its kernel is gone) is
/// published as `reboot-failed` with the reason; the VM stays off.
#[test]
fn a_failed_restart_is_published() {
    common::require_kvm!();
    let vtd = Vtd::start("rebootfail");
    later_vm(&vtd, "x");
    ok(vtd.vt(&["start", "x"]));
    let (_, mut events) = vt_http::open_stream(&vtd.socket, "GET", "/events", None).unwrap();
    ok(vtd.vt(&["reboot", "x"]));
    std::fs::remove_file(vtd.dir.join("later")).unwrap();
    events
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let failed = (&mut events)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Event>(&l).ok())
        .find(|e| e.event == "reboot-failed")
        .expect("a reboot-failed event");
    assert!(
        failed.reason.as_deref().unwrap_or("").contains("kernel"),
        "{failed:?}"
    );
    assert_eq!(vtd.status("x").state, VmState::Stopped);
}

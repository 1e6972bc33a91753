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

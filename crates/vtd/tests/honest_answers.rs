//! Issue 12 part 5, each case with the input a new user tried: what `vt`
//! and `vtd` answer must be true.

mod common;

use std::process::Output;

use common::Vtd;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn all_zero_mac_is_refused_by_vt_create() {
    let vtd = Vtd::start("zeromac");
    let o = vtd.vt(&[
        "create",
        "--name",
        "z",
        "--ram",
        "16",
        "--network",
        "bridge=br0,mac=00:00:00:00:00:00",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("all-zero address"), "{}", stderr(&o));
    // And by the API directly.
    let r = vtd.call(
        "POST",
        "/vms",
        Some(r#"{"name":"z","networks":[{"bridge":"br0","mac":"00:00:00:00:00:00"}]}"#),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("all-zero address"), "{}", r.text());
    assert_eq!(vtd.call("GET", "/vms/z", None).status, 404);
}

#[test]
fn shutdown_that_had_to_force_exits_6() {
    common::require_kvm!();
    let vtd = Vtd::start("forced");
    vtd.define("h");
    assert!(vtd.vt(&["start", "h"]).status.success());
    // The halting guest never answers the power button.
    let o = vtd.vt(&["shutdown", "h", "--timeout", "1"]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("h: stopped (shut down: the guest did not power off within 1s"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("did not power off itself"),
        "{}",
        stderr(&o)
    );
    // Not a terminal: no spinner drawn.
    assert!(!stderr(&o).contains('\r'), "{}", stderr(&o));
    // Shutting down a stopped VM is a conflict (5), not a forced stop.
    assert_eq!(vtd.vt(&["shutdown", "h"]).status.code(), Some(5));
    // On a terminal (script(1) gives vt a pty): the spinner says what it
    // waits for, and the exit code is the same.
    assert!(vtd.vt(&["start", "h"]).status.success());
    let vt = common::sibling("vt");
    let o = std::process::Command::new("script")
        .args(["-qefc"])
        .arg(format!("{} shutdown h --timeout 1", vt.display()))
        .arg("/dev/null")
        .env("VT_SOCKET", &vtd.socket)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let screen = stdout(&o);
    assert_eq!(o.status.code(), Some(6), "{screen}");
    assert!(
        screen.contains("h: power button pressed, waiting up to 1s for the guest to power off"),
        "{screen}"
    );
}

#[test]
fn virsh_verbs_are_aliases() {
    common::require_kvm!();
    let vtd = Vtd::start("virsh");
    vtd.define("v");
    let ok = |args: &[&str]| {
        let o = vtd.vt(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    assert!(ok(&["list", "--all"]).contains("v  "));
    assert!(ok(&["dominfo", "v"]).contains("Name:      v"));
    ok(&["start", "v"]);
    assert_eq!(ok(&["suspend", "v"]), "v: paused\n");
    ok(&["resume", "v"]);
    assert_eq!(ok(&["reset", "v"]), "v: running\n");
    assert!(ok(&["destroy", "v"]).starts_with("v: stopped"));
}

#[test]
fn clap_errors_are_one_line_and_json_when_asked() {
    let vtd = Vtd::start("clap");
    let o = vtd.vt(&["list", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert_eq!(
        e,
        "vt: error: unexpected argument '--bogus' found (usage: vt list [OPTIONS]; see --help)\n"
    );
    let o = vtd.vt(&["--output", "json", "list", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_str(&stderr(&o)).unwrap();
    assert_eq!(v["exit_code"], 2);
    assert!(v["error"].as_str().unwrap().contains("'--bogus'"));
    assert!(o.stdout.is_empty());
    // An error from vtd, as JSON.
    let o = vtd.vt(&["info", "ghost", "--output", "json"]);
    assert_eq!(o.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_str(&stderr(&o)).unwrap();
    assert_eq!(v["exit_code"], 4);
    assert!(v["error"].as_str().unwrap().contains("ghost"), "{v}");
    // --help is still help, on stdout, exit 0.
    let o = vtd.vt(&["list", "--help"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("Usage: vt list"));
}

#[test]
fn events_show_local_times_and_json_keeps_them_raw() {
    let vtd = Vtd::start("evtimes");
    let spawn = |json: bool| {
        let mut c = std::process::Command::new(common::sibling("vt"));
        c.env("VT_SOCKET", &vtd.socket)
            .env("TZ", "UTC")
            .arg("events");
        if json {
            c.args(["--output", "json"]);
        }
        c.stdout(std::process::Stdio::piped()).spawn().unwrap()
    };
    let (human, json) = (spawn(false), spawn(true));
    std::thread::sleep(std::time::Duration::from_millis(300));
    vtd.define("e");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let read = |mut c: std::process::Child| {
        c.kill().unwrap();
        let out = c.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (h, j) = (read(human), read(json));
    let event: serde_json::Value = serde_json::from_str(j.lines().next().unwrap()).unwrap();
    let ms = event["time_ms"].as_u64().unwrap();
    assert_eq!(event["vm"], "e");
    // The same event, for people: the UTC time (TZ=UTC) to the millisecond.
    let line = h.lines().next().unwrap();
    let secs = ms / 1000;
    let (d, s) = (secs / 86400, secs % 86400);
    let hms = format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    );
    assert!(line.contains(&hms), "{line} lacks {hms} (day {d})");
    assert!(line.ends_with(" e defined stopped"), "{line}");
    assert!(!line.contains(&ms.to_string()), "{line}");
}

#[test]
fn vtd_logs_the_pvm_warning_when_a_linux_kernel_starts() {
    let dir = std::env::temp_dir().join(format!("vtd-{}-pvmlog", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut bz = vec![0u8; 0x1000];
    bz[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    let kernel = dir.join("bzImage");
    std::fs::write(&kernel, &bz).unwrap();
    let log = dir.join("vtd.log");
    let socket = dir.join("vtd.sock");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vtd"))
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--vmm")
        .arg(common::sibling("vt-vmm"))
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    common::wait_for(
        || vt_http::call(&socket, "GET", "/vms", None).is_ok(),
        "vtd's socket",
    );
    let def = format!(
        r#"{{"name":"l","memory_mib":16,"kernel":"{}"}}"#,
        kernel.display()
    );
    let r = vt_http::call(&socket, "POST", "/vms", Some(def.into_bytes())).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    // The start fails (a header, not a kernel); the warning came first.
    let _ = vt_http::call(&socket, "POST", "/vms/l/start", None).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let warned = text.contains(&format!(
        "vtd: VM l: warning: kernel {} is Linux and this host's /dev/kvm is PVM",
        kernel.display()
    ));
    assert_eq!(warned, pvm::host_is_pvm(), "{text}");
    common::kill_vmms_under(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn info_shows_each_nics_tap_mac_and_whether_it_is_attached() {
    common::require_kvm!();
    if !jail::is_root() {
        eprintln!("skipped: needs root (a network namespace with a bridge)");
        return;
    }
    let vtd = Vtd::start_in_netns("nicinfo", "vtbrinfo");
    let o = vtd.vt(&[
        "create",
        "--name",
        "n",
        "--ram",
        "16",
        "--network",
        "bridge=vtbrinfo",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The NIC line's last part, exactly ("attached to X" is also the end
    // of "NOT attached to X"); vtd's view of the links is at most a
    // second old, so a change behind its back is waited for.
    let nic_line = || {
        let out = stdout(&vtd.vt(&["info", "n"]));
        out.lines()
            .find(|l| l.starts_with("NIC:"))
            .unwrap_or_default()
            .to_string()
    };
    let info = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let line = nic_line();
            if line.rsplit(", ").next() == Some(want) {
                return line;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "wanted '{want}' ending: {line}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let stopped = info("not attached (VM stopped)");
    assert!(vtd.vt(&["start", "n"]).status.success());
    let running = info("attached to vtbrinfo");
    let s = vtd.status("n");
    let nic = &s.nics[0];
    assert!(nic.attached);
    assert!(
        running.contains(&format!("tap {}, mac {}", nic.tap, nic.mac)),
        "{running}"
    );
    assert!(stopped.contains(&nic.tap));
    // The MAC is the one the guest's NIC has: vt-vmm derives it from the
    // tap name when none is defined.
    assert!(nic.mac.starts_with("52:54:00:"), "{}", nic.mac);
    // Taken off the bridge behind vtd's back: info says so.
    let o = std::process::Command::new("nsenter")
        .arg(format!("--net={}", vtd.netns_path().unwrap()))
        .args(["--", "ip", "link", "set", &nic.tap, "nomaster"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    info("NOT attached to vtbrinfo");
    assert!(vtd.vt(&["stop", "n"]).status.success());
}

//! A VM's whole life through the API and through `vt`, with real tiny
//! guests on the host's /dev/kvm.

mod common;

use std::io::BufRead;

use api::manager::{Event, VmState};
use common::{pid_alive, require_kvm, wait_for, Vtd};
use serde_json::Value;

#[test]
fn full_lifecycle_over_the_api() {
    require_kvm!();
    let vtd = Vtd::start("life");
    let (_, mut events) = vt_http::open_stream(&vtd.socket, "GET", "/events", None).unwrap();
    vtd.define("a");
    assert_eq!(vtd.status("a").state, VmState::Stopped);

    let s = vtd.expect("POST", "/vms/a/start", None, 200);
    assert_eq!(s["state"], "running");
    let pid = s["pid"].as_u64().unwrap() as u32;
    assert!(pid_alive(pid));
    wait_for(
        || vtd.console_log("a") == "tiny guest up\n",
        "the guest's message",
    );
    // A second start is a conflict; the VM keeps running.
    vtd.expect("POST", "/vms/a/start", None, 409);
    vtd.expect("DELETE", "/vms/a", None, 409);

    let s = vtd.status("a");
    let c = s.counters.expect("counters while running");
    assert_eq!(c.boots, 1);
    assert!(c.io_exits >= 14, "{c:?}");

    assert_eq!(
        vtd.expect("POST", "/vms/a/pause", None, 200)["state"],
        "paused"
    );
    vtd.expect("POST", "/vms/a/pause", None, 409);
    assert_eq!(
        vtd.expect("POST", "/vms/a/resume", None, 200)["state"],
        "running"
    );

    // Reset: the guest boots again (and prints again) in the same VMM.
    vtd.expect("POST", "/vms/a/reset", None, 200);
    wait_for(
        || vtd.console_log("a") == "tiny guest up\n".repeat(2),
        "the second boot",
    );
    assert_eq!(vtd.status("a").counters.unwrap().boots, 2);
    assert_eq!(vtd.status("a").pid, Some(pid));

    // Shutdown: the tiny guest ignores the power button, so vtd stops it
    // after the timeout.
    let s = vtd.expect("POST", "/vms/a/shutdown?timeout_secs=2", None, 200);
    assert_eq!(s["state"], "stopped");
    assert!(s["reason"].as_str().unwrap().contains("shut down"), "{s}");
    wait_for(|| !pid_alive(pid), "the VMM to go");
    vtd.expect("POST", "/vms/a/stop", None, 409);

    // Start again, stop hard, undefine.
    vtd.expect("POST", "/vms/a/start", None, 200);
    let s = vtd.expect("POST", "/vms/a/stop", None, 200);
    assert_eq!(
        (s["state"].as_str(), s["reason"].as_str()),
        (Some("stopped"), Some("stopped by request"))
    );
    vtd.expect("DELETE", "/vms/a", None, 204);
    vtd.expect("GET", "/vms/a", None, 404);
    assert!(!vtd.state.join("vms/a").exists());

    let expected = [
        "defined",
        "started",
        "paused",
        "resumed",
        "rebooted",
        "stopped",
        "started",
        "stopped",
        "undefined",
    ];
    let mut seen = Vec::new();
    for line in (&mut events).lines() {
        let line = line.unwrap();
        if line.is_empty() {
            continue;
        }
        let e: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(e.vm, "a");
        seen.push(e.event);
        if seen.len() == expected.len() {
            break;
        }
    }
    assert_eq!(seen, expected);

    // Every change was recorded with who asked (this process) and how
    // it ended; every lifecycle change with the VMM's pid.
    let me = std::process::id() as i64;
    let asked: Vec<Value> = vtd
        .audit("vm=a")
        .into_iter()
        .filter(|v| !v["action"].as_str().unwrap().starts_with("lifecycle."))
        .filter(|v| !v["action"].as_str().unwrap().starts_with("watch."))
        .collect();
    assert!(asked.len() >= 10, "{asked:?}");
    assert!(
        asked.iter().all(|v| v["pid"] == me && v["uid"].is_u64()),
        "{asked:?}"
    );
    assert!(
        asked.iter().any(|v| v["action"] == "pause"
            && v["result"] == "ok"
            && v["detail"] == "POST /vms/a/pause: 200"),
        "{asked:?}"
    );
    let life: Vec<Value> = vtd.audit("vm=a&action=lifecycle");
    let started = life
        .iter()
        .find(|v| v["action"] == "lifecycle.started")
        .expect("a lifecycle.started record");
    assert!(started["pid"].as_i64().is_some_and(|p| p > 1), "{started}");
    assert!(
        life.iter().any(|v| v["action"] == "lifecycle.stopped"),
        "{life:?}"
    );
}

#[test]
fn the_cli_drives_a_vm_and_sees_its_console() {
    require_kvm!();
    let vtd = Vtd::start("cli");
    let guest = vtd.guest.display().to_string();
    let boot = format!("kernel={guest},kernel_args=\"console=ttyS0,115200 quiet\"");
    let out = vtd.vt(&["create", "--name", "c1", "--ram", "16", "--boot", &boot]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = vtd.status("c1");
    assert_eq!(s.definition.cmdline, "console=ttyS0,115200 quiet");

    let out = vtd.vt(&["start", "c1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "c1: running\n");
    // Not a terminal: `vt console` streams the console until the VM stops.
    let console = std::process::Command::new(common::sibling("vt"))
        .args(["console", "c1"])
        .env("VT_SOCKET", &vtd.socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(|| vtd.console_log("c1").contains("up"), "the guest");
    let out = vtd.vt(&["list"]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("c1    running  1"),
        "{table}"
    );
    let out = vtd.vt(&["list", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v[0]["name"].as_str(), v[0]["state"].as_str()),
        (Some("c1"), Some("running"))
    );
    let out = vtd.vt(&["info", "c1"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("State:     running"));
    for verb in ["reset", "pause", "resume", "stop"] {
        let out = vtd.vt(&[verb, "c1"]);
        assert!(
            out.status.success(),
            "{verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if verb == "reset" {
            let two = "tiny guest up\n".repeat(2);
            wait_for(|| vtd.console_log("c1") == two, "the second boot");
        }
    }
    let out = console.wait_with_output().unwrap();
    assert!(out.status.success());
    // Both boots (start, then reboot) reached the follower.
    let two = "tiny guest up\n".repeat(2);
    assert_eq!(String::from_utf8_lossy(&out.stdout), two);
    // --no-follow prints what there is and returns.
    let out = vtd.vt(&["console", "c1", "--no-follow"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), two);
    let out = vtd.vt(&["undefine", "c1"]);
    assert!(out.status.success());
    let out = vtd.vt(&["info", "c1"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "vt: error: no VM named 'c1'\n"
    );
}

#[test]
fn the_virt_install_line_defines_a_vm_with_disk_and_network() {
    require_kvm!();
    // In its own network namespace, with the bridge the line names.
    let vtd = Vtd::start_in_netns("virtinstall", "vtbr0");
    let line = "create --name myvm --ram 1024 --disk path=myvm.img,size=10 --vcpus 2 \
                --os-type linux --network bridge=vtbr0 --graphics none --console pty \
                --disk path=data.img,size=1,cache=none";
    let args: Vec<&str> = line.split_whitespace().collect();
    let out = vtd.vt(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // vt (here, outside vtd's namespace) does not see the bridge: it warns.
    assert!(
        err.contains("bridge vtbr0 does not exist here yet"),
        "{err}"
    );
    let img = vtd.dir.join("myvm.img");
    let meta = std::fs::metadata(&img).unwrap();
    assert_eq!(meta.len(), 10 << 30);
    use std::os::unix::fs::MetadataExt;
    assert!(meta.blocks() < 16, "sparse");
    let s = vtd.status("myvm");
    assert_eq!((s.definition.vcpus, s.definition.memory_mib), (2, 1024));
    assert_eq!(s.definition.disks[0].path, img);
    assert_eq!(s.definition.disks[0].cache, api::CacheMode::Writeback);
    assert_eq!(s.definition.disks[1].cache, api::CacheMode::Direct);
    assert_eq!(s.definition.networks[0].bridge.as_deref(), Some("vtbr0"));
    // The daemon's default kernel was filled in, and the VM runs.
    assert_eq!(s.definition.kernel.as_ref(), Some(&vtd.guest));
    let out = vtd.vt(&["start", "myvm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The VMM got the O_DIRECT disk as asked.
    let pid = vtd.status("myvm").pid.expect("running VM has a pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains(",cache=none"), "{cmdline}");
    // It runs in its cell: own uid, no capabilities, no_new_privs, and
    // namespaces of its own.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_ne!(field("Uid:"), "0", "{status}");
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    assert_eq!(field("CapPrm:"), "0000000000000000", "{status}");
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    // ...and its own barriers are up: seccomp filtering (the main thread's
    // filter goes on once the VM is built, just after the socket answers).
    let seccomp = || {
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        st.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Seccomp:", "2"])
    };
    let t0 = std::time::Instant::now();
    while !seccomp() && t0.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(seccomp(), "no seccomp filter on the VMM's main thread");
    for ns in ["mnt", "pid", "net", "ipc", "uts"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(theirs, ours, "{ns} namespace shared with the host");
    }
    // Its root is the cell: /dev with kvm and null, nothing of the host.
    let root: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root/dev"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(root.contains(&"kvm".to_string()), "{root:?}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}/root/etc")).exists());
    // vt info says so, with the limits in force.
    let info = vtd.vt(&["info", "myvm"]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains(&format!("uid {}", field("Uid:"))), "{info}");
    assert!(info.contains("pids.max=98"), "{info}");
    assert!(info.contains("Seccomp:   on"), "{info}");
    assert!(info.contains("Landlock:  "), "{info}");
    // In its own cgroup while it runs...
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroups.contains("/vt/myvm"), "{cgroups}");
    // (vt/myvm.HASH: this vtd's state directory is not the default one.)
    let group = cgroups
        .lines()
        .find_map(|l| l.split_once(":/vt/").map(|(_, g)| g.to_string()))
        .unwrap();
    let out = vtd.vt(&["shutdown", "myvm", "--timeout", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("myvm: stopped (shut down"), "{text}");
    // ...and none is left behind.
    let layout = jail::cgroup::Layout::detect();
    let mounts = layout
        .v1
        .iter()
        .map(|(_, m)| m.clone())
        .chain(layout.v2.clone());
    for m in mounts {
        assert!(
            !m.join("vt").join(&group).exists(),
            "{} left behind",
            m.display()
        );
    }
}

/// `vt console` on a terminal (a pty from `script`): raw mode, keys go to
/// the guest, Ctrl-] detaches and leaves the VM running.
#[test]
fn interactive_console_types_and_detaches() {
    require_kvm!();
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no script(1) for a pty");
        return;
    }
    use std::io::{Read, Write};
    let vtd = Vtd::start("tty");
    vtd.define("t");
    vtd.expect("POST", "/vms/t/start", None, 200);
    wait_for(|| vtd.console_log("t").contains("up"), "the guest");
    let vt = common::sibling("vt");
    let mut child = std::process::Command::new("script")
        .args(["-qfec", &format!("{} console t", vt.display()), "/dev/null"])
        .env("VT_SOCKET", &vtd.socket)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stdout.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    });
    let mut stdin = child.stdin.take().unwrap();
    // Typed until the daemon has seen it: the terminal may not be raw yet.
    wait_for(
        || {
            let _ = stdin.write_all(b"hi").and_then(|()| stdin.flush());
            std::thread::sleep(std::time::Duration::from_millis(50));
            vtd.audit("vm=t&action=console.write")
                .iter()
                .any(|v| v["detail"] == "POST /vms/t/console: 204")
        },
        "console input to reach vtd",
    );
    stdin.write_all(&[0x1d]).unwrap();
    stdin.flush().unwrap();
    let status = child.wait().unwrap();
    let out = reader.join().unwrap();
    assert!(status.success(), "{out}");
    assert!(out.contains("Connected to t (detach with Ctrl-])"), "{out}");
    assert!(out.contains("tiny guest up"), "{out}");
    assert_eq!(vtd.status("t").state, VmState::Running);
}

#[test]
fn vt_events_follows_and_completions_print() {
    require_kvm!();
    let vtd = Vtd::start("events");
    let mut follower = std::process::Command::new(common::sibling("vt"))
        .args(["events", "--output", "json"])
        .env("VT_SOCKET", &vtd.socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Define probes until the follower shows one: then it is subscribed.
    let timeout = std::time::Duration::from_millis(100);
    let mut i = 0;
    while rx.recv_timeout(timeout).is_err() {
        assert!(i < 100, "vt events printed nothing");
        vtd.define(&format!("probe{i}"));
        i += 1;
    }
    vtd.define("e");
    vtd.expect("POST", "/vms/e/start", None, 200);
    let mut events = Vec::new();
    while events.len() < 2 {
        let line = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        let e: Event = serde_json::from_str(&line).unwrap();
        if e.vm == "e" {
            events.push((e.vm, e.event, e.state));
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(
        events,
        [
            ("e".to_string(), "defined".to_string(), VmState::Stopped),
            ("e".to_string(), "started".to_string(), VmState::Running)
        ]
    );
    let out = vtd.vt(&["completions", "bash"]);
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && script.contains("complete -F"),
        "{script}"
    );
    assert!(script.contains("shutdown") && script.contains("--ram"));
}

/// CPU limits from the definition reach the VMM's cgroup and `vt info`.
#[test]
fn cpu_limits_from_the_definition_reach_the_cgroup() {
    let vtd = Vtd::start("cputune");
    let def = r#"{"name":"cpu","memory_mib":16,"cpu":{"weight":50,"quota_percent":150}}"#;
    vtd.expect("POST", "/vms", Some(def), 201);
    let bad = r#"{"name":"bad","memory_mib":16,"cpu":{"weight":0}}"#;
    let e = vtd.expect("POST", "/vms", Some(bad), 400);
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("cpu.weight must be 1-10000"),
        "{e}"
    );
    vtd.expect("POST", "/vms/cpu/start", None, 200);
    let s = vtd.status("cpu");
    let limits = s.confinement.expect("jailed").cgroup_limits;
    let v2 = limits.iter().any(|l| l.starts_with("cpu.max="));
    let want: &[&str] = if v2 {
        &["cpu.weight=50", "cpu.max=150000 100000"]
    } else {
        &["cpu.shares=512", "cpu.cfs_quota_us=150000"]
    };
    for w in want {
        assert!(limits.iter().any(|l| l == w), "{w} not in {limits:?}");
    }
    // What the kernel holds, read back from the VMM's own cgroup.
    let pid = s.pid.expect("running");
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let group = cg
        .lines()
        .find_map(|l| l.split_once(":/vt/").map(|(_, g)| g.to_string()))
        .unwrap();
    let layout = jail::cgroup::Layout::detect();
    let quota = if v2 {
        let v2 = layout.v2.clone().unwrap();
        std::fs::read_to_string(v2.join("vt").join(&group).join("cpu.max")).unwrap()
    } else {
        let (_, m) = layout.v1.iter().find(|(c, _)| c == "cpu").unwrap();
        std::fs::read_to_string(m.join("vt").join(&group).join("cpu.cfs_quota_us")).unwrap()
    };
    assert!(quota.starts_with("150000"), "{quota} ({cg})");
    vtd.expect("POST", "/vms/cpu/stop", None, 200);
}

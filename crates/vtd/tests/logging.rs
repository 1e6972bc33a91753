//! vtd's own log (stderr: journald priority prefixes, no escape codes off
//! a terminal, filtered by VT_LOG) and the rotated console logs written
//! by `vt-logger`, with tiny guests on the host's /dev/kvm.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{require_kvm, sibling, wait_for, Vtd};

/// Runs a vtd with `VT_LOG=filter` (stderr to a file), defines, starts and
/// stops VM `a`, asks for a VM that does not exist, and returns its log.
fn vtd_log(name: &str, filter: &str) -> String {
    let dir = std::env::temp_dir().join(format!("vtd-log-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let guest = dir.join("guest");
    std::fs::write(
        &guest,
        tinyguest::elf_with("tiny guest up\n", true, tinyguest::Ending::Halt),
    )
    .unwrap();
    let socket = dir.join("vtd.sock");
    let log = dir.join("vtd.log");
    let mut vtd = Command::new(env!("CARGO_BIN_EXE_vtd"))
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--vmm")
        .arg(sibling("vt-vmm"))
        .arg("--default-kernel")
        .arg(&guest)
        .env("VT_LOG", filter)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for(
        || vt_http::call(&socket, "GET", "/vms", None).is_ok(),
        "vtd's socket",
    );
    let call = |m: &str, p: &str, body: Option<&str>| {
        vt_http::call(&socket, m, p, body.map(|b| b.as_bytes().to_vec())).unwrap()
    };
    assert_eq!(
        call("POST", "/vms", Some(r#"{"name":"a","memory_mib":16}"#)).status,
        201
    );
    assert_eq!(call("POST", "/vms/a/start", None).status, 200);
    assert_eq!(call("POST", "/vms/a/stop", None).status, 200);
    assert_eq!(call("GET", "/vms/nope", None).status, 404);
    // The stop's event may be published just after the answer.
    wait_for(
        || {
            std::fs::read_to_string(&log)
                .is_ok_and(|t| t.contains("VM a stopped") || filter == "warn")
        },
        "the stop in the log",
    );
    // SAFETY: kill sends SIGTERM to the vtd this test started.
    unsafe { libc::kill(vtd.id() as i32, libc::SIGTERM) };
    let _ = vtd.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    text
}

#[test]
fn vtd_logs_start_up_lifecycle_and_errors_as_vt_log_says() {
    require_kvm!();
    let debug = vtd_log("debug", "debug");
    assert!(
        !debug.contains('\x1b'),
        "no escape codes off a terminal:\n{debug}"
    );
    for line in debug.lines() {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"]
                .iter()
                .any(|p| line.starts_with(p)),
            "a journald priority first: {line:?}"
        );
    }
    let has = |text: &str, prefix: &str, words: &[&str]| {
        text.lines()
            .any(|l| l.starts_with(prefix) && words.iter().all(|w| l.contains(w)))
    };
    assert!(
        has(
            &debug,
            "<6>",
            &["vtd: vtd ", "serving", "state_dir=", "socket=", "vms=0"]
        ),
        "{debug}"
    );
    assert!(
        has(&debug, "<6>", &["vm=\"a\"", "event=\"defined\""]),
        "{debug}"
    );
    assert!(
        has(&debug, "<6>", &["vm=\"a\"", "event=\"started\"", "pid="]),
        "{debug}"
    );
    assert!(
        has(&debug, "<6>", &["vm=\"a\"", "event=\"stopped\""]),
        "{debug}"
    );
    assert!(
        has(&debug, "<7>", &["path=\"/vms/nope\"", "status=404"]),
        "{debug}"
    );

    // At info, the refused request (debug) is not logged; at warn,
    // nothing of this run is.
    let info = vtd_log("info", "info");
    assert!(has(&info, "<6>", &["event=\"started\""]), "{info}");
    assert!(!info.contains("status=404"), "{info}");
    assert!(!info.lines().any(|l| l.starts_with("<7>")), "{info}");
    let warn = vtd_log("warn", "warn");
    assert!(!warn.lines().any(|l| l.starts_with("<6>")), "{warn}");
    // A per-target filter: vtd's events at info, everything else at warn.
    let targeted = vtd_log("target", "warn,vtd::events=info");
    assert!(has(&targeted, "<6>", &["event=\"started\""]), "{targeted}");
    assert!(!targeted.contains("serving"), "{targeted}");
}

/// NAME.K ... NAME.1, NAME: oldest first.
fn logs(state: &Path, vm: &str) -> Vec<Vec<u8>> {
    let dir = state.join("vms").join(vm);
    let mut out = Vec::new();
    for n in (1..=5).rev() {
        if let Ok(b) = std::fs::read(dir.join(format!("console.log.{n}"))) {
            out.push(b);
        }
    }
    out.push(std::fs::read(dir.join("console.log")).unwrap_or_default());
    out
}

/// `count` numbered lines.
fn message(count: usize) -> String {
    (0..count)
        .map(|i| format!("console line {i:05}\n"))
        .collect()
}

#[test]
fn console_logs_are_capped_rotated_and_keep_the_newest_whole_lines() {
    require_kvm!();
    let vtd = Vtd::start_with_args(
        "rotate",
        &["--console-log-size", "4K", "--console-log-files", "2"],
    );
    // 20-byte lines: "small" fits in the three files (10 KB of 12 KiB),
    // "big" (24 KB) does not.
    for (name, lines) in [("small", 500), ("big", 1200)] {
        let kernel = vtd.dir.join(format!("{name}.elf"));
        std::fs::write(
            &kernel,
            tinyguest::elf_with(&message(lines), true, tinyguest::Ending::Halt),
        )
        .unwrap();
        let body = format!(
            r#"{{"name":"{name}","memory_mib":16,"kernel":"{}"}}"#,
            kernel.display()
        );
        vtd.expect("POST", "/vms", Some(&body), 201);
        vtd.expect("POST", &format!("/vms/{name}/start"), None, 200);
    }
    let last = |n: usize| format!("console line {:05}\n", n - 1);
    wait_for(
        || {
            logs(&vtd.state, "small")
                .last()
                .is_some_and(|l| l.ends_with(last(500).as_bytes()))
                && logs(&vtd.state, "big")
                    .last()
                    .is_some_and(|l| l.ends_with(last(1200).as_bytes()))
        },
        "every line logged",
    );
    for (name, lines) in [("small", 500), ("big", 1200)] {
        let files = logs(&vtd.state, name);
        assert_eq!(files.len(), 3, "{name}: console.log and two rotated files");
        assert!(!vtd.state.join(format!("vms/{name}/console.log.3")).exists());
        for f in &files {
            // The cap, plus at most the rest of the line being written
            // when it was reached (the console comes in pieces).
            assert!(f.len() <= 4096 + 20, "{name}: {} bytes", f.len());
            assert!(f.starts_with(b"console line "), "{name}: starts mid-line");
            assert_eq!(f.last(), Some(&b'\n'), "{name}: ends mid-line");
        }
        let kept = files.concat();
        let all = message(lines);
        assert!(
            all.as_bytes().ends_with(&kept),
            "{name}: the newest lines, in order"
        );
        if name == "small" {
            assert_eq!(kept, all.as_bytes(), "nothing lost below the cap");
        } else {
            assert!(kept.len() > 2 * 4096, "the rotated files are full");
        }
    }
    // `vt console --no-follow` shows the current file.
    let out = vtd.vt(&["console", "big", "--no-follow"]);
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(&last(1200)));
    vtd.expect("POST", "/vms/small/stop", None, 200);
    vtd.expect("POST", "/vms/big/stop", None, 200);
}

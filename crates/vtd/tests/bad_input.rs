//! Bad requests get a clear 4xx (and `vt` a non-zero exit with one line),
//! and leave the state directory exactly as it was.

mod common;

use common::{require_kvm, Vtd};

#[test]
fn bad_requests_are_4xx_and_change_nothing() {
    require_kvm!();
    let vtd = Vtd::start("bad");
    vtd.define("taken");
    let before = vtd.snapshot();
    let guest = vtd.guest.display().to_string();
    let missing = vtd.dir.join("nope").display().to_string();
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "GET",
            "/vms/ghost",
            String::new(),
            404,
            "no VM named 'ghost'",
        ),
        (
            "POST",
            "/vms/ghost/start",
            String::new(),
            404,
            "no VM named",
        ),
        ("DELETE", "/vms/ghost", String::new(), 404, "no VM named"),
        (
            "POST",
            "/vms/taken/stop",
            String::new(),
            409,
            "is not running",
        ),
        (
            "POST",
            "/vms/taken/pause",
            String::new(),
            409,
            "is not running",
        ),
        (
            "GET",
            "/nowhere",
            String::new(),
            404,
            "no route for GET /nowhere",
        ),
        ("PUT", "/vms", String::new(), 405, "not allowed"),
        (
            "POST",
            "/vms",
            r#"{"name":"taken","memory_mib":16}"#.into(),
            409,
            "exists",
        ),
        (
            "POST",
            "/vms",
            "{not json".into(),
            400,
            "invalid VM definition",
        ),
        ("POST", "/vms", String::new(), 400, "invalid VM definition"),
        (
            "POST",
            "/vms",
            r#"{"name":"x","ram":1}"#.into(),
            400,
            "unknown field `ram`",
        ),
        (
            "POST",
            "/vms",
            r#"{"name":"x","memory_mib":"big"}"#.into(),
            400,
            "invalid type",
        ),
        (
            "POST",
            "/vms",
            r#"{"name":"x","memory_mib":1}"#.into(),
            400,
            "memory must be between",
        ),
        (
            "POST",
            "/vms",
            r#"{"name":"x","memory_mib":-5}"#.into(),
            400,
            "invalid value",
        ),
        (
            "POST",
            "/vms",
            r#"{"name":"x","vcpus":0}"#.into(),
            400,
            "vCPU count",
        ),
        (
            "POST",
            "/vms",
            r#"{"name":"x","vcpus":9999}"#.into(),
            400,
            "vCPU count",
        ),
        (
            "POST",
            "/vms",
            r#"{"name":"../x"}"#.into(),
            400,
            "name must be",
        ),
        ("POST", "/vms", r#"{"name":""}"#.into(), 400, "name must be"),
        (
            "POST",
            "/vms",
            format!(r#"{{"name":"x","kernel":"{missing}"}}"#),
            400,
            "does not exist",
        ),
        (
            "POST",
            "/vms",
            format!(r#"{{"name":"x","kernel":"{guest}","initrd":"{missing}"}}"#),
            400,
            "initrd",
        ),
        (
            "POST",
            "/vms",
            format!(r#"{{"name":"x","disks":[{{"path":"{missing}"}}]}}"#),
            400,
            "disk",
        ),
        (
            "POST",
            "/vms",
            r#"{"name":"x","kernel":"rel/k"}"#.into(),
            400,
            "must be absolute",
        ),
        (
            "POST",
            "/vms/taken/shutdown?timeout_secs=abc",
            String::new(),
            400,
            "timeout_secs must be",
        ),
        (
            "POST",
            "/vms/taken/console",
            String::new(),
            400,
            "nothing to type",
        ),
        (
            "POST",
            "/vms",
            format!(r#"{{"name":"{}"}}"#, "n".repeat(65)),
            400,
            "name must be",
        ),
    ];
    for (method, path, body, status, text) in cases {
        let r = vtd.call(method, path, (!body.is_empty()).then_some(body.as_str()));
        let answer = r.text();
        assert_eq!(r.status, status, "{method} {path} {body}: {answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(text), "{method} {path} {body}: {msg}");
        assert!(!msg.contains('\n'));
    }
    assert_eq!(vtd.snapshot(), before, "the state directory changed");
    // A NIC on a bridge that is not there: defined, but refused at start.
    vtd.expect(
        "POST",
        "/vms",
        Some(r#"{"name":"nonet","memory_mib":16,"networks":[{"bridge":"vtnobr0"}]}"#),
        201,
    );
    let before = vtd.snapshot();
    let r = vtd.call("POST", "/vms/nonet/start", None);
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("bridge vtnobr0 does not exist"),
        "{}",
        r.text()
    );
    assert_eq!(
        vtd.snapshot(),
        before,
        "a refused start changed the state directory"
    );
    let r = vtd.call(
        "POST",
        "/vms",
        Some(r#"{"name":"x","networks":[{"bridge":"br0","mac":"01:00:00:00:00:01"}]}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("unicast MAC"), "{}", r.text());
    // Oversized: refused from its length, before it is read.
    let big = format!(r#"{{"name":"x","cmdline":"{}"}}"#, "a".repeat(2 << 20));
    let r = vtd.call("POST", "/vms", Some(&big));
    assert_eq!(r.status, 413, "{}", r.text());
    let r = vt_http::call(
        &vtd.socket,
        "GET",
        &format!("/vms/{}", "a".repeat(10_000)),
        None,
    )
    .unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(vtd.snapshot(), before, "the state directory changed");
}

#[test]
fn the_cli_reports_bad_input_with_exit_codes() {
    require_kvm!();
    let vtd = Vtd::start("badcli");
    vtd.define("taken");
    let before = vtd.snapshot();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["info", "ghost"], 4, "no VM named 'ghost'"),
        (&["stop", "taken"], 5, "is not running"),
        (&["create", "--name", "taken", "--ram", "16"], 5, "exists"),
        (
            &["create", "--name", "x", "--ram", "1"],
            2,
            "memory must be between",
        ),
        (&["create", "--name", "x", "--vcpus", "0"], 2, "vCPU count"),
        (
            &["create", "--name", "x", "--ram", "lots"],
            2,
            "invalid value",
        ),
        (
            &["create", "--name", "x", "--disk", "path=d.img,size=0"],
            2,
            "size must be",
        ),
        (
            &["create", "--name", "x", "--disk", "path=d.img,size=1x"],
            2,
            "whole number",
        ),
        (
            &["create", "--name", "x", "--disk", "path=missing.img"],
            2,
            "no such file",
        ),
        (
            &["create", "--name", "x", "--disk", "path=d.img,format=vmdk"],
            2,
            "raw or qcow2",
        ),
        (
            &["create", "--name", "x", "--graphics", "vnc"],
            2,
            "only none",
        ),
        (
            &["create", "--name", "x", "--console", "tcp"],
            2,
            "only pty",
        ),
        (
            &["create", "--name", "x", "--os-type", "windows"],
            2,
            "only linux",
        ),
        (
            &["create", "--name", "x", "--network", "vlan=3"],
            2,
            "unknown key 'vlan'",
        ),
        (
            &["create", "--name", "x", "--boot", "network"],
            2,
            "'network' is not supported",
        ),
        (
            &["create", "--name", "x", "--boot", "hd"],
            2,
            "give --disk path=IMAGE",
        ),
        (
            &["create", "--name", "x", "--boot", "kernel=nope"],
            4 - 3,
            "does not exist",
        ),
        (
            &["create", "--name", "x", "--cdrom", "a.iso"],
            2,
            "unexpected argument",
        ),
    ];
    for (args, code, text) in cases {
        let out = vtd.vt(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
        assert!(err.contains(text), "{args:?}: {err}");
    }
    assert!(!vtd.dir.join("d.img").exists(), "no disk left behind");
    assert_eq!(vtd.snapshot(), before, "the state directory changed");
    let out = std::process::Command::new(common::sibling("vt"))
        .args(["--socket", "/nonexistent/vtd.sock", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("vt: error: cannot reach vtd at /nonexistent/vtd.sock"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}

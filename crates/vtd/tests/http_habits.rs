//! What HTTP clients expect of vtd's API: `Allow` on 405, `HEAD`, unknown
//! query parameters refused, chunked bodies and `Expect: 100-continue`
//! (curl, as a user would type it).

mod common;

use common::Vtd;

#[test]
fn method_not_allowed_names_the_allowed_methods() {
    let vtd = Vtd::start("allow");
    let r = vtd.call("PUT", "/vms", None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, POST, HEAD"));
    let r = vtd.call("GET", "/vms/ghost/start", None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
}

#[test]
fn unknown_query_parameters_are_400_and_change_nothing() {
    let vtd = Vtd::start("query");
    vtd.define("q");
    let before = vtd.snapshot();
    // A typo of timeout_secs: refused before anything is done.
    let r = vtd.call("POST", "/vms/q/start?timeout=5", None);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("unknown query parameter 'timeout'"),
        "{}",
        r.text()
    );
    assert_eq!(vtd.snapshot(), before);
    let r = vtd.call("GET", "/vms?all=1", None);
    assert_eq!(r.status, 400, "{}", r.text());
    // Documented ones still work.
    vtd.expect("POST", "/vms/q/shutdown?timeout_secs=1", None, 409);
}

#[test]
fn curl_head_chunked_and_expect_continue() {
    let vtd = Vtd::start("curl");
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--unix-socket"])
            .arg(&vtd.socket)
            .args(args)
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A chunked body with 100-continue: curl's own framing of a piped body.
    let start = std::time::Instant::now();
    let out = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "5",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        r#"{"name":"c","memory_mib":16}"#,
        "-w",
        "\n%{http_code}",
        "http://localhost/vms",
    ]);
    assert!(out.ends_with("\n201"), "{out}");
    assert!(start.elapsed() < std::time::Duration::from_millis(900));
    assert_eq!(vtd.status("c").definition.memory_mib, 16);
    let head = curl(&["-I", "http://localhost/vms/c"]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let get = vtd.call("GET", "/vms/c", None);
    assert!(
        head.contains(&format!("Content-Length: {}", get.body.len())),
        "{head}"
    );
}

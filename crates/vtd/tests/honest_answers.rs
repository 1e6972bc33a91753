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

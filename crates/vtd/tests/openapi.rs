//! The OpenAPI document served by vtd matches what vtd serves: every
//! documented operation reaches a handler (no "no route" 404, no 405).

mod common;

use common::Vtd;

#[test]
fn every_documented_operation_is_served() {
    let vtd = Vtd::start("openapi");
    let doc = vtd.expect("GET", "/openapi.json", None, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10);
    let mut checked = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            // A VM, network or switch that does not exist: 404 (or 400
            // for a body that is not one).
            let concrete = path.replace("{name}", "ghost");
            let target = if concrete == "/events" {
                // A stream: only its head is read.
                let (head, _) = vt_http::open_stream(&vtd.socket, "GET", "/events", None).unwrap();
                assert_eq!(head.status, 200);
                checked += 1;
                continue;
            } else {
                concrete
            };
            let r = vtd.call(&method.to_uppercase(), &target, Some("{}"));
            let text = r.text();
            assert!(
                r.status != 405 && !text.contains("no route"),
                "{method} {path}: {} {text}",
                r.status
            );
            let documented = ops[method]["responses"]
                .as_object()
                .unwrap()
                .contains_key(&r.status.to_string());
            assert!(
                documented,
                "{method} {path} answered an undocumented {}",
                r.status
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 36);
    // And something undocumented is not served.
    assert_eq!(vtd.call("GET", "/vms/ghost/nothing", None).status, 404);
}

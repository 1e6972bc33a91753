//! Two clients creating one name at the same moment: one 201, one 409, and
//! one definition on disk.

mod common;

use std::sync::{Arc, Barrier};

use common::{require_kvm, Vtd};

#[test]
fn concurrent_creates_of_one_name_give_one_conflict() {
    require_kvm!();
    let vtd = Arc::new(Vtd::start("race"));
    for round in 0..20 {
        let name = format!("race{round}");
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (vtd, barrier, name) = (vtd.clone(), barrier.clone(), name.clone());
                std::thread::spawn(move || {
                    let body = format!(r#"{{"name":"{name}","memory_mib":16}}"#);
                    barrier.wait();
                    vtd.call("POST", "/vms", Some(&body)).status
                })
            })
            .collect();
        let mut codes: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        codes.sort();
        assert_eq!(codes, [201, 409], "round {round}");
    }
    let list = vtd.expect("GET", "/vms", None, 200);
    assert_eq!(list.as_array().unwrap().len(), 20);
    let dirs = std::fs::read_dir(vtd.state.join("vms")).unwrap().count();
    assert_eq!(dirs, 20);
}

#[test]
fn socket_is_group_only() {
    use std::os::unix::fs::PermissionsExt;
    let vtd = Vtd::start("perms");
    let mode = std::fs::metadata(&vtd.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    // The state (consoles, definitions, logs) is root's alone, whatever
    // the umask: a VM's files too.
    vtd.expect("POST", "/vms", Some(r#"{"name":"p"}"#), 201);
    for p in [vtd.state.clone(), vtd.state.join("vms")] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", p.display());
    }
    let def = vtd.state.join("vms/p/definition.json");
    let mode = std::fs::metadata(&def).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "definition.json is {:o}", mode & 0o777);
}

#[test]
fn one_vtd_per_state_directory() {
    let vtd = Vtd::start("lock");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vtd"))
        .arg("--socket")
        .arg(vtd.dir.join("other.sock"))
        .arg("--state-dir")
        .arg(&vtd.state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another vtd is using this state directory"),
        "{err}"
    );
    assert!(!vtd.dir.join("other.sock").exists());
    // The first one still serves.
    vtd.expect("GET", "/vms", None, 200);
}

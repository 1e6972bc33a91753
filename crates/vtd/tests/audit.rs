//! The audit trail through a real `vtd`: API records carry the peer's
//! uid/gid/pid and the result, lifecycle changes the VMM's pid; a VM's
//! image is watched from its definition on, its VMM's reads are
//! attributed to the VM and a host `cat` of the image appears with its
//! pid, executable and key; admin watches persist across restarts;
//! `vt audit verify` finds an edited record through `vtd` and offline.

mod common;

use std::process::Command;

use common::{require_kvm, wait_for, Vtd};
use serde_json::Value;

fn ok(vtd: &Vtd, args: &[&str]) -> String {
    let out = vtd.vt(args);
    assert!(
        out.status.success(),
        "vt {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(vtd: &Vtd, args: &[&str]) -> Vec<Value> {
    let mut a = args.to_vec();
    a.extend(["--output", "json"]);
    serde_json::from_str(&ok(vtd, &a)).unwrap()
}

/// Runs `cat PATH` to its end; its pid.
/// A `cat` that has read `path` and stays alive (reading its stdin) until
/// dropped: image watches are notification events, and the executable
/// of an opener that is gone when vtd reads the event cannot be named.
struct Cat(std::process::Child);

impl Drop for Cat {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

fn cat(path: &std::path::Path) -> (u32, Cat) {
    let cat = Command::new("cat")
        .arg(path)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (cat.id(), Cat(cat))
}

#[test]
fn api_actions_and_refusals_are_records_with_the_peer_and_the_result() {
    let vtd = Vtd::start("audit-api");
    vtd.define("a");
    vtd.expect("POST", "/vms/nope/start", None, 404);
    vtd.expect("POST", "/vms", Some("{bad json"), 400);
    let me = std::process::id() as i64;
    let recs = vtd.audit("");
    let define = recs
        .iter()
        .find(|r| r["action"] == "define")
        .expect("define recorded");
    assert_eq!(define["vm"], "a");
    assert_eq!(define["result"], "ok");
    assert_eq!(define["pid"], me);
    assert_eq!(define["uid"], 0);
    assert_eq!(define["gid"], 0);
    let missing = recs
        .iter()
        .find(|r| r["vm"] == "nope")
        .expect("the 404 recorded");
    assert_eq!(
        (&missing["action"], &missing["result"]),
        (&"start".into(), &"denied".into())
    );
    assert!(
        missing["detail"]
            .as_str()
            .unwrap()
            .contains("no VM named 'nope'"),
        "{missing}"
    );
    let bad = recs
        .iter()
        .find(|r| {
            r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("invalid VM definition"))
        })
        .expect("the 400 recorded");
    assert_eq!(bad["result"], "denied");
    assert_eq!(bad["pid"], me);
    // Filters, through vt.
    let denied = json(&vtd, &["audit", "search", "--result", "denied"]);
    assert_eq!(denied.len(), 2, "{denied:?}");
    let by_vm = json(
        &vtd,
        &["audit", "search", "--vm", "a", "--action", "define"],
    );
    assert_eq!(by_vm.len(), 1, "{by_vm:?}");
    assert!(json(&vtd, &["audit", "search", "--uid", "12345"]).is_empty());
    assert!(json(
        &vtd,
        &["audit", "search", "--since", "now", "--action", "define"]
    )
    .is_empty());
    assert_eq!(
        json(
            &vtd,
            &["audit", "search", "--since", "1h", "--action", "define", "--result", "ok"]
        )
        .len(),
        1
    );
    let out = vtd.vt(&["audit", "search", "--result", "maybe"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ok, denied or failed"));
    // A request too big to read is a refusal too.
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(2 << 20));
    let r = vt_http::call(&vtd.socket, "POST", "/vms", Some(huge.into_bytes()));
    if let Ok(r) = r {
        assert!(r.status >= 400);
    }
    wait_for(
        || {
            vtd.audit("action=request").iter().any(|r| {
                r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("unreadable request"))
            })
        },
        "the unreadable request's record",
    );
    // Intact, through vtd.
    let text = ok(&vtd, &["audit", "verify"]);
    assert!(text.contains("trail intact"), "{text}");
}

#[test]
fn verify_finds_an_edited_record_online_and_offline() {
    let mut vtd = Vtd::start("audit-verify");
    vtd.define("a");
    vtd.expect("POST", "/vms/a/pause", None, 409);
    let dir = vtd.state.join("audit");
    let dir_s = dir.display().to_string();
    let text = ok(&vtd, &["audit", "verify", "--dir", &dir_s]);
    assert!(
        text.contains("trail intact") && text.contains("seals checked"),
        "{text}"
    );
    vtd.kill9();
    // Someone turns the refused pause into a success.
    let f = dir.join("trail-000001.log");
    let body = std::fs::read_to_string(&f).unwrap();
    let n = body
        .lines()
        .position(|l| l.contains("\"action\":\"pause\""))
        .unwrap();
    let edited = body.replacen(
        "\"result\":\"denied\",\"detail\":\"POST /vms/a/pause",
        "\"result\":\"ok\",\"detail\":\"POST /vms/a/pause",
        1,
    );
    assert_ne!(edited, body);
    std::fs::write(&f, edited).unwrap();
    let out = vtd.vt(&["audit", "verify", "--dir", &dir_s]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let want = format!("trail-000001.log line {} (record {}): edited", n + 1, n + 1);
    assert!(text.contains(&want), "{text}");
    // And through vtd after a restart (which also records its reopening).
    vtd.restart();
    let out = vtd.vt(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&want));
}

#[test]
fn image_accesses_are_recorded_and_attributed() {
    require_kvm!();
    if !jail::is_root() {
        eprintln!("skipped: fanotify needs root");
        return;
    }
    let mut vtd = Vtd::start("audit-watch");
    ok(
        &vtd,
        &[
            "create",
            "--name",
            "w",
            "--memory",
            "16",
            "--disk",
            "path=w.qcow2,format=qcow2,size=1",
        ],
    );
    let image = vtd.dir.join("w.qcow2");
    let watches = json(&vtd, &["audit", "watch", "list"]);
    let img = watches
        .iter()
        .find(|w| w["key"] == "image:w")
        .expect("image watch");
    assert_eq!(img["path"], image.display().to_string());
    // The VM's own reads (its VMM opening the qcow2 through the
    // descriptor vtd passed) are attributed to the VM.
    vtd.expect("POST", "/vms/w/start", None, 200);
    let vmm = vtd.status("w").pid.unwrap() as i64;
    wait_for(
        || !vtd.audit("vm=w&action=watch.read&key=image%3Aw").is_empty(),
        "the VMM's read of its image",
    );
    let reads = vtd.audit("vm=w&action=watch.read");
    assert!(reads.iter().all(|r| r["pid"] == vmm), "{reads:?}");
    assert!(
        reads[0]["exe"]
            .as_str()
            .is_some_and(|e| e.ends_with("vt-vmm")),
        "{reads:?}"
    );
    // vtd's own open of it, when it started the VM, is vtd's.
    let opens = vtd.audit("key=image%3Aw&action=watch.open");
    let vtd_pid = vtd.pid().unwrap() as i64;
    assert!(
        opens
            .iter()
            .any(|r| r["pid"] == vtd_pid && r.get("vm").is_none()),
        "{opens:?}"
    );
    // A host process reading the image: its pid, executable and uid.
    let (pid, _cat) = cat(&image);
    wait_for(
        || !vtd.audit(&format!("pid={pid}&key=image%3Aw")).is_empty(),
        "cat's access",
    );
    let by_cat = json(
        &vtd,
        &[
            "audit",
            "search",
            "--pid",
            &pid.to_string(),
            "--key",
            "image:w",
        ],
    );
    let open = by_cat
        .iter()
        .find(|r| r["action"] == "watch.open")
        .expect("cat's open");
    assert!(
        open["exe"].as_str().is_some_and(|e| e.ends_with("/cat")),
        "{open}"
    );
    assert_eq!(open["uid"], 0);
    assert!(
        open.get("vm").is_none(),
        "a host process is no VM's: {open}"
    );
    vtd.expect("POST", "/vms/w/stop", None, 200);

    // An admin's watch: added, survives a restart, removed.
    let other = vtd.dir.join("other.img");
    std::fs::write(&other, b"data").unwrap();
    let other_s = other.display().to_string();
    ok(
        &vtd,
        &[
            "audit", "watch", "add", &other_s, "--perm", "r", "--key", "mine",
        ],
    );
    vtd.kill9();
    vtd.restart();
    let list = json(&vtd, &["audit", "watch", "list"]);
    let mine = list.iter().find(|w| w["key"] == "mine").expect("restored");
    let (pid, _cat) = cat(&other);
    wait_for(
        || !vtd.audit(&format!("key=mine&pid={pid}")).is_empty(),
        "the watch",
    );
    let id = mine["id"].to_string();
    ok(&vtd, &["audit", "watch", "remove", &id]);
    assert!(json(&vtd, &["audit", "watch", "list"])
        .iter()
        .all(|w| w["key"] != "mine"));
    // Bad watches: clear errors.
    let trail = vtd.state.join("audit").display().to_string();
    for (args, want) in [
        (vec!["/nonexistent/x.img", "--key", "k"], "No such file"),
        (
            vec![other_s.as_str(), "--key", "k", "--perm", "q"],
            "use the letters",
        ),
        (vec![trail.as_str(), "--key", "k"], "directory"),
    ] {
        let mut a = vec!["audit", "watch", "add"];
        a.extend(args.iter().copied());
        let out = vtd.vt(&a);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{a:?}: {err}");
    }
    let key = vtd.state.join("audit.key").display().to_string();
    let runtime = vtd
        .state
        .join("vms/w/definition.json")
        .display()
        .to_string();
    for p in [key.as_str(), runtime.as_str(), "/proc/self/status"] {
        let out = vtd.vt(&["audit", "watch", "add", p, "--key", "k"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not watched"), "{p}: {err}");
    }
    // Undefining the VM removes its image watches.
    vtd.expect("DELETE", "/vms/w", None, 204);
    assert!(json(&vtd, &["audit", "watch", "list"]).is_empty());
    let text = ok(&vtd, &["audit", "verify"]);
    assert!(text.contains("trail intact"), "{text}");
}

#[test]
fn repeated_reads_are_coalesced_into_one_summary() {
    if !jail::is_root() {
        eprintln!("skipped: fanotify needs root");
        return;
    }
    let vtd = Vtd::start_with_args("audit-coalesce", &["--watch-coalesce", "1"]);
    let file = vtd.dir.join("big.img");
    std::fs::write(&file, vec![5u8; 1 << 20]).unwrap();
    let path = file.display().to_string();
    ok(
        &vtd,
        &[
            "audit", "watch", "add", &path, "--perm", "r", "--key", "big",
        ],
    );
    // This process reads it 500 times, in batches a little apart (so the
    // kernel cannot merge them all into one queued event).
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(&file).unwrap();
    let mut buf = [0u8; 4096];
    for batch in 0..5u64 {
        for i in 0..100u64 {
            f.read_exact_at(&mut buf, ((batch * 100 + i) % 256) * 4096)
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let me = std::process::id();
    let q = format!("key=big&pid={me}&action=watch.read");
    wait_for(|| vtd.audit(&q).len() >= 2, "the summary of repeats");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let reads = vtd.audit(&q);
    assert_eq!(reads.len(), 2, "one record, then one summary: {reads:?}");
    let summary = reads[1]["detail"].as_str().unwrap();
    assert!(summary.contains("more time(s) within 1 s"), "{summary}");
}

#[test]
fn image_watches_never_cover_vtds_own_files() {
    if !jail::is_root() {
        eprintln!("skipped: fanotify needs root");
        return;
    }
    let mut vtd = Vtd::start("audit-forbidden");
    vtd.define("seed");
    // A disk naming a trail file, and one naming a link to the key.
    let trail = std::fs::read_dir(vtd.state.join("audit"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_file())
        .expect("a trail file");
    let link = vtd.dir.join("disk.raw");
    std::os::unix::fs::symlink(vtd.state.join("audit.key"), &link).unwrap();
    let plain = vtd.dir.join("plain.raw");
    std::fs::write(&plain, vec![0u8; 4096]).unwrap();
    for (name, path) in [("t", &trail), ("l", &link), ("p", &plain)] {
        let body = serde_json::json!({
            "name": name,
            "memory_mib": 16,
            "disks": [{"path": path, "readonly": true}],
        });
        vtd.expect("POST", "/vms", Some(&body.to_string()), 201);
    }
    let check = |vtd: &Vtd| {
        let watches = json(vtd, &["audit", "watch", "list"]);
        let keys: Vec<&str> = watches.iter().filter_map(|w| w["key"].as_str()).collect();
        assert_eq!(keys, ["image:p"], "{watches:?}");
        let refused = vtd.audit("action=watch.add&result=failed");
        for vm in ["t", "l"] {
            assert!(
                refused
                    .iter()
                    .any(|r| r["vm"] == vm && r["detail"].as_str().unwrap().contains("not watched")),
                "{vm}: {refused:?}"
            );
        }
    };
    check(&vtd);
    // Also when vtd puts the watches back at a restart, and with a plain
    // image swapped for a link into the state directory meanwhile.
    vtd.kill9();
    std::fs::remove_file(&plain).unwrap();
    std::os::unix::fs::symlink(&trail, &plain).unwrap();
    vtd.restart();
    let watches = json(&vtd, &["audit", "watch", "list"]);
    assert!(watches.is_empty(), "{watches:?}");
    check_not(&vtd);
    let text = ok(&vtd, &["audit", "verify"]);
    assert!(text.contains("trail intact"), "{text}");
}

/// After the swap: every image watch was refused as vtd's own file.
fn check_not(vtd: &Vtd) {
    let refused = vtd.audit("action=watch.add&result=failed");
    assert!(
        refused
            .iter()
            .any(|r| r["vm"] == "p" && r["detail"].as_str().unwrap().contains("not watched")),
        "{refused:?}"
    );
}

/// A HEAD is served as the GET of the same target, and recorded as the
/// HEAD it was.
#[test]
fn a_head_is_recorded_as_head() {
    use std::io::{Read, Write};
    let vtd = Vtd::start("audit-head");
    let mut s = std::os::unix::net::UnixStream::connect(&vtd.socket).unwrap();
    s.write_all(b"HEAD /vms/ghost HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 404 "), "{out}");
    let recs = vtd.audit("vm=ghost");
    assert_eq!(recs.len(), 1, "{recs:?}");
    let detail = recs[0]["detail"].as_str().unwrap();
    assert!(detail.starts_with("HEAD /vms/ghost: 404"), "{detail}");
}

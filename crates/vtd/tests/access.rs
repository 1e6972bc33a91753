//! The API knows who asks: paths a non-root member of the socket group
//! puts in a definition are opened as that user (at define and again at
//! start, never following a symlink), an error does not tell whether a
//! hidden path exists, the read-only socket serves anyone and refuses
//! every change, and each refusal is in the audit trail with the uid.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::Vtd;

const MEMBER: u32 = 60_000;
const STRANGER: u32 = 60_001;
/// A second member of the socket group (primary group MEMBER).
const OTHER_MEMBER: u32 = 60_003;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `curl` as `uid`: the status line, then the body.
fn curl_as(uid: u32, sock: &std::path::Path, method: &str, path: &str, body: &str) -> String {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-X", method, "--data", body])
        .arg("--unix-socket")
        .arg(sock)
        .arg(format!("http://vtd{path}"))
        .uid(uid)
        .gid(uid)
        .output()
        .expect("curl (scripts/setup-host.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    format!("{code} {body}")
}

#[test]
fn callers_get_only_what_their_uid_allows() {
    if !jail::is_root() {
        eprintln!("not root: skipped");
        return;
    }
    let vtd = Vtd::start_with_args("access", &["--socket-group", &MEMBER.to_string()]);
    let ro = vtd.dir.join("vtd-ro.sock");
    let mode = std::fs::metadata(&ro).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o666);
    // The member's own image, and a root-only one beside it.
    let mine = vtd.dir.join("mine.img");
    std::fs::write(&mine, vec![0u8; 1 << 20]).unwrap();
    std::os::unix::fs::chown(&mine, Some(MEMBER), Some(MEMBER)).unwrap();
    let secret = vtd.dir.join("root.img");
    std::fs::write(&secret, vec![0u8; 1 << 20]).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sock = vtd.socket.clone();

    // vt itself cannot read them as the member (it probes the format)...
    let out = vtd.vt_as(
        MEMBER,
        &sock,
        &["create", "--name", "s", "--disk", "path=/etc/shadow"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    // ...and vtd opens them as the member whatever the client says.
    for (name, path) in [
        ("shadow", PathBuf::from("/etc/shadow")),
        ("rootimg", secret.clone()),
    ] {
        let body = format!(
            r#"{{"name":"{name}","disks":[{{"path":"{}","format":"raw"}}]}}"#,
            path.display()
        );
        let out = curl_as(MEMBER, &sock, "POST", "/vms", &body);
        assert!(out.starts_with("403"), "{name}: {out}");
        // The same words whether the file exists or not.
        let want = format!("no such file, or not writable by uid {MEMBER}");
        assert!(out.contains(&want), "{name}: {out}");
    }
    // Straight to the API (vt itself checks that a disk exists): a missing
    // path reads exactly like a forbidden one.
    let missing = vtd.dir.join("nope.img");
    let body = format!(
        r#"{{"name":"missing","disks":[{{"path":"{}"}}]}}"#,
        missing.display()
    );
    let out = curl_as(MEMBER, &sock, "POST", "/vms", &body);
    assert!(
        out.contains("\"status\":403") || out.starts_with("403"),
        "{out}"
    );
    let want = format!("nope.img: no such file, or not writable by uid {MEMBER}");
    assert!(out.contains(&want), "{out}");
    // Its own file: defined and started (in a cell), then stopped.
    let disk = format!("path={}", mine.display());
    let out = vtd.vt_as(
        MEMBER,
        &sock,
        &["create", "--name", "mine", "--disk", &disk],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        vtd.status("mine").definition.owner.map(|o| o.uid),
        Some(MEMBER)
    );
    let out = vtd.vt_as(MEMBER, &sock, &["start", "mine"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = vtd.vt_as(MEMBER, &sock, &["stop", "mine"]);
    assert!(out.status.success(), "{}", text(&out));
    // Another member of the group may not touch it, nor a root VM.
    vtd.define("rootvm");
    for (vm, args, whose) in [
        ("mine", &["stop", "mine"][..], "uid 60000"),
        ("mine", &["undefine", "mine"][..], "uid 60000"),
        ("mine", &["console", "mine", "--no-follow"][..], "uid 60000"),
        ("rootvm", &["start", "rootvm"][..], "root"),
    ] {
        let out = vtd.vt_as_ids(OTHER_MEMBER, MEMBER, &sock, args);
        assert!(!out.status.success(), "{vm}: {}", text(&out));
        let want = format!("VM '{vm}' belongs to {whose}");
        assert!(text(&out).contains(&want), "{args:?}: {}", text(&out));
    }
    // The image swapped for a symlink to the root-only one: refused at start.
    std::fs::remove_file(&mine).unwrap();
    std::os::unix::fs::symlink(&secret, &mine).unwrap();
    let out = vtd.vt_as(MEMBER, &sock, &["start", "mine"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("symbolic links are not followed"),
        "{}",
        text(&out)
    );
    assert_eq!(vtd.status("mine").pid, None);

    // Anyone reads through the read-only socket and changes nothing.
    let out = vtd.vt_as(STRANGER, &ro, &["list"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("mine"), "{}", text(&out));
    let out = vtd.vt_as(STRANGER, &ro, &["start", "mine"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("read-only socket"), "{}", text(&out));
    // The admin socket is not theirs at all.
    let out = vtd.vt_as(STRANGER, &sock, &["list"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    // The trail is root's: a member asking is refused (and recorded).
    let out = curl_as(MEMBER, &sock, "GET", "/audit", "");
    assert!(out.starts_with("403"), "{out}");
    // Every refusal is in the audit trail, with who asked.
    let refused: Vec<serde_json::Value> = vtd
        .audit("result=denied")
        .into_iter()
        .filter(|v| v["detail"].as_str().is_some_and(|d| d.contains(": 403")))
        .collect();
    let by = |uid: u32| refused.iter().filter(|v| v["uid"] == uid).count();
    let log = serde_json::to_string_pretty(&refused).unwrap();
    // Three defines, the symlinked start, the trail.
    assert_eq!(by(MEMBER), 5, "{log}");
    // stop, undefine, console and start by the other member.
    assert_eq!(by(OTHER_MEMBER), 4, "{log}");
    let posts =
        |v: &&serde_json::Value| v["detail"].as_str().is_some_and(|d| d.starts_with("POST"));
    assert_eq!(refused.iter().filter(posts).count(), 7, "{log}");
    assert_eq!(by(STRANGER), 1, "{log}");
    // Each with its pid and gid, the VM and the action.
    let console = refused
        .iter()
        .find(|v| v["action"] == "console.read")
        .expect("the refused console read");
    assert_eq!(console["vm"], "mine");
    assert_eq!(console["gid"], MEMBER);
    assert!(console["pid"].as_i64().is_some_and(|p| p > 1), "{console}");
    let ro_start = refused.iter().find(|v| v["uid"] == STRANGER).unwrap();
    assert_eq!(
        (&ro_start["action"], &ro_start["vm"]),
        (&"start".into(), &"mine".into())
    );
    assert!(
        ro_start["detail"]
            .as_str()
            .unwrap()
            .contains("read-only socket"),
        "{ro_start}"
    );
}

#[test]
fn a_bad_vm_uid_range_is_refused_before_anything_is_made() {
    let dir = std::env::temp_dir().join(format!("vtd-{}-uidrange", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vtd"))
        .arg("--socket")
        .arg(dir.join("s.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--vm-uid-base", "1000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must start above 65535"), "{err}");
    assert!(!dir.exists(), "vtd made {} before refusing", dir.display());
}

/// A member's kernel swapped for a symlink to a FIFO after define: vtd
/// never opens it as root on the way to the start (the PVM warning's look
/// at the kernel included); inotify sees no open of the FIFO.
#[test]
fn an_owners_kernel_is_never_opened_by_vtd_as_root() {
    use std::os::unix::ffi::OsStrExt;
    if !jail::is_root() {
        eprintln!("not root: skipped");
        return;
    }
    let vtd = Vtd::start_with_args("kernelfifo", &["--socket-group", &MEMBER.to_string()]);
    let kernel = vtd.dir.join("member-kernel");
    std::fs::copy(&vtd.guest, &kernel).unwrap();
    std::os::unix::fs::chown(&kernel, Some(MEMBER), Some(MEMBER)).unwrap();
    let body = format!(
        r#"{{"name":"k","memory_mib":16,"kernel":"{}"}}"#,
        kernel.display()
    );
    let out = curl_as(MEMBER, &vtd.socket, "POST", "/vms", &body);
    assert!(out.starts_with("201"), "{out}");
    // Swapped behind vtd's back.
    let fifo = vtd.dir.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    std::fs::remove_file(&kernel).unwrap();
    std::os::unix::fs::symlink(&fifo, &kernel).unwrap();
    // SAFETY: inotify on a descriptor this test owns; `c` outlives the
    // call.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: as above.
    assert!(unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_OPEN) } >= 0);
    let r = vtd.call("POST", "/vms/k/start", None);
    assert!(r.status >= 400, "started: {}", r.text());
    let mut buf = [0u8; 256];
    // SAFETY: reads into a buffer that outlives the call.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: closes the descriptor this test opened.
    unsafe { libc::close(fd) };
    assert!(n <= 0, "vtd opened the FIFO behind the kernel symlink");
    assert_eq!(vtd.status("k").state, api::manager::VmState::Stopped);
}

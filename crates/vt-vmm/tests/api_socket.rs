//! `vt-vmm --api-socket`: the control API against a running tiny guest on
//! the host's `/dev/kvm`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::control::{self as proto, RunState, VmmCounters, VmmInfo};
use tinyguest::Ending;
use vt_http::call;

/// Kills the VMM when the test ends, however it ends.
struct Vmm(Child);

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have_kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

macro_rules! require_kvm {
    () => {
        if !have_kvm() {
            eprintln!("skipped: no usable /dev/kvm");
            return;
        }
    };
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vt-api-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start(d: &Path, ending: Ending, extra: &[&str]) -> (Vmm, PathBuf, PathBuf) {
    let kernel = d.join("guest");
    std::fs::write(&kernel, tinyguest::elf_with("api guest up\n", true, ending)).unwrap();
    let sock = d.join("api.sock");
    let log = d.join("console.log");
    let child = Command::new(env!("CARGO_BIN_EXE_vt-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "16", "--serial"])
        .arg(format!("file={}", log.display()))
        .arg("--api-socket")
        .arg(&sock)
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let vmm = Vmm(child);
    wait_for(
        || call(&sock, "GET", proto::INFO, None).is_ok_and(|r| r.status == 200),
        "the API socket",
    );
    wait_for(|| info(&sock).state != RunState::Starting, "the VM built");
    (vmm, sock, log)
}

fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn info(sock: &Path) -> VmmInfo {
    let r = call(sock, "GET", proto::INFO, None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn put(sock: &Path, path: &str) -> (u16, String) {
    let r = call(sock, "PUT", path, None).unwrap();
    (r.status, r.text())
}

#[test]
fn info_pause_resume_counters_and_stop() {
    require_kvm!();
    let d = dir("lifecycle");
    let (mut vmm, sock, log) = start(&d, Ending::Halt, &[]);
    wait_for(
        || std::fs::read_to_string(&log).unwrap_or_default() == "api guest up\n",
        "the guest's message",
    );
    let i = info(&sock);
    assert_eq!(i.state, RunState::Running);
    assert_eq!(i.pid, vmm.0.id());
    assert_eq!(i.config.memory_mib, 16);

    assert_eq!(put(&sock, proto::PAUSE).0, 204);
    assert_eq!(info(&sock).state, RunState::Paused);
    let (status, body) = put(&sock, proto::PAUSE);
    assert_eq!(status, 409);
    assert!(body.contains("already paused"), "{body}");
    assert_eq!(put(&sock, proto::RESUME).0, 204);
    assert_eq!(info(&sock).state, RunState::Running);
    assert_eq!(put(&sock, proto::RESUME).0, 409);

    let r = call(&sock, "GET", proto::COUNTERS, None).unwrap();
    let c: VmmCounters = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((c.boots, c.pauses), (1, 1));
    // One port write per character printed, at least.
    assert!(c.io_exits >= "api guest up\n".len() as u64, "{c:?}");
    // The detail: one vCPU that wrote the message to the serial port and
    // used CPU time, 16 MiB of guest RAM of which the guest touched some.
    let d = &c.detail;
    assert!(d.devices_counted);
    assert_eq!(d.vcpus.len(), 1, "{d:?}");
    assert!(d.vcpus[0].exits.io_out >= 13, "{d:?}");
    assert!(d.vcpus[0].cpu_time_ns > 0, "{d:?}");
    assert_eq!(d.memory.guest_bytes, 16 << 20);
    assert!(
        d.memory.guest_resident_bytes > 0 && d.memory.guest_resident_bytes <= 16 << 20,
        "{d:?}"
    );
    assert!(d.disks.is_empty() && d.nets.is_empty());

    // The tiny guest ignores the button; the press itself is accepted.
    // (Linux powering off on it is checked in the lab: vtd_linux.rs.)
    assert_eq!(put(&sock, proto::POWER_BUTTON).0, 204);
    let r = call(&sock, "PUT", proto::CONSOLE, Some(b"ab".to_vec())).unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(call(&sock, "GET", "/nope", None).unwrap().status, 404);
    assert_eq!(
        call(&sock, "DELETE", proto::PAUSE, None).unwrap().status,
        405
    );
    assert_eq!(call(&sock, "POST", proto::INFO, None).unwrap().status, 405);

    let (status, _) = put(&sock, proto::STOP);
    assert!(status == 204, "{status}");
    let status = vmm.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // Removed on exit; under Landlock (the default) the VMM may not unlink
    // in that directory, so it stays, dead, until the next VMM replaces it.
    assert!(
        !sock.exists() || std::os::unix::net::UnixStream::connect(&sock).is_err(),
        "nobody answers on the socket after exit"
    );
}

#[test]
fn reboot_rebuilds_the_vm_with_restart() {
    require_kvm!();
    let d = dir("reboot");
    let (mut vmm, sock, log) = start(&d, Ending::Halt, &["--on-reboot", "restart"]);
    wait_for(
        || std::fs::read_to_string(&log).unwrap_or_default() == "api guest up\n",
        "the first boot",
    );
    assert_eq!(put(&sock, proto::PAUSE).0, 204);
    assert_eq!(put(&sock, proto::REBOOT).0, 204);
    wait_for(
        || std::fs::read_to_string(&log).unwrap_or_default() == "api guest up\n".repeat(2),
        "the second boot",
    );
    // A reboot leaves the VM running, whatever it was before.
    assert_eq!(info(&sock).state, RunState::Running);
    let r = call(&sock, "GET", proto::COUNTERS, None).unwrap();
    let c: VmmCounters = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(c.boots, 2);
    // Counted over both boots: each printed the 13-byte message.
    assert!(c.detail.vcpus[0].exits.io_out >= 26, "{c:?}");
    assert_eq!(vmm.0.try_wait().unwrap(), None);
}

#[test]
fn a_live_socket_is_not_taken_over() {
    require_kvm!();
    let d = dir("inuse");
    let (_vmm, sock, _) = start(&d, Ending::Halt, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_vt-vmm"))
        .arg("--kernel")
        .arg(d.join("guest"))
        .args(["--memory", "16", "--serial", "null", "--api-socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open API socket"), "{err}");
    // The first VMM still answers.
    assert_eq!(info(&sock).state, RunState::Running);
}

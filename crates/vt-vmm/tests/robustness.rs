//! `vt-vmm` under the things that went wrong in the field (issue 15): a
//! console nobody reads, stray signals, a control socket path reused by
//! another VMM, commands sent while a reset rebuilds the VM. Tiny guests
//! on the host's `/dev/kvm`.

mod common;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{have_kvm, require_kvm, wait_for, Vmm};

use api::control::{self as proto, RunState, VmmInfo};
use tinyguest::Ending;
use vt_http::call;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vt-robust-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn info(sock: &Path) -> Option<VmmInfo> {
    let r = call(sock, "GET", proto::INFO, None).ok()?;
    serde_json::from_slice(&r.body).ok()
}

/// A VMM with a control socket at `d/api.sock`, its stderr in `d/err`,
/// waited for until the VM is built.
fn start(d: &Path, ending: Ending, serial: &str, stdout: Stdio) -> (Vmm, PathBuf) {
    start_with(d, ending, serial, stdout, &[])
}

fn start_with(
    d: &Path,
    ending: Ending,
    serial: &str,
    stdout: Stdio,
    extra: &[&str],
) -> (Vmm, PathBuf) {
    let kernel = d.join("guest");
    std::fs::write(&kernel, tinyguest::elf_with("robust guest\n", true, ending)).unwrap();
    let sock = d.join("api.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_vt-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .args([
            "--memory",
            "16",
            "--serial",
            serial,
            "--on-reboot",
            "restart",
        ])
        .arg("--api-socket")
        .arg(&sock)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(std::fs::File::create(d.join("err")).unwrap())
        .spawn()
        .unwrap();
    let vmm = Vmm(child);
    wait_for(
        || info(&sock).is_some_and(|i| i.state == RunState::Running),
        "the VM built",
    );
    (vmm, sock)
}

/// Waits up to `secs` for the VMM to end.
fn ended_within(vmm: &mut Vmm, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(s) = vmm.0.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn signal(vmm: &Vmm, sig: i32) {
    // SAFETY: kill has no memory effects; the pid is our own child.
    assert_eq!(unsafe { libc::kill(vmm.0.id() as i32, sig) }, 0);
}

/// SIGTERM, and the VMM must end within 5 s.
fn terminate(vmm: &mut Vmm) {
    signal(vmm, libc::SIGTERM);
    ended_within(vmm, 5).expect("SIGTERM did not end it");
}

fn last_line(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_console_nobody_reads_neither_freezes_the_guest_nor_blocks_a_stop() {
    require_kvm!();
    let d = dir("console");
    // A pipe whose read end we keep open and never read: once its 64 KiB
    // are full, a write into it blocks.
    let (reader, writer) = std::io::pipe().unwrap();
    let (mut vmm, sock) = start(&d, Ending::Repeat, "stdio", Stdio::from(writer));
    // Far more than the pipe holds, printed by the guest.
    std::thread::sleep(Duration::from_millis(1500));
    // The guest keeps running: its port exits keep counting.
    let exits = || {
        let r = call(&sock, "GET", proto::COUNTERS, None).unwrap();
        serde_json::from_slice::<api::control::VmmCounters>(&r.body)
            .unwrap()
            .io_exits
    };
    let before = exits();
    std::thread::sleep(Duration::from_millis(300));
    assert!(exits() > before, "the vCPU no longer runs the guest");
    // Pause answers and takes effect: the vCPU reached its pause point.
    let r = call(&sock, "PUT", proto::PAUSE, None).unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let paused = exits();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(exits(), paused, "a paused vCPU still runs");
    // And SIGTERM ends it.
    signal(&vmm, libc::SIGTERM);
    let status = ended_within(&mut vmm, 5).expect("the VMM did not end on SIGTERM");
    assert_eq!(status.code(), Some(0));
    let err = std::fs::read_to_string(d.join("err")).unwrap();
    assert!(
        err.contains("bytes of serial output lost"),
        "the loss is not reported: {err}"
    );
    drop(reader);
}

#[test]
fn sighup_stops_like_sigterm_and_stray_signals_are_ignored() {
    require_kvm!();
    let d = dir("signals");
    let (mut vmm, sock) = start(&d, Ending::Halt, "null", Stdio::null());
    let rtmin1 = libc::SIGRTMIN() + 1;
    for sig in [
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
        rtmin1,
        libc::SIGRTMAX(),
    ] {
        signal(&vmm, sig);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(vmm.0.try_wait().unwrap(), None, "signal {sig} ended it");
        assert!(info(&sock).is_some(), "no answer after signal {sig}");
    }
    signal(&vmm, libc::SIGHUP);
    let status = ended_within(&mut vmm, 5).expect("SIGHUP did not end it");
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        last_line(&d.join("err")),
        format!("vt-vmm: exit: stopped by signal {}", libc::SIGHUP)
    );
    // Nobody answers there any more (under Landlock the VMM cannot unlink
    // the file; a stale socket is replaced by the next bind).
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_err());
}

#[test]
fn a_vmm_removes_only_the_socket_it_bound() {
    require_kvm!();
    let d = dir("inode");
    // Landlock off: a VMM may then unlink in its socket's directory.
    let unconfined = || {
        start_with(
            &d,
            Ending::Halt,
            "null",
            Stdio::null(),
            &["--landlock", "off"],
        )
    };
    let (mut vmm, sock) = unconfined();
    // Someone else (a second VMM) now listens at the same path.
    std::fs::remove_file(&sock).unwrap();
    let other = UnixListener::bind(&sock).unwrap();
    terminate(&mut vmm);
    assert!(
        sock.exists(),
        "the VMM removed a socket that was not its own"
    );
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());
    drop(other);
    // Its own socket it does remove.
    std::fs::remove_file(&sock).unwrap();
    let (mut vmm, sock) = unconfined();
    terminate(&mut vmm);
    assert!(!sock.exists(), "the VMM left its own socket behind");
}

#[test]
fn commands_sent_during_a_reset_are_answered_by_the_rebuilt_vm() {
    require_kvm!();
    let d = dir("reboot");
    let (_vmm, sock) = start(&d, Ending::Halt, "null", Stdio::null());
    for round in 0..20 {
        // A reboot and, right behind it, a pause: the loop
        // that takes the reboot ends the VM; what follows must wait for
        // the rebuilt one, not be dropped.
        let s = sock.clone();
        let reboot = std::thread::spawn(move || call(&s, "PUT", proto::REBOOT, None).unwrap());
        let s = sock.clone();
        let pause = std::thread::spawn(move || call(&s, "PUT", proto::PAUSE, None).unwrap());
        let r = reboot.join().unwrap();
        assert_eq!(r.status, 204, "round {round}: reboot: {}", r.text());
        let p = pause.join().unwrap();
        // 204, or 409 if it landed on a VM already paused: never 503.
        assert!(
            p.status == 204 || p.status == 409,
            "round {round}: pause: {} {}",
            p.status,
            p.text()
        );
        wait_for(
            || info(&sock).is_some_and(|i| i.state != RunState::Starting),
            "the rebuilt VM",
        );
        if info(&sock).unwrap().state == RunState::Paused {
            assert_eq!(call(&sock, "PUT", proto::RESUME, None).unwrap().status, 204);
        }
    }
}

//! Proof of the VMM's own confinement (seccomp per thread, Landlock), by
//! what the kernel reports and by what a confined process can no longer
//! do, not by flags:
//!
//! - a running `vt-vmm` (tiny halting guest, this host's /dev/kvm): every
//!   thread in `/proc/PID/task/TID/status` has `Seccomp: 2`, the number of
//!   filters its kind stacks, and `NoNewPrivs: 1`; `GET /vm/info` says what
//!   is in force; with `--seccomp off --landlock off`, nothing is;
//! - `vt-cell-probe`, confined with the very functions the VMM uses, tries
//!   to open `/etc/shadow` and another VM's image, connect to a host Unix
//!   socket, `execve` and `ptrace`; the test checks which outcome each had
//!   (refused with an errno, or the process killed by SIGSYS), and that
//!   the same attempts succeed with both barriers off (so the test fails
//!   if the filters are removed).

mod common;

use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use api::control::{self as proto, LandlockState, SeccompMode, VmmInfo};
use tinyguest::Ending;
use vt_http::call;

use common::{have_kvm, wait_for, Vmm};

fn landlock_abi() -> i64 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with no attribute only
    // returns the ABI version.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vt-cell-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts a 2-vCPU halting tiny guest with a disk and an rng; returns when
/// the guest has printed (so the vCPUs run and the main filter is on).
fn start(d: &Path, extra: &[&str]) -> (Vmm, PathBuf) {
    let kernel = d.join("guest");
    std::fs::write(
        &kernel,
        tinyguest::elf_with("cell up\n", true, Ending::Halt),
    )
    .unwrap();
    let disk = d.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let sock = d.join("api.sock");
    let log = d.join("console.log");
    let child = Command::new(env!("CARGO_BIN_EXE_vt-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "16", "--cpus", "2", "--rng", "--serial"])
        .arg(format!("file={}", log.display()))
        .arg("--disk")
        .arg(format!("path={}", disk.display()))
        .arg("--api-socket")
        .arg(&sock)
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let vmm = Vmm(child);
    wait_for(
        || std::fs::read_to_string(&log).is_ok_and(|s| s.contains("cell up")),
        "the guest's output",
    );
    wait_for(
        || call(&sock, "GET", proto::INFO, None).is_ok(),
        "the API socket",
    );
    (vmm, sock)
}

fn info(sock: &Path) -> VmmInfo {
    let r = call(sock, "GET", proto::INFO, None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

/// (thread name, Seccomp, Seccomp_filters, NoNewPrivs) of every thread.
fn threads(pid: u32) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let Ok(status) = std::fs::read_to_string(t.join("status")) else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}:")))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        out.push((
            field("Name"),
            field("Seccomp"),
            field("Seccomp_filters"),
            field("NoNewPrivs"),
        ));
    }
    out.sort();
    out
}

#[test]
fn every_thread_of_a_running_vmm_is_filtered() {
    if !have_kvm() {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    }
    let d = dir("status");
    let (vmm, sock) = start(&d, &[]);
    // A connection thread exists while this one is open.
    let conn = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let pid = vmm.0.id();
    wait_for(
        || threads(pid).iter().any(|t| t.0 == "http-conn"),
        "the connection thread",
    );
    // KVM's own kernel worker in the process (NX huge page recovery) is
    // not ours.
    let all: Vec<_> = threads(pid)
        .into_iter()
        .filter(|t| !t.0.starts_with("kvm-"))
        .collect();
    let expected = |name: &str| match name {
        "vt-vmm" => "1",
        "vcpu0" | "vcpu1" => "2",
        "api-listener" | "http-conn" => "1",
        other => panic!("unexpected thread {other}: {all:?}"),
    };
    for (name, mode, filters, nnp) in &all {
        assert_eq!(mode, "2", "{name}: {all:?}");
        assert_eq!(filters, expected(name), "{name}: {all:?}");
        assert_eq!(nnp, "1", "{name}: {all:?}");
    }
    for name in ["vt-vmm", "vcpu0", "vcpu1", "api-listener", "http-conn"] {
        assert!(all.iter().any(|t| t.0 == name), "no {name}: {all:?}");
    }
    let c = info(&sock).confinement;
    assert_eq!(c.seccomp, SeccompMode::On);
    if landlock_abi() > 0 {
        assert!(
            matches!(
                c.landlock,
                LandlockState::Enforced | LandlockState::PartiallyEnforced
            ),
            "{c:?}"
        );
        assert_eq!(i64::from(c.landlock_abi), landlock_abi());
    } else {
        assert_eq!(c.landlock, LandlockState::Unsupported);
    }
    drop(conn);

    // Stopping a confined VMM still ends it cleanly (status 0).
    let r = call(&sock, "PUT", proto::STOP, None).unwrap();
    assert_eq!(r.status, 204);
    let mut vmm = vmm;
    assert_eq!(vmm.0.wait().unwrap().code(), Some(0));
}

#[test]
fn barriers_off_leave_nothing_in_force() {
    if !have_kvm() {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    }
    let d = dir("off");
    let (vmm, sock) = start(&d, &["--seccomp", "off", "--landlock", "off"]);
    for (name, mode, filters, _) in threads(vmm.0.id()) {
        assert_eq!((mode.as_str(), filters.as_str()), ("0", "0"), "{name}");
    }
    let c = info(&sock).confinement;
    assert_eq!(
        (c.seccomp, c.landlock),
        (SeccompMode::Off, LandlockState::Off)
    );
}

#[test]
fn log_mode_installs_the_filters_and_the_vm_runs() {
    if !have_kvm() {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    }
    let d = dir("log");
    let (vmm, sock) = start(&d, &["--seccomp", "log"]);
    let all = threads(vmm.0.id());
    assert!(all.iter().all(|t| t.1 == "2"), "{all:?}");
    assert_eq!(info(&sock).confinement.seccomp, SeccompMode::Log);
}

/// A guest reboot rebuilds the VM under the main thread's filter: every
/// disk kind is opened again there (a qcow2 with its raw backing file goes
/// through imago, which asks `fstatfs` for the file system's block size).
/// A call missing from the list kills the VMM with SIGSYS on the first
/// reboot; here the guest must come up three times, plain and (as root)
/// jailed, where the disks are descriptors passed in.
#[test]
fn a_reboot_rebuilds_every_disk_kind_under_the_filters() {
    if !have_kvm() {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    }
    reboot_three_times("reboot", &[]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        reboot_three_times("reboot-jailed", &["--jail", "--jail-uid", "1879113000"]);
    }
}

fn reboot_three_times(name: &str, extra: &[&str]) {
    let d = dir(name);
    let kernel = d.join("guest");
    std::fs::write(&kernel, tinyguest::elf_with("boot\n", true, Ending::Reboot)).unwrap();
    let base = d.join("base.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    let top = d.join("top.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&base)
        .arg(&top)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: no qemu-img");
        return;
    }
    let raw = d.join("raw.img");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let log = d.join("console.log");
    let child = Command::new(env!("CARGO_BIN_EXE_vt-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .args([
            "--memory",
            "16",
            "--rng",
            "--on-reboot",
            "restart",
            "--serial",
        ])
        .arg(format!("file={}", log.display()))
        .arg("--disk")
        .arg(format!("path={},format=qcow2", top.display()))
        .arg("--disk")
        .arg(format!("path={},format=raw", raw.display()))
        .arg("--disk")
        .arg(format!("path={},readonly=on", base.display()))
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut vmm = Vmm(child);
    wait_for(
        || {
            let boots = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("boot\n")
                .count();
            if let Ok(Some(status)) = vmm.0.try_wait() {
                panic!("the VMM ended after {boots} boot(s): {status:?}");
            }
            boots >= 3
        },
        "three boots",
    );
}

/// How one probe attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Errno(i32),
    KilledBySigsys,
}

fn probe(kind: &str, barriers: &[&str], files: &[&str], attempt: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_vt-cell-probe"))
        .args(["--thread", kind])
        .args(barriers)
        .args(files)
        .args(attempt)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.signal() == Some(libc::SIGSYS) {
        assert!(stdout.is_empty(), "printed before dying: {stdout}");
        return Outcome::KilledBySigsys;
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "{kind} {attempt:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match stdout.trim().strip_prefix("outcome: ") {
        Some("ok") => Outcome::Ok,
        Some(e) => Outcome::Errno(e.strip_prefix("errno ").unwrap().parse().unwrap()),
        None => panic!("no outcome: {stdout}"),
    }
}

struct Cell {
    _dir: PathBuf,
    own: String,
    other: String,
    host_sock: String,
    _listener: UnixListener,
    files: Vec<String>,
}

fn cell() -> Cell {
    // One directory per call: the tests run in parallel.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = dir(&format!("probe{n}"));
    let own = d.join("own.img");
    let other = d.join("other-vm.img");
    let kernel = d.join("kernel");
    for f in [&own, &other, &kernel] {
        std::fs::write(f, vec![0u8; 4096]).unwrap();
    }
    let host_sock = d.join("host.sock");
    let listener = UnixListener::bind(&host_sock).unwrap();
    let s = |p: &Path| p.display().to_string();
    Cell {
        files: vec![
            "--kernel".into(),
            s(&kernel),
            "--disk".into(),
            format!("path={}", own.display()),
        ],
        own: s(&own),
        other: s(&other),
        host_sock: s(&host_sock),
        _listener: listener,
        _dir: d,
    }
}

const ON: &[&str] = &["--seccomp", "on", "--landlock", "on"];

#[test]
fn a_confined_main_thread_reaches_only_its_own_files() {
    let c = cell();
    let files: Vec<&str> = c.files.iter().map(String::as_str).collect();
    let p = |attempt: &[&str]| probe("main", ON, &files, attempt);
    // Its own image, read-write: allowed (the barrier is not "everything").
    assert_eq!(p(&["open-rw", &c.own]), Outcome::Ok);
    if landlock_abi() > 0 {
        assert_eq!(p(&["open", "/etc/shadow"]), Outcome::Errno(libc::EACCES));
        assert_eq!(p(&["open", &c.other]), Outcome::Errno(libc::EACCES));
        assert_eq!(p(&["open-rw", &c.other]), Outcome::Errno(libc::EACCES));
    }
    // No Unix sockets, no exec, no ptrace, no kill(2): the filter kills.
    assert_eq!(p(&["connect-unix", &c.host_sock]), Outcome::KilledBySigsys);
    assert_eq!(p(&["exec", "/bin/true"]), Outcome::KilledBySigsys);
    assert_eq!(p(&["ptrace", "1"]), Outcome::KilledBySigsys);
    assert_eq!(p(&["kill", "1"]), Outcome::KilledBySigsys);
}

#[test]
fn vcpu_worker_api_and_console_threads_cannot_even_open() {
    let c = cell();
    let files: Vec<&str> = c.files.iter().map(String::as_str).collect();
    for kind in ["vcpu", "worker", "api", "console"] {
        let p = |attempt: &[&str]| probe(kind, ON, &files, attempt);
        for attempt in [
            &["open", "/etc/shadow"][..],
            &["open", &c.own],
            &["connect-unix", &c.host_sock],
            &["exec", "/bin/true"],
            &["ptrace", "1"],
        ] {
            assert_eq!(p(attempt), Outcome::KilledBySigsys, "{kind} {attempt:?}");
        }
    }
}

#[test]
fn landlock_alone_refuses_files_tcp_exec_abstract_sockets_and_signals() {
    let abi = landlock_abi();
    if abi <= 0 {
        eprintln!("skipped: no Landlock in this kernel");
        return;
    }
    let c = cell();
    let files: Vec<&str> = c.files.iter().map(String::as_str).collect();
    let ll = ["--seccomp", "off", "--landlock", "on"];
    let p = |attempt: &[&str]| probe("main", &ll, &files, attempt);
    assert_eq!(p(&["open", "/etc/shadow"]), Outcome::Errno(libc::EACCES));
    assert_eq!(p(&["open", &c.other]), Outcome::Errno(libc::EACCES));
    assert_eq!(p(&["open-rw", &c.own]), Outcome::Ok);
    assert_eq!(p(&["exec", "/bin/true"]), Outcome::Errno(libc::EACCES));
    if abi >= 4 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port().to_string();
        assert_eq!(p(&["connect-tcp", &port]), Outcome::Errno(libc::EACCES));
    }
    if abi >= 6 {
        let name = format!("vt-cell-probe-{}", std::process::id());
        let _abs = bind_abstract(&name);
        assert_eq!(p(&["connect-abstract", &name]), Outcome::Errno(libc::EPERM));
        let me = std::process::id().to_string();
        assert_eq!(p(&["kill", &me]), Outcome::Errno(libc::EPERM));
    }
}

#[test]
fn with_both_barriers_off_the_same_attempts_succeed() {
    // The control experiment: the refusals above come from the barriers.
    let c = cell();
    let files: Vec<&str> = c.files.iter().map(String::as_str).collect();
    let off = ["--seccomp", "off", "--landlock", "off"];
    let p = |attempt: &[&str]| probe("vcpu", &off, &files, attempt);
    assert_eq!(p(&["open-rw", &c.other]), Outcome::Ok);
    assert_eq!(p(&["connect-unix", &c.host_sock]), Outcome::Ok);
    let me = std::process::id().to_string();
    assert_eq!(p(&["kill", &me]), Outcome::Ok);
    if std::fs::File::open("/etc/shadow").is_ok() {
        assert_eq!(p(&["open", "/etc/shadow"]), Outcome::Ok);
    }
}

/// A listening abstract Unix socket named `name` (closed on drop).
fn bind_abstract(name: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    // SAFETY: `fd` was just returned by socket(2).
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain data.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (i, b) in name.bytes().enumerate() {
        sa.sun_path[1 + i] = b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    // SAFETY: `sa` is valid for `len` bytes.
    let rc = unsafe { libc::bind(fd, (&sa as *const libc::sockaddr_un).cast(), len as u32) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    // SAFETY: listen on our own socket.
    assert_eq!(unsafe { libc::listen(fd, 1) }, 0);
    owned
}

#[test]
fn a_bad_barrier_value_is_one_line_and_status_2() {
    for (flag, value) in [
        ("--seccomp", "maybe"),
        ("--landlock", "log"),
        ("--seccomp", ""),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vt-vmm"))
            .args(["--kernel", "/nonexistent", flag, value])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert_eq!(err.lines().count(), 1, "{flag} {value}: {err}");
        assert!(err.starts_with("vt-vmm: error: "), "{err}");
        assert!(err.contains(flag), "{err}");
    }
}

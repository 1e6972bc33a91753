//! `vt-vmm` on the host's own `/dev/kvm` with the tiny in-repo guest (no
//! Linux): vCPU run, serial output, power-off, reboot, crash and signal
//! handling, each checked by what the guest printed and the exit status.
//! Runs on hardware KVM and on PVM alike.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tinyguest::Ending;

fn vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vt-vmm"))
}

fn have_kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vt-tiny-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn guest(name: &str, message: &str, pvh: bool, ending: Ending) -> PathBuf {
    let path = scratch(name);
    std::fs::write(&path, tinyguest::elf_with(message, pvh, ending)).unwrap();
    path
}

fn run(kernel: &Path, extra: &[&str]) -> Output {
    vmm()
        .arg("--kernel")
        .arg(kernel)
        .args(["--memory", "16"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

macro_rules! require_kvm {
    () => {
        if !have_kvm() {
            eprintln!("skipped: no usable /dev/kvm");
            return;
        }
    };
}

#[test]
fn prints_and_powers_off_from_pvh_and_64_bit_entries() {
    require_kvm!();
    for (pvh, cpus) in [
        (true, "1"),
        (false, "1"),
        (true, "4"),
        (false, "2"),
        (true, "254"),
    ] {
        let msg = format!("hello pvh={pvh} cpus={cpus}\n");
        let k = guest(&format!("hello-{pvh}-{cpus}"), &msg, pvh, Ending::PowerOff);
        let out = run(&k, &["--cpus", cpus]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), msg);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The delayed power-off guest (used by vtd's graceful reboot test):
/// prints, waits a while, powers off, from both entries.
#[test]
fn powers_off_after_a_delay_from_pvh_and_64_bit_entries() {
    require_kvm!();
    for pvh in [true, false] {
        let k = guest(
            &format!("later-{pvh}"),
            "later\n",
            pvh,
            Ending::PowerOffAfter(100_000),
        );
        let t = Instant::now();
        let out = run(&k, &[]);
        let took = t.elapsed();
        eprintln!("pvh={pvh}: powered off after {took:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "later\n");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn serial_to_file_appends() {
    require_kvm!();
    let k = guest("file", "to a file\n", true, Ending::PowerOff);
    let log = scratch("serial.log");
    let _ = std::fs::remove_file(&log);
    let spec = format!("file={}", log.display());
    for _ in 0..2 {
        let out = run(&k, &["--serial", &spec]);
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stdout.is_empty());
    }
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "to a file\nto a file\n"
    );
}

#[test]
fn guest_reboot_exits_zero_by_default() {
    require_kvm!();
    let k = guest("reboot", "rebooting\n", false, Ending::Reboot);
    let out = run(&k, &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "rebooting\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn guest_reboot_restarts_the_vm_when_asked() {
    require_kvm!();
    let k = guest("restart", "boot\n", true, Ending::Reboot);
    let log = scratch("restart.log");
    let _ = std::fs::remove_file(&log);
    let mut child = vmm()
        .arg("--kernel")
        .arg(&k)
        .args(["--memory", "16", "--on-reboot", "restart"])
        .arg("--serial")
        .arg(format!("file={}", log.display()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("boot\n")
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "the VM did not boot 3 times");
        assert!(child.try_wait().unwrap().is_none(), "VMM exited on reboot");
        std::thread::sleep(Duration::from_millis(10));
    }
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn triple_fault_exits_non_zero_with_a_reason() {
    require_kvm!();
    let k = guest("crash", "about to crash\n", false, Ending::TripleFault);
    let out = run(&k, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "about to crash\n");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("guest crashed"), "{err}");
    assert_eq!(err.lines().count(), 1, "one-line reason: {err}");
}

#[test]
fn sigterm_and_sigint_stop_the_vm_cleanly() {
    require_kvm!();
    let k = guest("spin", "spinning\n", true, Ending::Spin);
    for sig in ["-TERM", "-INT"] {
        let mut child = vmm()
            .arg("--kernel")
            .arg(&k)
            .args(["--memory", "16", "--cpus", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            child.try_wait().unwrap().is_none(),
            "spinning guest exited early"
        );
        Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        let out = child.wait_with_output().unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(out.status.code(), Some(0), "{sig}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "spinning\n");
    }
}

/// Each bad input: exit status 2, a one-line error naming the problem, no panic.
#[test]
fn bad_input_is_refused_with_status_2() {
    let k = guest("ok", "x\n", true, Ending::PowerOff);
    let not_kernel = scratch("not-a-kernel");
    std::fs::write(&not_kernel, vec![0x42u8; 4096]).unwrap();
    let long = "x".repeat(4000);
    let odd_disk = scratch("odd.img");
    std::fs::write(&odd_disk, vec![0u8; 1000]).unwrap();
    let odd = format!("path={}", odd_disk.display());
    let empty_disk = scratch("empty.img");
    std::fs::write(&empty_disk, b"").unwrap();
    let empty = format!("path={}", empty_disk.display());
    // A qcow2 header given as a writable disk without format=: refused, so
    // the guest can never write over the image's metadata.
    let qcow2_disk = scratch("image.qcow2");
    let mut header = vec![0u8; 4096];
    header[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
    std::fs::write(&qcow2_disk, &header).unwrap();
    let qcow2 = format!("path={}", qcow2_disk.display());
    let qcow2_msg = format!(
        "disk {} looks like a qcow2 image but no format was given; pass format=qcow2",
        qcow2_disk.display()
    );
    let k = k.to_str().unwrap();
    let nk = not_kernel.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--kernel", "/nonexistent/vmlinuz"],
            "cannot open kernel",
        ),
        (vec!["--kernel", nk], "not a bootable kernel"),
        (vec!["--kernel", "/"], "is a directory"),
        (
            vec!["--kernel", k, "--memory", "0"],
            "memory must be between",
        ),
        (
            vec!["--kernel", k, "--memory", "4"],
            "memory must be between",
        ),
        (
            vec!["--kernel", k, "--memory", "99999999999"],
            "memory must be between",
        ),
        (
            vec!["--kernel", k, "--memory", "1000000"],
            "exceeds the host",
        ),
        (
            vec!["--kernel", k, "--cpus", "0"],
            "vCPU count must be between 1 and 254",
        ),
        (
            vec!["--kernel", k, "--cpus", "255"],
            "vCPU count must be between 1 and 254",
        ),
        (
            vec!["--kernel", k, "--cmdline", &long],
            "command line is 4000 bytes",
        ),
        (
            vec!["--kernel", k, "--initrd", "/nonexistent/initrd"],
            "cannot open initramfs",
        ),
        (vec!["--kernel", k, "--serial", "tcp"], "invalid --serial"),
        (vec!["--kernel", k, "--memory", "lots"], "invalid value"),
        (vec!["--kernel", k, "--bogus"], "unexpected argument"),
        (
            vec!["--kernel", k, "--disk", &odd],
            "size 1000 is not a multiple of 512",
        ),
        (vec!["--kernel", k, "--disk", &empty], "is empty"),
        (vec!["--kernel", k, "--disk", &qcow2], &qcow2_msg),
        (
            vec!["--kernel", k, "--disk", "path=/x,format=vmdk"],
            "'vmdk' is not raw or qcow2",
        ),
        (
            vec!["--kernel", k, "--disk", "path=/nonexistent.img"],
            "cannot open /nonexistent.img",
        ),
        (vec!["--kernel", k, "--disk", "path=/"], "Is a directory"),
        (
            vec!["--kernel", k, "--disk", "path=/x,cache=unsafe"],
            "not none or writeback",
        ),
        (
            vec!["--kernel", k, "--disk", "readonly=on"],
            "'path' is required",
        ),
        (
            vec!["--kernel", k, "--net", "tap=vt0,mac=ff:00:00:00:00:00"],
            "not a unicast MAC",
        ),
        (
            vec!["--kernel", k, "--net", "tap=vt0,mac=00:00:00:00:00:00"],
            "the all-zero address",
        ),
        (
            vec![
                "--kernel",
                k,
                "--net",
                "tap=a,mac=52:54:00:00:00:01",
                "--net",
                "tap=a",
            ],
            "used by two NICs",
        ),
        (vec![], "--kernel"),
    ];
    for (args, want) in cases {
        let out = vmm().args(&args).stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want '{want}' in: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

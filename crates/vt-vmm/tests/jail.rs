//! `vt-vmm --jail` run by hand: the cell is built, the guest runs in it
//! with its disk and serial file passed in, and each way the cell cannot
//! be built is a clear error that leaves nothing behind.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use tinyguest::Ending;

const VM_UID: &str = "1879113000";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vt-jail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn ready() -> bool {
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !kvm || !jail::is_root() {
        eprintln!("skipped: needs root and /dev/kvm");
        return false;
    }
    true
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_hand_run_jailed_vmm_boots_with_its_files_passed_in() {
    if !ready() {
        return;
    }
    let kernel = scratch("ok.elf");
    std::fs::write(
        &kernel,
        tinyguest::elf_with("jailed hello\n", true, Ending::PowerOff),
    )
    .unwrap();
    let disk = scratch("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let serial = scratch("serial.log");
    let _ = std::fs::remove_file(&serial);
    let out = Command::new(env!("CARGO_BIN_EXE_vt-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .arg("--disk")
        .arg(format!("path={},cache=none", disk.display()))
        .arg("--serial")
        .arg(format!("file={}", serial.display()))
        .args(["--memory", "16", "--jail", "--jail-uid", VM_UID])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let log = std::fs::read_to_string(&serial).unwrap();
    assert!(log.contains("jailed hello"), "{log}");
    // The serial file was opened outside, as root: it is not the VM's.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&serial).unwrap().uid(), 0);
}

#[test]
fn each_way_the_cell_cannot_be_built_is_one_clear_line() {
    if !ready() {
        return;
    }
    let kernel = scratch("bad.elf");
    std::fs::write(&kernel, tinyguest::elf_with("x\n", true, Ending::PowerOff)).unwrap();
    let vmm = env!("CARGO_BIN_EXE_vt-vmm");
    // No /dev/kvm on the host (a private mount namespace hides it).
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs none /dev && exec \"$0\" --kernel \"$1\" --jail --jail-uid $2")
        .arg(vmm)
        .arg(&kernel)
        .arg(VM_UID)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("/dev/kvm is missing on the host"),
        "{}",
        text(&out)
    );
    // Not root.
    let out = Command::new(vmm)
        .arg("--kernel")
        .arg(&kernel)
        .args(["--jail", "--jail-uid", VM_UID])
        .uid(60_002)
        .gid(60_002)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--jail needs root"), "{}", text(&out));
    // uid 0 for the VM, and --jail without a uid.
    for (args, code, want) in [
        (
            &["--jail", "--jail-uid", "0"][..],
            1,
            "uid/gid 0 is not allowed",
        ),
        (&["--jail"][..], 2, "--jail-uid"),
    ] {
        let out = Command::new(vmm)
            .arg("--kernel")
            .arg(&kernel)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(want), "{args:?}: {}", text(&out));
    }
    // Nothing left behind: the cell's mount point holds nothing on the host.
    let left: Vec<_> = std::fs::read_dir(jail::cell::MOUNT_POINT)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_hand_run_jailed_vmm_opens_a_linked_clone_and_its_socket_outside() {
    if !ready() {
        return;
    }
    let kernel = scratch("clone.elf");
    std::fs::write(
        &kernel,
        tinyguest::elf_with("clone ok\n", true, Ending::PowerOff),
    )
    .unwrap();
    let (base, clone) = (scratch("base.qcow2"), scratch("clone.qcow2"));
    let _ = std::fs::remove_file(&clone);
    let img = |args: &[&str]| {
        let out = Command::new("qemu-img")
            .args(args)
            .output()
            .expect("qemu-img (qemu-utils)");
        assert!(out.status.success(), "{}", text(&out));
    };
    img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "16M"]);
    // A relative backing name: resolved against the clone's directory,
    // which the VMM inside its cell cannot see.
    img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        clone.to_str().unwrap(),
    ]);
    let sock = scratch("api.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_vt-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .arg("--disk")
        .arg(format!("path={},format=qcow2", clone.display()))
        .arg("--api-socket")
        .arg(&sock)
        .args(["--memory", "16", "--jail", "--jail-uid", VM_UID])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("clone ok"), "{}", text(&out));
    // The outside parent bound the socket, so it removes it.
    assert!(!sock.exists(), "the API socket was left behind");
}

//! Helpers shared by the Linux-guest tests: the guest initramfs with a test
//! script appended, and reading the per-case output of a lab run.

#![allow(dead_code)]

use std::path::PathBuf;

use std::time::Duration;

use lab::{CpioWriter, Lab};

/// Kills the VMM when the test ends, however it ends.
pub struct Vmm(pub std::process::Child);

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// True when this host's /dev/kvm can be opened read-write.
pub fn have_kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Returns from the test when this host has no usable /dev/kvm.
#[allow(unused_macros)]
macro_rules! require_kvm {
    () => {
        if !have_kvm() {
            eprintln!("skipped: no usable /dev/kvm");
            return;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use require_kvm;

/// Polls `f` every 10 ms for up to 10 s.
pub fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True (and says so) when `VT_LAB=never` turns Linux guest tests off.
pub fn lab_disabled() -> bool {
    let off = std::env::var("VT_LAB").is_ok_and(|v| v == "never");
    if off {
        eprintln!("VT_LAB=never: Linux guest test skipped");
    }
    off
}

/// The guest initramfs plus an appended archive holding `/vt-test.sh`.
pub fn initramfs_with(name: &str, script: &str) -> PathBuf {
    let arts = lab::artifacts::ensure(None).expect("guest artifacts");
    let mut bytes = std::fs::read(&arts.initramfs).expect("read initramfs");
    // The kernel wants each appended archive to start 4-byte aligned.
    bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    let mut cpio = CpioWriter::new(Vec::new());
    cpio.file("vt-test.sh", 0o755, script.as_bytes())
        .expect("cpio");
    bytes.extend(cpio.finish().expect("cpio"));
    let dir = std::env::temp_dir().join(format!("vt-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("initramfs-test.cpio.gz");
    std::fs::write(&path, bytes).expect("write initramfs");
    path
}

/// The uid lab tests' VMMs run as (the first of vtd's default range).
pub const LAB_VM_UID: u32 = 1_879_048_192;

/// `$VTLAB_ROOT/vt/vt-vmm` in the lab: every lab test's VMM runs in a cell
/// (`vt-vmm --jail`, its own uid, namespaces, no capabilities), on top of
/// its default seccomp and Landlock, as under vtd. The real binary is
/// `vt/bin/vt-vmm`; the VMM is the outside process's child.
pub fn jailed_vmm_wrapper(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("vt-vmm-jailed.sh");
    let script = format!(
        "#!/bin/sh\nexec \"$(dirname \"$0\")/bin/vt-vmm\" --jail --jail-uid {LAB_VM_UID} \"$@\"\n"
    );
    std::fs::write(&path, script).expect("write the jail wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Runs `host_script` in the lab (or directly on VT-x/AMD-V) with the
/// guest artifacts, this crate's `vt-vmm` jailed at `$VTLAB_ROOT/vt/vt-vmm`
/// ([`jailed_vmm_wrapper`]) and the guest initramfs plus `guest_script`
/// at `$VTLAB_ROOT/vt/initramfs.cpio.gz`; checks the lab's own exit status
/// and returns its output.
pub fn run_in_lab(name: &str, guest_script: &str, host_script: &str, limit: Duration) -> String {
    run_in_lab_with(name, guest_script, host_script, limit, &[])
}

/// [`run_in_lab`] with more binaries: (host path, lab path) pairs.
pub fn run_in_lab_with(
    name: &str,
    guest_script: &str,
    host_script: &str,
    limit: Duration,
    binaries: &[(&str, &str)],
) -> String {
    let initramfs = initramfs_with(name, guest_script);
    let wrapper = jailed_vmm_wrapper(initramfs.parent().expect("a temp dir"));
    let mut lab = Lab::new();
    for (from, to) in binaries {
        lab = lab.add_binary(from, to);
    }
    let out = lab
        .memory_mib(3072)
        .cpus(2)
        .timeout(limit)
        .with_guest_artifacts()
        .add_file(initramfs, "/vt/initramfs.cpio.gz")
        .add_binary(env!("CARGO_BIN_EXE_vt-vmm"), "/vt/bin/vt-vmm")
        .add_file(wrapper, "/vt/vt-vmm")
        // A call a seccomp filter refused is in the L1's kernel log
        // (audit type 1326, with its number): show it with the output.
        .run_auto(&format!(
            "{host_script}\nrc=$?\ndmesg | grep -a 'type=1326' | sed 's/^/VT-SECCOMP /'\nexit $rc\n"
        ))
        .expect("lab run");
    eprintln!("{}", out.stdout);
    assert_eq!(out.exit_code, 0, "{}", out.stdout);
    out.stdout
}

/// The lines between `=== CASE name` and the next `=== RC n`, and n.
pub fn case_output<'a>(all: &'a str, name: &str) -> (Vec<&'a str>, Option<i32>) {
    let mut lines = all
        .lines()
        .skip_while(|l| l.trim_end() != format!("=== CASE {name}"));
    lines.next();
    let mut body = Vec::new();
    for l in lines {
        if let Some(rc) = l.trim_end().strip_prefix("=== RC ") {
            return (body, rc.parse().ok());
        }
        body.push(l);
    }
    (body, None)
}

/// The value of `VT-GUEST key=value` (or `VT-HOST key=value`) in `body`.
pub fn value<'a>(body: &[&'a str], tag: &str, key: &str) -> Option<&'a str> {
    let prefix = format!("{tag} {key}=");
    body.iter()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(prefix.as_str()))
}

pub fn guest_value<'a>(body: &[&'a str], key: &str) -> Option<&'a str> {
    value(body, "VT-GUEST", key)
}

pub fn host_value<'a>(body: &[&'a str], key: &str) -> Option<&'a str> {
    value(body, "VT-HOST", key)
}

/// qemu-img's exit status and output (stdout, then stderr) for `args`.
pub fn qemu_img(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

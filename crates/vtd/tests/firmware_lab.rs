//! The Debian test disk images of `scripts/guest-image.sh`, booted through
//! firmware in the lab (or directly on a VT-x/AMD-V host), one lab boot per
//! test:
//!
//! 1. `debian_bios_image_boots_under_qemu_seabios` (lab), the referee:
//!    QEMU/KVM (`-M pc`, Debian's SeaBIOS) boots the BIOS image: GRUB
//!    prints its line on the serial console, systemd runs the marker unit
//!    (which sees 2 vCPUs, about 512 MiB, its root on virtio-blk) and powers
//!    off, and QEMU exits 0. This proves the image apart from our VMM.
//!    `debian_efi_image_boots_under_qemu_ovmf` does the same for the EFI
//!    image with OVMF (`-M q35`), under QEMU TCG on this host, not in the
//!    lab: there, the lab's own QEMU (TCG) aborted twice in two runs
//!    (`tcg_handle_interrupt: assertion failed`) while the nested OVMF
//!    guest shut down.
//! 2. `debian_image_boots_under_vtd_import`: `vt create --import --disk
//!    path=IMAGE` defines a BIOS-booted VM (`vt info` says so), `vt start`
//!    runs `vt-vmm --firmware` jailed, with the firmware as `/dev/fd/N`;
//!    `vt console` shows SeaBIOS, GRUB and the marker, and the guest's
//!    `systemctl poweroff` stops the VM. A VM that crashed (a nested
//!    guest the lab's emulated SVM triple-faulted: seen once in a clean
//!    clone's run, 1.6 s into the kernel) is reported and started once more.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::host_value as host;
use lab::{HostKind, Lab};

const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The BIOS and EFI images, built by the script when missing.
fn images() -> (PathBuf, PathBuf) {
    let dir = lab::artifacts::default_guest_dir();
    let bios = dir.join("debian-test-bios.img");
    let efi = dir.join("debian-test-efi.img");
    if !bios.is_file() || !efi.is_file() {
        let script = lab::artifacts::repo_root().join("scripts/guest-image.sh");
        let st = std::process::Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .status()
            .expect("run scripts/guest-image.sh");
        assert!(st.success(), "{} failed: {st}", script.display());
    }
    (bios, efi)
}

/// The lab (QEMU, `cp`, our binaries) with the BIOS image as the L1's
/// virtio disk (a 1 GiB image does not belong in its initramfs) or,
/// directly, as a file; returns the lab and a script prefix naming it
/// `$BIOS_IMG`.
fn lab_with_images() -> (Lab, String) {
    let (bios, _) = images();
    assert!(std::path::Path::new(SEABIOS).is_file(), "{SEABIOS} missing");
    let bin = |name: &str| PathBuf::from(env!("CARGO_BIN_EXE_vtd")).with_file_name(name);
    let mut lab = Lab::new()
        .memory_mib(3072)
        .cpus(2)
        .timeout(Duration::from_secs(500))
        .with_guest_artifacts()
        .with_qemu()
        .add_binary(env!("CARGO_BIN_EXE_vtd"), "/vt/vtd")
        .add_binary(bin("vt"), "/vt/vt")
        .add_binary(bin("vt-vmm"), "/vt/vt-vmm")
        .add_binary(bin("vt-logger"), "/vt/vt-logger")
        .add_binary("/usr/bin/cp", "/vt/cp");
    let b = match HostKind::detect().expect("host kind") {
        HostKind::Lab => {
            lab = lab.qemu_arg("-drive").qemu_arg(format!(
                "file={},if=virtio,format=raw,snapshot=on",
                bios.display()
            ));
            "/dev/vda".to_string()
        }
        HostKind::Direct => bios.display().to_string(),
    };
    let prefix = format!("BIOS_IMG={b}\nR=\"$VTLAB_ROOT\"\nup() {{ cut -d. -f1 /proc/uptime; }}\n");
    (lab, prefix)
}

/// Runs `script` after `prefix` in the lab; its output, exit 0 checked.
fn run(lab: Lab, prefix: &str, script: &str) -> String {
    let out = lab.run_auto(&format!("{prefix}{script}")).expect("lab run");
    let o = out.stdout;
    eprintln!("{o}");
    assert_eq!(out.exit_code, 0, "{o}");
    o
}

fn lab_disabled() -> bool {
    let off = std::env::var("VT_LAB").is_ok_and(|v| v == "never");
    if off {
        eprintln!("VT_LAB=never: Linux guest test skipped");
    }
    off
}

/// QEMU boots the BIOS image (the referee).
const QEMU_SCRIPT: &str = r#"
mkdir -p /var/tmp   # QEMU's snapshot=on overlay
Q="qemu-system-x86_64 -enable-kvm -cpu host -m 512 -smp 2 -nodefaults -nographic -serial stdio -no-reboot"
t=$(up)
timeout 150 $Q -M pc -bios /usr/share/seabios/bios-256k.bin \
    -drive file=$BIOS_IMG,if=virtio,format=raw,snapshot=on </dev/null >/tmp/qemu-bios.log 2>&1
rc=$?; echo "VT-HOST qemu_bios_rc=$rc"; echo "VT-HOST qemu_bios_secs=$(($(up) - t))"
tr -d '\033' </tmp/qemu-bios.log | sed 's/^/QBIOS /'
"#;

/// vtd boots the BIOS image from a copy (`vt create --import`).
const VTD_SCRIPT: &str = r#"
VT="$R/vt/vt"; export VT_SOCKET=/tmp/vtd.sock
"$R/vt/cp" --sparse=always "$BIOS_IMG" /tmp/debian.img
"$R/vt/vtd" --socket $VT_SOCKET --state-dir /tmp/vt-state --vmm "$R/vt/vt-vmm" >/tmp/vtd.log 2>&1 &
for i in $(seq 100); do [ -S $VT_SOCKET ] && break; sleep 0.1; done
$VT create --name deb --import --disk path=/tmp/debian.img --memory 512 --vcpus 2
echo "VT-HOST create_rc=$?"
$VT info deb | sed 's/^/INFO /'
boot() {
    t=$(up)
    $VT start deb
    echo "VT-HOST start_rc=$?"
    while [ $(($(up) - t)) -lt 240 ]; do
        $VT info deb --output json | grep -q '"state": *"running"' || break
        sleep 1
    done
    echo "VT-HOST run_secs=$(($(up) - t))"
}
boot
# A nested guest of the lab's emulated SVM now and then triple-faults
# (seen in other lab tests under both VMMs): say so, show it, boot again
# once. A second crash fails the test.
if $VT info deb --output json | grep -q '"state": *"crashed"'; then
    echo "VT-HOST retried=$($VT info deb --output json | tr -d '\n')"
    $VT console deb --no-follow | tr -d '\033' | tail -n 30 | sed 's/^/FIRST /'
    boot
fi
echo "VT-HOST info=$($VT info deb --output json | tr -d '\n')"
$VT console deb --no-follow | tr -d '\033' | sed 's/^/CONSOLE /'
$VT stop deb >/dev/null 2>&1
sed 's/^/VMMLOG /' /tmp/vt-state/vms/deb/vmm.log
sed 's/^/VTDLOG /' /tmp/vtd.log
"#;

/// Lines of `out` starting with `prefix`, joined.
fn lines(out: &str, prefix: &str) -> String {
    out.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The guest's MemTotal from the marker in `log` (KiB).
fn marker_mem_kb(log: &str) -> u64 {
    log.split("VT-IMAGE-BOOTED ")
        .nth(1)
        .and_then(|m| m.split_whitespace().find_map(|w| w.strip_prefix("mem_kb=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no marker with mem_kb in:\n{log}"))
}

/// Checks a referee's serial log: GRUB, the marker (2 vCPUs, 512 MiB
/// less the kernel's own, root `root`, booted by `boot`).
fn check_marker(log: &str, root: &str, boot: &str) {
    assert!(
        log.contains("VT-IMAGE grub: loading /boot/vmlinuz-"),
        "{log}"
    );
    assert!(log.contains("VT-IMAGE-BOOTED vcpus=2 mem_kb="), "{log}");
    assert!((400_000..524_288).contains(&marker_mem_kb(log)), "{log}");
    assert!(log.contains(&format!("root={root} ")), "{log}");
    assert!(log.contains(&format!("boot={boot}")), "{log}");
}

#[test]
fn debian_bios_image_boots_under_qemu_seabios() {
    if lab_disabled() {
        return;
    }
    let (lab, prefix) = lab_with_images();
    let o = run(lab, &prefix, QEMU_SCRIPT);
    let log = lines(&o, "QBIOS ");
    assert_eq!(
        host(&o, "qemu_bios_rc"),
        "0",
        "QEMU did not power off:\n{log}"
    );
    assert!(log.contains("SeaBIOS (version"), "{log}");
    check_marker(&log, "/dev/vda1", "bios");
}

#[test]
fn debian_efi_image_boots_under_qemu_ovmf() {
    if lab_disabled() {
        return;
    }
    let (_, efi) = images();
    let dir = std::env::temp_dir().join(format!("vt-efi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vars = dir.join("vars.fd");
    std::fs::copy(OVMF_VARS, &vars).expect("OVMF variables (apt-get install ovmf)");
    let t = std::time::Instant::now();
    // TCG: this host's /dev/kvm (PVM) runs no firmware; -snapshot keeps
    // the image as built.
    let out = std::process::Command::new("timeout")
        .arg("400")
        .arg("qemu-system-x86_64")
        .args([
            "-M",
            "q35",
            "-m",
            "512",
            "-smp",
            "2",
            "-nodefaults",
            "-nographic",
        ])
        .args(["-serial", "stdio", "-no-reboot", "-snapshot"])
        .args([
            "-drive",
            &format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        ])
        .args([
            "-drive",
            &format!("if=pflash,format=raw,file={}", vars.display()),
        ])
        .args([
            "-drive",
            &format!("file={},if=virtio,format=raw", efi.display()),
        ])
        .env("TMPDIR", &dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run qemu-system-x86_64");
    let _ = std::fs::remove_dir_all(&dir);
    let log = String::from_utf8_lossy(&out.stdout).replace('\x1b', "");
    eprintln!(
        "{log}\n{}\nin {:?}",
        String::from_utf8_lossy(&out.stderr),
        t.elapsed()
    );
    assert!(
        out.status.success(),
        "QEMU did not power off: {}",
        out.status
    );
    check_marker(&log, "/dev/vda2", "efi");
}

#[test]
fn debian_image_boots_under_vtd_import() {
    if lab_disabled() {
        return;
    }
    let (lab, prefix) = lab_with_images();
    let o = run(lab, &prefix, VTD_SCRIPT);
    assert_eq!(host(&o, "create_rc"), "0");
    let info = lines(&o, "INFO ");
    assert!(
        info.contains("bios (SeaBIOS boots the first disk)"),
        "{info}"
    );
    assert_eq!(host(&o, "start_rc"), "0");
    let status: serde_json::Value = serde_json::from_str(host(&o, "info")).expect("info json");
    assert_eq!(status["definition"]["boot"], "bios", "{status}");
    assert!(status["definition"]["kernel"].is_null(), "{status}");
    let console = lines(&o, "CONSOLE ");
    let vmm_log = lines(&o, "VMMLOG ");
    assert!(
        console.contains("SeaBIOS (version")
            && console.contains("VT-IMAGE grub: loading /boot/vmlinuz-"),
        "SeaBIOS and GRUB are not on the console:\n{console}\n{vmm_log}"
    );
    assert!(
        console.contains("VT-IMAGE-BOOTED vcpus=2 mem_kb=") && console.contains("root=/dev/vda1 "),
        "no marker on the console:\n{console}\n{vmm_log}"
    );
    assert!(
        (400_000..524_288).contains(&marker_mem_kb(&console)),
        "{console}"
    );
    assert_eq!(status["state"], "stopped", "{status}\n{vmm_log}");
    assert_eq!(status["reason"], "guest powered off", "{status}\n{vmm_log}");
}

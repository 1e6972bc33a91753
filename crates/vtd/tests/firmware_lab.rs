//! The Debian test disk images of `scripts/guest-image.sh`, booted through
//! firmware in one lab boot (or directly on a VT-x/AMD-V host):
//!
//! 1. the referee: QEMU/KVM (`-M pc`, Debian's SeaBIOS) boots the BIOS image
//!    and QEMU/KVM (`-M q35`, Debian's OVMF) the EFI image: GRUB prints its
//!    line on the serial console, systemd runs the marker unit (which sees
//!    2 vCPUs, its root on virtio-blk) and powers off, and QEMU exits 0.
//!    This proves the images apart from our VMM.
//! 2. `vtd`: `vt create --import --disk path=IMAGE` defines a BIOS-booted VM
//!    (`vt info` says so), `vt start` runs `vt-vmm --firmware` jailed, with
//!    the firmware as `/dev/fd/N`; `vt console` shows SeaBIOS, GRUB and the
//!    marker, and the guest's `systemctl poweroff` stops the VM.

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

/// The host script: `$BIOS_IMG`/`$EFI_IMG` are the images as the lab sees
/// them (read-only to everything below: QEMU runs with snapshot=on, vtd's
/// VM gets a copy).
const SCRIPT: &str = r#"
R="$VTLAB_ROOT"; VT="$R/vt/vt"; export VT_SOCKET=/tmp/vtd.sock
up() { cut -d. -f1 /proc/uptime; }
Q="qemu-system-x86_64 -enable-kvm -cpu host -m 512 -smp 2 -nodefaults -nographic -serial stdio -no-reboot"
t=$(up)
timeout 150 $Q -M pc -bios /usr/share/seabios/bios-256k.bin \
    -drive file=$BIOS_IMG,if=virtio,format=raw,snapshot=on </dev/null >/tmp/qemu-bios.log 2>&1
rc=$?; echo "VT-HOST qemu_bios_rc=$rc"; echo "VT-HOST qemu_bios_secs=$(($(up) - t))"
tr -d '\033' </tmp/qemu-bios.log | sed 's/^/QBIOS /'
cp /usr/share/OVMF/OVMF_VARS_4M.fd /tmp/vars.fd
t=$(up)
timeout 150 $Q -M q35 -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,file=/tmp/vars.fd \
    -drive file=$EFI_IMG,if=virtio,format=raw,snapshot=on </dev/null >/tmp/qemu-efi.log 2>&1
rc=$?; echo "VT-HOST qemu_efi_rc=$rc"; echo "VT-HOST qemu_efi_secs=$(($(up) - t))"
tr -d '\033' </tmp/qemu-efi.log | sed 's/^/QEFI /'

"$R/vt/cp" --sparse=always "$BIOS_IMG" /tmp/debian.img
"$R/vt/vtd" --socket $VT_SOCKET --state-dir /tmp/vt-state --vmm "$R/vt/vt-vmm" >/tmp/vtd.log 2>&1 &
for i in $(seq 100); do [ -S $VT_SOCKET ] && break; sleep 0.1; done
$VT create --name deb --import --disk path=/tmp/debian.img --memory 512 --vcpus 2
echo "VT-HOST create_rc=$?"
$VT info deb | sed 's/^/INFO /'
t=$(up)
$VT start deb
echo "VT-HOST start_rc=$?"
while [ $(($(up) - t)) -lt 180 ]; do
    $VT info deb --output json | grep -q '"state": *"running"' || break
    sleep 1
done
echo "VT-HOST run_secs=$(($(up) - t))"
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

#[test]
fn debian_image_boots_through_firmware_under_qemu_and_vtd() {
    if std::env::var("VT_LAB").is_ok_and(|v| v == "never") {
        eprintln!("VT_LAB=never: Linux guest test skipped");
        return;
    }
    let (bios, efi) = images();
    let bin = |name: &str| PathBuf::from(env!("CARGO_BIN_EXE_vtd")).with_file_name(name);
    let mut lab = Lab::new()
        .memory_mib(3072)
        .cpus(2)
        .timeout(Duration::from_secs(700))
        .with_guest_artifacts()
        .with_qemu()
        .add_file(OVMF_CODE, OVMF_CODE)
        .add_file(OVMF_VARS, OVMF_VARS)
        .add_binary(env!("CARGO_BIN_EXE_vtd"), "/vt/vtd")
        .add_binary(bin("vt"), "/vt/vt")
        .add_binary(bin("vt-vmm"), "/vt/vt-vmm")
        .add_binary("/usr/bin/cp", "/vt/cp");
    // In the lab the images are the L1's virtio disks (a 1 GiB image does
    // not belong in its initramfs); directly, the files themselves.
    let (b, e) = match HostKind::detect().expect("host kind") {
        HostKind::Lab => {
            for img in [&bios, &efi] {
                lab = lab.qemu_arg("-drive").qemu_arg(format!(
                    "file={},if=virtio,format=raw,snapshot=on",
                    img.display()
                ));
            }
            ("/dev/vda".to_string(), "/dev/vdb".to_string())
        }
        HostKind::Direct => (bios.display().to_string(), efi.display().to_string()),
    };
    let script = format!("BIOS_IMG={b}; EFI_IMG={e}\n{SCRIPT}");
    assert!(std::path::Path::new(SEABIOS).is_file(), "{SEABIOS} missing");
    let out = lab.run_auto(&script).expect("lab run");
    let o = out.stdout.as_str();
    eprintln!("{o}");
    assert_eq!(out.exit_code, 0, "{o}");

    // 1. The referee.
    for (tag, rc, root, boot) in [
        ("QBIOS ", "qemu_bios_rc", "/dev/vda1", "bios"),
        ("QEFI ", "qemu_efi_rc", "/dev/vda2", "efi"),
    ] {
        let log = lines(o, tag);
        assert_eq!(host(o, rc), "0", "QEMU did not power off:\n{log}");
        assert!(
            log.contains("VT-IMAGE grub: loading /boot/vmlinuz-"),
            "{log}"
        );
        assert!(log.contains("VT-IMAGE-BOOTED vcpus=2 mem_kb="), "{log}");
        // 512 MiB less what the kernel keeps for itself.
        assert!((400_000..524_288).contains(&marker_mem_kb(&log)), "{log}");
        assert!(log.contains(&format!("root={root} ")), "{log}");
        assert!(log.contains(&format!("boot={boot}")), "{log}");
    }
    assert!(lines(o, "QBIOS ").contains("SeaBIOS (version"));

    // 2. vtd.
    assert_eq!(host(o, "create_rc"), "0");
    let info = lines(o, "INFO ");
    assert!(
        info.contains("bios (SeaBIOS boots the first disk)"),
        "{info}"
    );
    assert_eq!(host(o, "start_rc"), "0");
    let status: serde_json::Value = serde_json::from_str(host(o, "info")).expect("info json");
    assert_eq!(status["definition"]["boot"], "bios", "{status}");
    assert!(status["definition"]["kernel"].is_null(), "{status}");
    let console = lines(o, "CONSOLE ");
    let vmm_log = lines(o, "VMMLOG ");
    assert!(
        console.contains("VT-IMAGE grub: loading /boot/vmlinuz-"),
        "GRUB is not on the console:\n{console}\n{vmm_log}"
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

//! A Debian 12 disk image (scripts/guest-image.sh: GRUB for BIOS, ext4
//! root, systemd) booted under `vt-vmm --firmware` with Debian's SeaBIOS,
//! in the lab (real kvm_amd in QEMU TCG): SeaBIOS → GRUB (on the serial
//! line) → the image's kernel → systemd → the marker unit, which reports
//! what the guest sees and powers off (exit 0). One lab boot, jailed VMM.
//!
//! The kernel gets a machine whose ACPI is hardware-reduced, so it never
//! masks the 8259 that SeaBIOS left ticking: the VMM masks it when vCPU 0
//! first exits with paging on (`vmm::vcpu::OsHandoff`); without that the
//! kernel took a "double fault" (the PIT at the BIOS's vector 8) as soon
//! as it enabled interrupts.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";

/// The BIOS image the script makes: `$VT_FW_IMAGE`, else the guest dir's.
fn image() -> PathBuf {
    match std::env::var_os("VT_FW_IMAGE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => lab::artifacts::default_guest_dir().join("debian-test-bios.img"),
    }
}

/// `key=value` from the marker line.
fn field<'a>(marker: &'a str, key: &str) -> &'a str {
    marker
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {marker:?}"))
}

#[test]
fn debian_image_boots_through_seabios_and_grub_to_systemd() {
    if lab_disabled() {
        return;
    }
    let img = image();
    if !img.exists() || !std::path::Path::new(SEABIOS).exists() {
        eprintln!(
            "skipped: {} or {SEABIOS} missing (run scripts/guest-image.sh; apt install seabios)",
            img.display()
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("vt-fwlab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrapper = jailed_vmm_wrapper(&dir);
    // The image is the lab's /dev/vda (writes stay in QEMU's snapshot).
    let host = r#"R="$VTLAB_ROOT"
echo "=== CASE bios"
t0=$(date +%s)
timeout -s KILL 300 "$R/vt/vt-vmm" --firmware "$R/vt/bios-256k.bin" \
    --disk path=/dev/vda --cpus 2 --memory 512 </dev/null 2>/tmp/vmm.err
rc=$?
echo "VT-HOST seconds=$(( $(date +%s) - t0 ))"
grep -a -E '^firmware: (Found [0-9]+ cpu|Booting from|PCI: map)' /tmp/vmm.err | sed 's/^/VT-FW /'
grep -a -v '^firmware: ' /tmp/vmm.err
echo "=== RC $rc"
"#;
    let out = lab::Lab::new()
        .memory_mib(2048)
        .cpus(2)
        .timeout(Duration::from_secs(900))
        .with_guest_artifacts()
        .add_binary(env!("CARGO_BIN_EXE_vt-vmm"), "/vt/bin/vt-vmm")
        .add_file(wrapper, "/vt/vt-vmm")
        .add_file(SEABIOS, "/vt/bios-256k.bin")
        .qemu_arg("-drive")
        .qemu_arg(format!(
            "file={},if=virtio,format=raw,snapshot=on",
            img.display()
        ))
        .run_auto(host)
        .expect("lab run");
    eprintln!("{}", out.stdout);
    let (body, rc) = case_output(&out.stdout, "bios");
    let text = body.join("\n");
    assert_eq!(rc, Some(0), "{text}");
    // SeaBIOS's screen mirrored on COM1, then GRUB's own serial terminal.
    assert!(text.contains("SeaBIOS (version"), "{text}");
    assert!(text.contains("VT-FW firmware: Found 2 cpu(s)"), "{text}");
    assert!(text.contains("VT-IMAGE grub"), "no GRUB line:\n{text}");
    let marker = body
        .iter()
        .find_map(|l| l.split_once("VT-IMAGE-BOOTED ").map(|(_, m)| m.trim_end()))
        .unwrap_or_else(|| panic!("no marker:\n{text}"));
    assert_eq!(field(marker, "vcpus"), "2", "{marker}");
    let mem_kb: u64 = field(marker, "mem_kb").parse().unwrap();
    assert!(
        (400_000..524_288).contains(&mem_kb),
        "MemTotal {mem_kb} kB for 512 MiB: {marker}"
    );
    assert!(field(marker, "root").starts_with("/dev/vda"), "{marker}");
    assert_eq!(field(marker, "boot"), "bios", "{marker}");
    // The RTC (CMOS, through rtc_cmos): a date like 2026-11-29.
    let rtc = field(marker, "rtc");
    assert!(
        rtc.len() == 10 && rtc.starts_with("20") && rtc.as_bytes()[4] == b'-',
        "rtc={rtc}: {marker}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

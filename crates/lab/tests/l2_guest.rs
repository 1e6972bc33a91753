//! An L2 Linux guest (the artifacts' kernel + initramfs) boots under QEMU/KVM
//! inside the lab: proves the lab can host nested Linux guests and that the
//! guest initramfs speaks its protocol (VT-GUEST lines, /vt-test.sh, poweroff).
//! Skipped only with VT_LAB=never.

use lab::{CpioWriter, Lab, LabError};
use std::time::Duration;

#[test]
fn l2_linux_boots_in_the_lab() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var("VT_LAB").is_ok_and(|v| v == "never") {
        eprintln!("VT_LAB=never: lab test skipped");
        return Ok(());
    }
    // Tests add a /vt-test.sh by appending a second (uncompressed) archive.
    let mut extra = CpioWriter::new(Vec::new());
    extra.file(
        "vt-test.sh",
        0o755,
        b"echo VT-TEST virtio=$(ls /sys/bus/virtio/devices | wc -l) \
          rng=$(head -c 8 /dev/hwrng | wc -c)\nexit 7\n",
    )?;
    let dir = std::env::temp_dir().join(format!("vtlab-l2-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let extra_path = dir.join("extra.cpio");
    std::fs::write(&extra_path, extra.finish()?)?;

    let run = Lab::new()
        .with_qemu()
        .with_guest_artifacts()
        .add_file(&extra_path, "/guest/extra.cpio")
        .timeout(Duration::from_secs(400))
        .run(
            "cat /guest/initramfs.cpio.gz /guest/extra.cpio > /tmp/initrd; \
             time qemu-system-x86_64 -accel kvm -cpu host -smp 2 -m 512 -nodefaults \
             -nographic -serial stdio -no-reboot -device virtio-rng-pci \
             -kernel /guest/vmlinuz -initrd /tmp/initrd \
             -append 'console=ttyS0 quiet loglevel=1 panic=-1 vt.action=poweroff'",
        );
    let _ = std::fs::remove_dir_all(&dir);
    let out = run?;
    eprintln!(
        "lab boot {:?}, whole run {:?}\n{}",
        out.boot, out.duration, out.stdout
    );
    assert_eq!(out.exit_code, 0, "{}", out.console);
    for want in [
        "VT-GUEST nproc=2",
        "VT-GUEST cmdline=console=ttyS0 quiet loglevel=1 panic=-1 vt.action=poweroff",
        "VT-GUEST init-reached",
        "VT-TEST virtio=1 rng=8",
        "VT-GUEST test-exit=7",
    ] {
        // SeaBIOS clears the screen (escape codes) just before the first line.
        assert!(
            out.stdout.lines().any(|l| l.ends_with(want)),
            "no {want:?} in:\n{}",
            out.stdout
        );
    }
    let mem = out
        .stdout
        .lines()
        .find_map(|l| l.split_once("VT-GUEST memtotal_kb=").map(|(_, v)| v))
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| LabError::L1 {
            why: "no memtotal line".into(),
            console: out.console.clone(),
        })?;
    assert!((300_000..524_288).contains(&mem), "memtotal_kb={mem}");
    Ok(())
}

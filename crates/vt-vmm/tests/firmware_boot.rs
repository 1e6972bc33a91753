//! `vt-vmm --firmware` with Debian's SeaBIOS on the host's own `/dev/kvm`
//! (runs on PVM too): SeaBIOS finds the virtio-blk disk through PCI and
//! fw_cfg, boots its boot sector (real mode, int 19h), the sector prints on
//! COM1 and powers off through the ACPI sleep register; a disk without a
//! boot sector gets SeaBIOS's "No bootable device" on the serial console and
//! then a reset that ends the VMM; a bad firmware file is one clear error.
//! The Linux guest booting through GRUB is `firmware_lab.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Debian's SeaBIOS (package `seabios`).
const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";
const VM_UID: &str = "1879113001";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vt-fw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn ready() -> bool {
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !kvm || !Path::new(SEABIOS).exists() {
        eprintln!("skipped: needs /dev/kvm and {SEABIOS} (apt install seabios)");
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

/// A boot sector: prints `message` on COM1, then writes S5 | SLP_EN to the
/// ACPI sleep control port (0x600).
fn boot_sector(message: &str) -> Vec<u8> {
    let mut s = vec![
        0x31, 0xc0, // xor ax, ax
        0x8e, 0xd8, // mov ds, ax
        0xfc, // cld
        0xbe, 0x1c, 0x7c, // mov si, 0x7c1c (the message)
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xac, // lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x03, // jz +3
        0xee, // out dx, al
        0xeb, 0xf8, // jmp lodsb
        0xba, 0x00, 0x06, // mov dx, 0x600
        0xb0, 0x34, // mov al, (5 << 2) | 0x20
        0xee, // out dx, al
        0xf4, // hlt
        0xeb, 0xfd, // jmp hlt
    ];
    assert_eq!(s.len(), 0x1c);
    s.extend_from_slice(message.as_bytes());
    s.push(0);
    s.resize(510, 0);
    s.extend_from_slice(&[0x55, 0xaa]);
    s
}

fn disk(name: &str, sector: Option<&[u8]>) -> PathBuf {
    let path = scratch(name);
    let mut data = vec![0u8; 4 << 20];
    if let Some(s) = sector {
        data[..s.len()].copy_from_slice(s);
    }
    std::fs::write(&path, data).unwrap();
    path
}

/// The console with what SeaBIOS's serial mirror of the screen writes
/// lazily (it may still flush the "..." and line end of "Booting from Hard
/// Disk..." after the boot sector's first bytes) taken out.
fn console(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).replace(['.', '\r', '\n'], "")
}

fn run(args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_vt-vmm"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out, start.elapsed())
}

#[test]
fn seabios_boots_the_boot_sector_of_a_virtio_disk() {
    if !ready() {
        return;
    }
    let d = disk("boot.img", Some(&boot_sector("VT-BOOT-SECTOR-RAN\r\n")));
    let spec = format!("path={}", d.display());
    let (out, took) = run(&[
        "--firmware",
        SEABIOS,
        "--disk",
        &spec,
        "--cpus",
        "2",
        "--memory",
        "128",
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // SeaBIOS's own screen, mirrored on COM1 (etc/sercon-port), then the sector.
    assert!(stdout.contains("SeaBIOS (version"), "{stdout}");
    assert!(stdout.contains("Booting from Hard Disk"), "{stdout}");
    assert!(console(&out).contains("VT-BOOT-SECTOR-RAN"), "{stdout}");
    // The debug port (0x402) feeds stderr: SeaBIOS saw fw_cfg with DMA,
    // both vCPUs (INIT-SIPI through the in-kernel LAPIC), the RAM, the
    // disk behind our PCI root (BAR below 0xFEC00000), and our FADT
    // (FACP) in the reserved top 64 KiB of RAM, through the RSDP the
    // table-loader placed.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        "firmware: QEMU fw_cfg DMA interface supported",
        "firmware: Found 2 cpu(s) max supported 2 cpu(s)",
        "firmware: qemu/e820: addr 0x0000000000000000 len 0x0000000008000000 [RAM]",
        "firmware: table(50434146)=0x07ff",
        "using modern (1.0) virtio mode",
        "firmware: Booting from Hard Disk...",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    eprintln!("boot sector reached power-off in {took:?}");
}

#[test]
fn no_bootable_device_reaches_the_console_then_the_vmm_ends() {
    if !ready() {
        return;
    }
    let d = disk("empty.img", None);
    let spec = format!("path={}", d.display());
    let (out, took) = run(&["--firmware", SEABIOS, "--disk", &spec, "--memory", "64"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("No bootable device."), "{}", text(&out));
    // SeaBIOS waits etc/boot-fail-wait (3 s), then resets through 0xCF9:
    // with --on-reboot exit (the default) the VMM ends, status 0.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("firmware: Rebooting."),
        "{}",
        text(&out)
    );
}

#[test]
fn a_jailed_vmm_gets_the_firmware_passed_in() {
    if !ready() || !jail::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = disk("jailed.img", Some(&boot_sector("VT-JAILED-FIRMWARE\r\n")));
    let spec = format!("path={}", d.display());
    let (out, _) = run(&[
        "--firmware",
        SEABIOS,
        "--disk",
        &spec,
        "--memory",
        "64",
        "--jail",
        "--jail-uid",
        VM_UID,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        console(&out).contains("VT-JAILED-FIRMWARE"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_firmware_files_are_one_clear_error() {
    let empty = scratch("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let odd = scratch("odd.bin");
    std::fs::write(&odd, vec![0xeau8; 100_000]).unwrap();
    let huge = scratch("huge.bin");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let zeros = scratch("zeros.bin");
    std::fs::write(&zeros, vec![0u8; 64 << 10]).unwrap();
    let mut ovmf = vec![0u8; 128 << 10];
    ovmf[40..44].copy_from_slice(b"_FVH");
    let uefi = scratch("uefi.fd");
    std::fs::write(&uefi, ovmf).unwrap();
    let dir = std::env::temp_dir();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![empty.display().to_string()], "the file is empty"),
        (
            vec![odd.display().to_string()],
            "not a whole number of 64 KiB",
        ),
        (vec![huge.display().to_string()], "larger than the 16 MiB"),
        (
            vec![zeros.display().to_string()],
            "no jump at the reset vector",
        ),
        (
            vec![uefi.display().to_string()],
            "UEFI boot is not supported yet",
        ),
        (vec![dir.display().to_string()], "not a regular file"),
        (vec!["/nonexistent/bios.bin".into()], "cannot open firmware"),
        (
            vec![SEABIOS.into(), "--kernel".into(), "/k".into()],
            "cannot be used with",
        ),
    ];
    for (args, want) in cases {
        let mut argv = vec!["--firmware".to_string()];
        argv.extend(args);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (out, _) = run(&argv);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {all}");
        assert!(all.contains(want), "{argv:?}: want {want:?} in {all}");
        assert_eq!(all.trim_end().lines().count(), 1, "one line: {all}");
        assert!(all.starts_with("vt-vmm: error: "), "{all}");
    }
}

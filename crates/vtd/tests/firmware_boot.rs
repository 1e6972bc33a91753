//! Firmware-booted VM definitions (`vt create --import`), on this host:
//! what is defined and shown, what is refused with which message, and that
//! a jailed VMM gets vtd's `--bios` file as `/dev/fd/N` (a firmware file of
//! the wrong size, so the VMM's own check refuses it and names the
//! descriptor). The guest side is in `firmware_lab.rs`.

mod common;

use api::manager::VmState;
use common::{require_kvm, Vtd};

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn import_defines_a_firmware_boot_and_bad_choices_are_refused() {
    require_kvm!();
    let tmp = std::env::temp_dir().join(format!("vtd-fwdef-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // Not a firmware image: 1000 bytes (firmware comes in 64 KiB units).
    let bios = tmp.join("bios.bin");
    std::fs::write(&bios, vec![0xf4u8; 1000]).unwrap();
    let disk = tmp.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let (bios_s, disk_s) = (bios.display().to_string(), disk.display().to_string());
    let mut vtd = Vtd::start_with_args("fwdef", &["--bios", &bios_s]);
    let disk_arg = format!("path={disk_s}");

    let o = vtd.vt(&[
        "create", "--name", "fw", "--import", "--disk", &disk_arg, "--vcpus", "2", "--memory", "64",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s = vtd.status("fw");
    assert_eq!(s.definition.boot, api::BootMode::Bios);
    assert!(s.definition.kernel.is_none() && s.definition.initrd.is_none());
    assert_eq!(s.definition.cmdline, "");
    let info = text(&vtd.vt(&["info", "fw"]));
    assert!(
        info.contains("bios (SeaBIOS boots the first disk)"),
        "{info}"
    );

    // The CLI's refusals.
    let guest = vtd.guest.display().to_string();
    let kernel_arg = format!("kernel={guest}");
    for (args, want) in [
        (
            vec!["--import", "--disk", &disk_arg, "--boot", &kernel_arg],
            "choose one",
        ),
        (vec!["--import"], "give --disk path=IMAGE"),
        (vec!["--boot", "hd"], "give --disk path=IMAGE"),
        (
            vec!["--import", "--disk", "path=/nonexistent/x.img"],
            "no such file",
        ),
        (
            vec!["--boot", "cdrom", "--disk", &disk_arg],
            "'cdrom' is not supported",
        ),
    ] {
        let mut all = vec!["create", "--name", "bad"];
        all.extend(args.iter().copied());
        let o = vtd.vt(&all);
        assert!(!o.status.success(), "{all:?} was accepted");
        assert!(text(&o).contains(want), "{all:?}: {}", text(&o));
    }
    // vtd's: UEFI is not there yet, a firmware boot with a kernel, or
    // without a disk.
    let o = vtd.vt(&[
        "create", "--name", "u", "--boot", "uefi", "--disk", &disk_arg,
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("cannot boot UEFI firmware (OVMF) yet"),
        "{}",
        text(&o)
    );
    for (body, want) in [
        (
            format!(
                r#"{{"name":"k","boot":"bios","kernel":"{guest}","disks":[{{"path":"{disk_s}"}}]}}"#
            ),
            "needs boot kernel",
        ),
        (
            r#"{"name":"k","boot":"bios"}"#.to_string(),
            "the VM has none",
        ),
        (
            r#"{"name":"k","boot":"floppy"}"#.to_string(),
            "unknown variant",
        ),
    ] {
        let r = vtd.call("POST", "/vms", Some(&body));
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(want), "{body}: {}", r.text());
    }
    assert_eq!(vtd.call("GET", "/vms/bad", None).status, 404);
    assert_eq!(vtd.call("GET", "/vms/k", None).status, 404);

    // The jailed VMM gets the firmware as a descriptor and refuses it.
    let o = vtd.vt(&["start", "fw"]);
    common::wait_for(
        || vtd.status("fw").state != VmState::Running,
        "the VMM to refuse the firmware",
    );
    let s = vtd.status("fw");
    let log = std::fs::read_to_string(vtd.state.join("vms/fw/vmm.log")).unwrap_or_default();
    assert!(
        log.contains("firmware /dev/fd/") && log.contains("64 KiB"),
        "start: {} {s:?}\nvmm.log:\n{log}",
        text(&o)
    );

    // A definition from before boot modes (none stored) still boots its
    // kernel; the firmware one keeps its mode across a restart.
    vtd.define("old");
    vtd.kill9();
    vtd.restart();
    assert_eq!(vtd.status("old").definition.boot, api::BootMode::Kernel);
    assert_eq!(vtd.status("fw").definition.boot, api::BootMode::Bios);

    // Without the firmware file, starting says what to install.
    std::fs::remove_file(&bios).unwrap();
    let r = vtd.call("POST", "/vms/fw/start", None);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("seabios package"), "{}", r.text());
    let _ = std::fs::remove_dir_all(&tmp);
}

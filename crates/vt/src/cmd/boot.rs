//! `vt create`'s boot choice, in virt-install's spelling: `--boot
//! kernel=PATH[,initrd=PATH][,kernel_args="..."]` (direct kernel boot),
//! `--import` (boot the first disk's bootloader through BIOS firmware),
//! `--boot hd` (the same) and `--boot uefi` (through UEFI firmware).

use std::path::PathBuf;

use api::manager::VmDefinition;
use api::BootMode;

use super::client::{CliError, CliResult};
use super::options::pairs;

fn absolute(p: &str) -> CliResult<PathBuf> {
    std::path::absolute(p).map_err(|e| CliError::usage(format!("{p}: {e}")))
}

/// Sets the boot mode, kernel, initrd and command line of `def` from
/// `--boot SPEC` and `--import`. A firmware boot has no kernel command
/// line (GRUB's is in the image).
pub fn apply(def: &mut VmDefinition, spec: Option<&str>, import: bool) -> CliResult {
    let keys = ["kernel", "initrd", "kernel_args", "cmdline", "extra_args"];
    let mut firmware = import.then_some(BootMode::Bios);
    let mut direct = false;
    let given = spec.unwrap_or("");
    let list = if given.is_empty() {
        Vec::new()
    } else {
        pairs(given, &keys).map_err(|e| CliError::usage(format!("--boot: {e}")))?
    };
    for (k, v) in list {
        match (k.as_str(), v.as_str()) {
            ("kernel", _) => def.kernel = Some(absolute(&v)?),
            ("initrd", _) => def.initrd = Some(absolute(&v)?),
            ("kernel_args" | "cmdline" | "extra_args", _) => def.cmdline = v,
            ("", "hd") => {
                firmware.get_or_insert(BootMode::Bios);
            }
            ("", "uefi") => firmware = Some(BootMode::Uefi),
            _ => {
                return Err(CliError::usage(format!(
                    "--boot {given}: '{v}' is not supported (kernel=PATH[,initrd=PATH][,kernel_args=\"...\"], hd or uefi)"
                )))
            }
        }
        direct |= !k.is_empty();
    }
    if let Some(mode) = firmware {
        if direct {
            return Err(CliError::usage(
                "--import/--boot hd/--boot uefi boot the disk's own bootloader through firmware; --boot kernel=,initrd=,kernel_args= is direct kernel boot: choose one",
            ));
        }
        def.boot = mode;
        def.cmdline.clear();
    }
    Ok(())
}

/// Checks a firmware boot's disks: the first one is booted, so it must be
/// there already (a disk made empty now has no bootloader).
pub fn check_disks(def: &VmDefinition) -> CliResult {
    if def.boot.is_kernel() {
        return Ok(());
    }
    let Some(first) = def.disks.first() else {
        return Err(CliError::usage(
            "--import (or --boot hd/uefi) boots from a disk: give --disk path=IMAGE",
        ));
    };
    if !first.path.exists() {
        return Err(CliError::usage(format!(
            "--import boots the existing image {}: no such file",
            first.path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> VmDefinition {
        serde_json::from_str(r#"{"name":"a"}"#).unwrap()
    }

    fn err(spec: Option<&str>, import: bool) -> String {
        apply(&mut def(), spec, import).unwrap_err().message
    }

    #[test]
    fn import_and_hd_boot_bios_uefi_boots_uefi() {
        for (spec, import, want) in [
            (None, true, BootMode::Bios),
            (Some("hd"), false, BootMode::Bios),
            (Some("hd"), true, BootMode::Bios),
            (Some("uefi"), false, BootMode::Uefi),
            (Some("uefi"), true, BootMode::Uefi),
            (Some("hd,uefi"), true, BootMode::Uefi),
            (None, false, BootMode::Kernel),
        ] {
            let mut d = def();
            apply(&mut d, spec, import).unwrap();
            assert_eq!(d.boot, want, "{spec:?} {import}");
            assert_eq!(d.cmdline.is_empty(), want.is_firmware());
            assert!(d.kernel.is_none());
        }
    }

    #[test]
    fn kernel_boot_is_unchanged() {
        let mut d = def();
        apply(&mut d, Some("kernel=/k,kernel_args=\"a=1,2\""), false).unwrap();
        assert_eq!(d.boot, BootMode::Kernel);
        assert_eq!(d.kernel.as_deref(), Some(std::path::Path::new("/k")));
        assert_eq!(d.cmdline, "a=1,2");
    }

    #[test]
    fn import_with_a_kernel_or_an_unknown_device_is_refused() {
        for (spec, import) in [
            (Some("kernel=/k"), true),
            (Some("hd,kernel=/k"), false),
            (Some("uefi,initrd=/i"), false),
            (Some("kernel_args=quiet"), true),
        ] {
            let e = err(spec, import);
            assert!(e.contains("choose one"), "{spec:?}: {e}");
        }
        let e = err(Some("cdrom"), false);
        assert!(e.contains("'cdrom' is not supported"), "{e}");
        let e = err(Some("firmware=efi"), false);
        assert!(e.contains("unknown key 'firmware'"), "{e}");
    }

    #[test]
    fn firmware_boot_needs_an_existing_first_disk() {
        let mut d = def();
        apply(&mut d, None, true).unwrap();
        let e = check_disks(&d).unwrap_err().message;
        assert!(e.contains("give --disk path=IMAGE"), "{e}");
        d.disks.push(api::manager::DiskSpec {
            path: "/nonexistent/vt-boot-test.img".into(),
            readonly: false,
            format: None,
            cache: api::CacheMode::Writeback,
            shareable: false,
        });
        let e = check_disks(&d).unwrap_err().message;
        assert!(e.contains("no such file"), "{e}");
        d.disks[0].path = std::env::current_exe().unwrap();
        check_disks(&d).unwrap();
        // Direct kernel boot may make its disks.
        check_disks(&def()).unwrap();
    }
}

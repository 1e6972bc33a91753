//! What a VM boots: its kernel (direct kernel boot) or the admin's
//! firmware, which boots the VM's disks (`boot` `bios`).
//!
//! The firmware file is vtd's configuration (`--bios`, by default Debian's
//! SeaBIOS), not the definer's: vtd opens it as itself, read-only, and a
//! jailed VMM gets it as `/dev/fd/N` like kernels; no storage-directory
//! switch applies to it, as none applies to the admin's default kernel.

use std::path::{Path, PathBuf};

use api::manager::VmDefinition;
use api::BootMode;

use crate::error::ApiError;

/// Debian's SeaBIOS build for QEMU's `pc`/`q35` machines (package
/// `seabios`), the firmware `vt-vmm --firmware` boots.
pub const DEFAULT_BIOS: &str = "/usr/share/seabios/bios-256k.bin";

/// What the VMM is given to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// `--kernel PATH` (with the definition's initrd and command line).
    Kernel(PathBuf),
    /// `--firmware PATH`, no kernel, initrd or command line.
    Firmware(PathBuf),
}

/// The firmware file for `mode` (`bios`: `bios`, vtd's `--bios`);
/// `uefi` is refused: `vt-vmm` has no UEFI firmware support yet.
pub fn firmware(mode: BootMode, bios: &Path) -> Result<PathBuf, ApiError> {
    match mode {
        BootMode::Kernel => Err(ApiError::internal("boot", "direct kernel boot has no firmware")),
        BootMode::Uefi => Err(ApiError::bad_request(
            "boot uefi: vt-vmm cannot boot UEFI firmware (OVMF) yet; boot a disk with GRUB for BIOS (MBR) with boot bios (vt create --import)",
        )),
        BootMode::Bios => {
            if !bios.is_file() {
                return Err(ApiError::bad_request(format!(
                    "boot bios: the firmware {} is not a file (install Debian's seabios package, or start vtd with --bios PATH)",
                    bios.display()
                )));
            }
            Ok(bios.to_path_buf())
        }
    }
}

/// What `def` boots, checked: its kernel, or the firmware for its mode.
pub fn resolve(def: &VmDefinition, bios: &Path) -> Result<Boot, ApiError> {
    if def.boot.is_firmware() {
        return firmware(def.boot, bios).map(Boot::Firmware);
    }
    def.kernel
        .clone()
        .map(Boot::Kernel)
        .ok_or_else(|| ApiError::bad_request("the definition has no kernel"))
}

/// The VMM's boot flags for an unjailed VMM (paths; a jailed one gets
/// descriptors, `cell::start`).
pub fn flags(boot: &Boot, def: &VmDefinition) -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    match boot {
        Boot::Kernel(k) => {
            out.extend(["--kernel".into(), k.into()]);
            if let Some(i) = &def.initrd {
                out.extend(["--initrd".into(), i.into()]);
            }
            out.extend(["--cmdline".into(), def.cmdline.clone().into()]);
        }
        Boot::Firmware(f) => out.extend(["--firmware".into(), f.into()]),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(json: &str) -> VmDefinition {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn bios_resolves_to_the_firmware_file_and_uefi_is_refused() {
        let bios = std::env::current_exe().unwrap();
        let d = def(r#"{"name":"a","boot":"bios","cmdline":"","disks":[{"path":"/d"}]}"#);
        let b = resolve(&d, &bios).unwrap();
        assert_eq!(b, Boot::Firmware(bios.clone()));
        let f: Vec<String> = flags(&b, &d)
            .iter()
            .map(|s| s.to_string_lossy().into())
            .collect();
        assert_eq!(f, ["--firmware", bios.to_str().unwrap()]);
        let e = resolve(&d, Path::new("/nonexistent/bios.bin")).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("seabios package"), "{}", e.message);
        let u = def(r#"{"name":"a","boot":"uefi","disks":[{"path":"/d"}]}"#);
        let e = resolve(&u, &bios).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("cannot boot UEFI"), "{}", e.message);
    }

    #[test]
    fn kernel_boot_passes_kernel_initrd_and_cmdline() {
        let d = def(r#"{"name":"a","kernel":"/k","initrd":"/i","cmdline":"quiet"}"#);
        let b = resolve(&d, Path::new("/nonexistent")).unwrap();
        let f: Vec<String> = flags(&b, &d)
            .iter()
            .map(|s| s.to_string_lossy().into())
            .collect();
        assert_eq!(
            f,
            ["--kernel", "/k", "--initrd", "/i", "--cmdline", "quiet"]
        );
        let e = resolve(&def(r#"{"name":"a"}"#), Path::new("/b")).unwrap_err();
        assert!(e.message.contains("no kernel"));
    }
}

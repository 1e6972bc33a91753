//! How a VM of `vtd` boots: libvirt's `<os>` choice between direct kernel
//! boot (`<kernel>`, `<initrd>`, `<cmdline>`) and firmware booting from the
//! disks (`<loader>`, `<boot dev='hd'/>`); virt-install spells the latter
//! `--import`, `--boot hd` and `--boot uefi`.

use serde::{Deserialize, Serialize};

/// The boot choice of a VM definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BootMode {
    /// Direct kernel boot: the definition's kernel, initrd and command
    /// line are loaded by the VMM (the default, and what definitions from
    /// before boot modes mean).
    #[default]
    Kernel,
    /// BIOS firmware (SeaBIOS) boots from the disks, in definition order:
    /// the bootloader in the first disk's MBR (GRUB) loads the kernel.
    Bios,
    /// UEFI firmware (OVMF) boots `\EFI\BOOT\BOOTX64.EFI` from a GPT disk's
    /// EFI system partition.
    Uefi,
}

impl BootMode {
    /// Whether this is direct kernel boot (left out of stored definitions).
    pub fn is_kernel(&self) -> bool {
        *self == BootMode::Kernel
    }

    /// Whether a firmware boots the VM (no kernel in the definition).
    pub fn is_firmware(&self) -> bool {
        !self.is_kernel()
    }

    /// The name used in the API and by `vt info`.
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Kernel => "kernel",
            BootMode::Bios => "bios",
            BootMode::Uefi => "uefi",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for m in [BootMode::Kernel, BootMode::Bios, BootMode::Uefi] {
            let s = serde_json::to_string(&m).unwrap();
            assert_eq!(s, format!("\"{}\"", m.as_str()));
            assert_eq!(serde_json::from_str::<BootMode>(&s).unwrap(), m);
        }
        assert!(serde_json::from_str::<BootMode>(r#""hd""#).is_err());
        assert!(BootMode::default().is_kernel() && BootMode::Bios.is_firmware());
    }
}

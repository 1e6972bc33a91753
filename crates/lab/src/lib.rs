//! The lab: run a command where `/dev/kvm` is hardware virtualization.
//!
//! On hosts with real VT-x/AMD-V the command runs directly. Elsewhere (PVM, or
//! no `/dev/kvm`) it runs in "the lab": QEMU in software (TCG) emulating an AMD
//! CPU with SVM and nested paging, booting Debian's cloud kernel with a busybox
//! initramfs built here, which loads `kvm_amd` and so has a real (emulated)
//! hardware `/dev/kvm`. See `/work/shared/DESIGN.md` ("the lab").
//!
//! ```no_run
//! let out = lab::Lab::new()
//!     .memory_mib(2048)
//!     .add_binary("target/debug/vt-vmm", "/vt/vt-vmm")
//!     .add_file("target/guest/vmlinux", "/vt/vmlinux")
//!     .run("/vt/vt-vmm --kernel /vt/vmlinux")?;
//! assert_eq!(out.exit_code, 0);
//! # Ok::<(), lab::LabError>(())
//! ```
//!
//! Guest artifacts (kernel, modules, busybox) come from
//! `scripts/guest-artifacts.sh`, run automatically when missing.
//!
//! Environment: `VT_LAB=force|never` overrides the host decision,
//! `VT_LAB_VERBOSE=1` echoes the L1 console live to stderr, `VT_GUEST_DIR`
//! and `VT_REPO_ROOT` locate artifacts and the script, `VT_QEMU` names QEMU.

pub mod artifacts;
mod cpio;
mod error;
pub mod host;
pub mod initramfs;
mod lab;
pub mod libs;
mod output;
mod process;
mod tempdir;

pub use artifacts::GuestArtifacts;
pub use cpio::CpioWriter;
pub use error::LabError;
pub use host::HostKind;
pub use lab::{Lab, LabOutput, GUEST_DIR_IN_LAB};

/// Runs `command` in the lab, or directly when this host has hardware KVM
/// (as [`HostKind::detect`] decides). In both cases the carried files are
/// under `$VTLAB_ROOT` (empty in the lab) and the cwd is that root.
pub fn run_guest_command(lab: &Lab, command: &str) -> Result<LabOutput, LabError> {
    lab.run_auto(command)
}

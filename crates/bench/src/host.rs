//! Facts about the machine a benchmark ran on, a scratch directory, and the
//! default paths of the two VMMs.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a reader needs to judge the numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Facts {
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
    pub kvm: String,
    pub qemu_version: String,
    /// /proc/loadavg's 1, 5 and 15 minute figures when gathered.
    #[serde(default)]
    pub load: String,
}

impl Facts {
    pub fn gather(qemu: &str) -> Facts {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Facts {
            cpu_model: cpu_model(&cpuinfo).unwrap_or("unknown").to_string(),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_string()),
            kvm: kvm_kind(),
            qemu_version: qemu_version(qemu),
            load: std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        }
    }
}

/// The first `model name` of /proc/cpuinfo.
pub fn cpu_model(cpuinfo: &str) -> Option<&str> {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("model name"))
        .find_map(|l| l.split_once(':'))
        .map(|(_, v)| v.trim())
}

fn kvm_kind() -> String {
    let loaded = |m: &str| Path::new("/sys/module").join(m).exists();
    let dev = Path::new("/dev/kvm").exists();
    match () {
        _ if !dev => "none (no /dev/kvm)".into(),
        _ if loaded("kvm_pvm") => "PVM (kvm_pvm: software virtualization, no VT-x/SVM)".into(),
        _ if loaded("kvm_amd") => "kvm_amd (AMD SVM)".into(),
        _ if loaded("kvm_intel") => "kvm_intel (Intel VT-x)".into(),
        _ => "unknown KVM backend".into(),
    }
}

fn qemu_version(qemu: &str) -> String {
    Command::new(qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("unknown ({qemu} --version failed)"))
}

/// `git describe`-ish revision of the working tree, when there is one.
pub fn git_revision() -> Option<String> {
    let rev = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let rev = String::from_utf8_lossy(&rev.stdout).trim().to_string();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    Some(if dirty {
        format!("{rev} + uncommitted changes")
    } else {
        rev
    })
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// `YYYY-MM-DD HH:MM UTC` for seconds since the epoch (civil-from-days).
pub fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02} UTC")
}

/// Our VMM next to this binary (`target/release/vt-vmm`), else on `PATH`.
pub fn default_vmm() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("vt-vmm")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("vt-vmm"))
}

pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// QEMU microvm's firmware (Debian's qemu-system-x86 package).
pub const MICROVM_BIOS: &str = "/usr/share/qemu/bios-microvm.bin";

/// The lab both VMMs run in side by side: 3 GiB, 2 vCPUs, the guest kernel,
/// QEMU and its microvm firmware, our `vmm` at `/vt/vt-vmm`, the guest
/// `initrd` at `/vt/initramfs.cpio.gz` and the lab-side script `l1` at
/// `/vt/l1.sh`.
pub fn lab_side_by_side(vmm: &Path, initrd: &Path, l1: &Path, timeout_s: u64) -> lab::Lab {
    lab::Lab::new()
        .memory_mib(3072)
        .cpus(2)
        .timeout(std::time::Duration::from_secs(timeout_s))
        .with_guest_artifacts()
        .with_qemu()
        .add_binary(vmm, "/vt/vt-vmm")
        .add_file(initrd, "/vt/initramfs.cpio.gz")
        .add_file(MICROVM_BIOS, "/vt/bios-microvm.bin")
        .add_file(l1, "/vt/l1.sh")
}

/// A directory removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("vt-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400 + 3600 + 120), "2000-02-29 01:02 UTC");
        assert_eq!(utc(1_767_225_599), "2025-12-31 23:59 UTC");
    }

    #[test]
    fn cpu_model_line() {
        let s = "processor\t: 0\nmodel name\t: AMD EPYC-Milan Processor\nflags: x\n";
        assert_eq!(cpu_model(s), Some("AMD EPYC-Milan Processor"));
        assert_eq!(cpu_model("flags: svm\n"), None);
    }
}

//! What kind of KVM this host has, and so where guests must run.

use std::path::Path;

/// Where guest commands run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// `/dev/kvm` is hardware VT-x/AMD-V: run directly on this host.
    Direct,
    /// No `/dev/kvm`, or a software one (PVM): run inside the lab (QEMU TCG).
    Lab,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("VT_LAB={0:?}: expected \"force\" or \"never\"")]
    BadOverride(String),
}

/// What the decision is based on, gathered from the host.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    pub dev_kvm: bool,
    pub pvm_module: bool,
    pub cpu_has_vmx_or_svm: bool,
}

impl HostFacts {
    pub fn gather() -> HostFacts {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        HostFacts {
            dev_kvm: Path::new("/dev/kvm").exists(),
            pvm_module: Path::new("/sys/module/kvm_pvm").exists(),
            cpu_has_vmx_or_svm: cpu_has_hw_virt(&cpuinfo),
        }
    }
}

impl HostKind {
    /// Decides for this host, honouring `VT_LAB=force|never`.
    pub fn detect() -> Result<HostKind, HostError> {
        let over = std::env::var("VT_LAB").ok();
        HostKind::decide(&HostFacts::gather(), over.as_deref())
    }

    /// The decision itself, from gathered facts and the `VT_LAB` value.
    pub fn decide(facts: &HostFacts, over: Option<&str>) -> Result<HostKind, HostError> {
        match over.map(str::trim) {
            Some("force") => return Ok(HostKind::Lab),
            Some("never") => return Ok(HostKind::Direct),
            None | Some("") | Some("auto") => {}
            Some(other) => return Err(HostError::BadOverride(other.to_string())),
        }
        if facts.dev_kvm && !facts.pvm_module && facts.cpu_has_vmx_or_svm {
            Ok(HostKind::Direct)
        } else {
            Ok(HostKind::Lab)
        }
    }
}

/// True when any `flags` line of /proc/cpuinfo lists `vmx` or `svm`.
pub fn cpu_has_hw_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .filter_map(|l| l.split_once(':'))
        .any(|(_, flags)| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(dev_kvm: bool, pvm_module: bool, hw: bool) -> HostFacts {
        HostFacts {
            dev_kvm,
            pvm_module,
            cpu_has_vmx_or_svm: hw,
        }
    }

    #[test]
    fn decides() {
        let d = |f: HostFacts, o| HostKind::decide(&f, o).unwrap();
        assert_eq!(d(facts(true, false, true), None), HostKind::Direct);
        assert_eq!(d(facts(true, true, false), None), HostKind::Lab);
        assert_eq!(d(facts(true, true, true), None), HostKind::Lab);
        assert_eq!(d(facts(false, false, true), None), HostKind::Lab);
        assert_eq!(d(facts(true, false, false), None), HostKind::Lab);
        assert_eq!(d(facts(true, false, true), Some("force")), HostKind::Lab);
        assert_eq!(
            d(facts(false, true, false), Some("never")),
            HostKind::Direct
        );
        assert!(HostKind::decide(&facts(true, false, true), Some("yes")).is_err());
    }

    #[test]
    fn reads_cpu_flags() {
        assert!(cpu_has_hw_virt("flags\t\t: fpu vme svm sse\n"));
        assert!(cpu_has_hw_virt("processor: 0\nflags : fpu vmx\n"));
        assert!(!cpu_has_hw_virt("flags\t\t: fpu vme svmx sse\n"));
        assert!(!cpu_has_hw_virt("model name: svm vmx\n"));
    }
}

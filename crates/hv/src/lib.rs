//! `hv`: the KVM layer of VT System.
//!
//! It owns the `/dev/kvm` handle, the VM file descriptor and the vCPU file
//! descriptors, and knows how to shape CPUID and the boot MSRs. It knows
//! nothing about devices or guest memory layout: callers hand it plain values.

mod cpuid;
mod irq;
mod kvm;
mod msr;
mod vcpu;

pub use cpuid::{patch_cpuid, CpuTopology, CpuVendor};
pub use irq::{routing_table, MsiRoute, IOAPIC_PINS, MAX_GSI};
pub use kvm::{preopen_kvm, Hypervisor, HypervisorKind, Vm};
pub use msr::boot_msrs;
pub use vcpu::{Vcpu, VcpuExit};

pub use kvm_bindings;
pub use kvm_ioctls;

/// Errors from the KVM layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not supported (need 12)")]
    ApiVersion(i32),
    #[error("KVM lacks a required capability: {0}")]
    MissingCap(&'static str),
    #[error("KVM ioctl {0} failed")]
    Ioctl(&'static str, #[source] kvm_ioctls::Error),
    #[error("{0} vCPUs requested but KVM allows at most {1}")]
    TooManyVcpus(u32, u32),
    #[error("MSR {0:#x} was not accepted by KVM")]
    MsrRejected(u32),
    #[error("too many MSRs for one KVM call")]
    MsrList,
    #[error("cannot build a CPUID table: {0}")]
    Cpuid(String),
    #[error("interrupt routing: {0}")]
    Routing(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

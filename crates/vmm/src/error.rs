//! Errors building or running a VM.

/// Why a VM could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(#[from] api::ConfigError),
    #[error("cannot open {what} {path}")]
    Open {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Kernel {
        path: String,
        #[source]
        source: arch::boot::Error,
    },
    #[error("firmware {path}: {reason}")]
    Firmware { path: String, reason: String },
    #[error("fw_cfg")]
    FwCfg(#[from] devices::firmware::fw_cfg::Error),
    #[error("memory of {asked} MiB exceeds the host's {host} MiB")]
    MemoryExceedsHost { asked: u64, host: u64 },
    #[error("cannot map {0} MiB of guest memory")]
    MapMemory(u64, #[source] std::io::Error),
    #[error("guest memory needs {want} free huge pages of {size_mib} MiB, the host has {have} (raise /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages)")]
    TooFewHugePages { want: u64, have: u64, size_mib: u64 },
    #[error("cannot reserve {want} huge pages of {size_mib} MiB for guest memory: too few free (raise /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages)")]
    HugePagesReserve { want: u64, size_mib: u64 },
    #[error("this host has no pool of {0} MiB huge pages")]
    NoHugePagePool(u64),
    #[error("cannot advise guest memory {0} (does this host kernel have it?)")]
    Advise(&'static str, #[source] std::io::Error),
    #[error("{0} vCPUs requested but this host's KVM allows at most {1}")]
    TooManyVcpus(u32, u32),
    #[error("KVM")]
    Hv(#[from] hv::Error),
    #[error("cannot write ACPI tables")]
    Acpi(#[from] arch::acpi::Error),
    #[error("cannot set up devices")]
    Bus(#[from] devices::bus::Error),
    #[error("cannot write boot data to guest memory")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("cannot start vCPU thread")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    Disk(disk::OpenError),
    #[error("NIC on tap '{0}'")]
    Net(String, #[source] devices::virtio::net::TapError),
    #[error("PCI: {0}")]
    Pci(String),
    #[error("confinement")]
    Sandbox(#[from] crate::sandbox::Error),
}

impl Error {
    /// True when the error is the user's input (exit status 2), false when
    /// the host or KVM failed (exit status 1).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::Config(_)
                | Error::Open { .. }
                | Error::Kernel { .. }
                | Error::Firmware { .. }
                | Error::MemoryExceedsHost { .. }
                | Error::MapMemory(..)
                | Error::Advise(..)
                | Error::TooFewHugePages { .. }
                | Error::NoHugePagePool(_)
                | Error::HugePagesReserve { .. }
                | Error::TooManyVcpus(..)
                | Error::Disk(_)
                | Error::Net(..)
        )
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        if self.is_user_error() {
            2
        } else {
            1
        }
    }
}

//! The hypervisor handle and the VM.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::{Error, Result, Vcpu};

/// Where `/dev/kvm` gets its virtualization from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypervisorKind {
    /// Hardware virtualization (VT-x or AMD-V).
    Hardware,
    /// PVM: software virtualization, enough for small guests only.
    Pvm,
}

impl HypervisorKind {
    /// Detects the kind of the host's KVM (see the `pvm` crate: no
    /// vmx/svm CPU flag, or `kvm_pvm` loaded without a hardware module).
    pub fn detect() -> Self {
        if pvm::host_is_pvm() {
            HypervisorKind::Pvm
        } else {
            HypervisorKind::Hardware
        }
    }
}

/// An open `/dev/kvm`.
pub struct Hypervisor {
    kvm: Kvm,
}

/// Address KVM uses for the TSS on Intel (QEMU's); must not overlap guest
/// RAM, MMIO or a firmware image (mapped to end at 4 GiB, up to 16 MiB).
pub const KVM_TSS_ADDRESS: usize = 0xfeff_d000;
/// Address of the identity-map page KVM needs on Intel (just below the TSS).
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfeff_c000;

/// `/dev/kvm` opened before the process gave up the right to open it
/// (a jailed VMM); [`Hypervisor::open`] duplicates it.
static PREOPENED: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();

/// Opens `/dev/kvm` now, for every later [`Hypervisor::open`] (call before
/// dropping privileges). Errors: the open's.
pub fn preopen_kvm() -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")?;
    let _ = PREOPENED.set(f.into());
    Ok(())
}

impl Hypervisor {
    /// Opens `/dev/kvm` (or duplicates the [`preopen_kvm`] descriptor) and
    /// checks what VT System relies on.
    pub fn open() -> Result<Self> {
        let kvm = match PREOPENED.get() {
            Some(fd) => {
                use std::os::fd::{FromRawFd, IntoRawFd};
                let dup = fd.try_clone().map_err(|e| {
                    Error::OpenKvm(vmm_sys_util::errno::Error::new(
                        e.raw_os_error().unwrap_or(libc::EBADF),
                    ))
                })?;
                // SAFETY: a descriptor of /dev/kvm that we own and hand over.
                unsafe { Kvm::from_raw_fd(dup.into_raw_fd()) }
            }
            None => Kvm::new().map_err(Error::OpenKvm)?,
        };
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(Error::ApiVersion(version));
        }
        for (cap, name) in [
            (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
            (Cap::Pit2, "KVM_CAP_PIT2"),
            (Cap::Irqfd, "KVM_CAP_IRQFD"),
            (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(Error::MissingCap(name));
            }
        }
        Ok(Hypervisor { kvm })
    }

    /// The most vCPUs one VM may have on this host.
    pub fn max_vcpus(&self) -> u32 {
        u32::try_from(self.kvm.get_max_vcpus()).unwrap_or(1)
    }

    /// CPUID leaves KVM can expose to a guest.
    pub fn supported_cpuid(&self) -> Result<CpuId> {
        self.kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| Error::Ioctl("KVM_GET_SUPPORTED_CPUID", e))
    }

    /// Creates a VM. Add its memory, then call [`Vm::create_irqchip`]:
    /// memory slots installed after the irqchip cost an expedited SRCU grace
    /// period each (several ms), before it almost nothing.
    pub fn create_vm(&self) -> Result<Vm> {
        let fd = self
            .kvm
            .create_vm()
            .map_err(|e| Error::Ioctl("KVM_CREATE_VM", e))?;
        fd.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(|e| Error::Ioctl("KVM_SET_TSS_ADDR", e))?;
        // Only needed (and only meaningful) on Intel; harmless elsewhere, but
        // PVM rejects it, so a failure here is not fatal.
        let _ = fd.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS);
        Ok(Vm { fd, slots: 0 })
    }
}

/// One KVM virtual machine.
pub struct Vm {
    fd: VmFd,
    slots: u32,
}

impl Vm {
    /// Maps `size` bytes of host memory at `host_addr` into the guest at `guest_addr`.
    ///
    /// # Safety
    ///
    /// `host_addr..host_addr + size` must be a mapping owned by the caller that
    /// stays valid and mapped for as long as this VM exists.
    pub unsafe fn add_memory(&mut self, guest_addr: u64, size: u64, host_addr: u64) -> Result<()> {
        let region = kvm_userspace_memory_region {
            slot: self.slots,
            flags: 0,
            guest_phys_addr: guest_addr,
            memory_size: size,
            userspace_addr: host_addr,
        };
        // SAFETY: the caller guarantees the host range outlives the VM.
        unsafe { self.fd.set_user_memory_region(region) }
            .map_err(|e| Error::Ioctl("KVM_SET_USER_MEMORY_REGION", e))?;
        self.slots += 1;
        Ok(())
    }

    /// Creates the in-kernel irqchip (PIC, IOAPIC, LAPICs) and PIT. Call
    /// after the memory slots are in place and before creating vCPUs.
    pub fn create_irqchip(&self) -> Result<()> {
        self.fd
            .create_irq_chip()
            .map_err(|e| Error::Ioctl("KVM_CREATE_IRQCHIP", e))?;
        let pit = kvm_pit_config {
            // KVM_PIT_SPEAKER_DUMMY: port 0x61 reads work without a speaker.
            flags: kvm_bindings::KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd
            .create_pit2(pit)
            .map_err(|e| Error::Ioctl("KVM_CREATE_PIT2", e))
    }

    /// Connects `evt` so that writing to it raises interrupt line `gsi`.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|e| Error::Ioctl("KVM_IRQFD", e))
    }

    /// Makes a guest write of any size to MMIO address `addr` signal `evt`
    /// inside KVM, without a VM exit (virtio queue notifications).
    pub fn register_ioevent(&self, evt: &EventFd, addr: u64) -> Result<()> {
        self.fd
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| Error::Ioctl("KVM_IOEVENTFD", e))
    }

    /// Undoes [`Vm::register_ioevent`].
    pub fn unregister_ioevent(&self, evt: &EventFd, addr: u64) -> Result<()> {
        self.fd
            .unregister_ioevent(evt, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| Error::Ioctl("KVM_IOEVENTFD", e))
    }

    /// Creates vCPU `id`; its APIC ID is `id` too.
    pub fn create_vcpu(&self, id: u8) -> Result<Vcpu> {
        let fd = self
            .fd
            .create_vcpu(u64::from(id))
            .map_err(|e| Error::Ioctl("KVM_CREATE_VCPU", e))?;
        Ok(Vcpu::new(fd, id))
    }

    /// Masks every line of both in-kernel 8259 PICs (OCW1 = 0xff on the
    /// master and the slave), as an OS that takes over from a BIOS does
    /// with its own `init_8259A` — but only while the master still has the
    /// BIOS's vector base 0x08 (which collides with the double-fault
    /// vector): a PIC the OS already reprogrammed is its own and is left
    /// alone. A hardware-reduced ACPI guest (Linux with our FADT) never
    /// touches the PIC, so the BIOS's PIT tick would otherwise keep
    /// arriving through LINT0 (ExtINT) at vector 8. Returns whether it
    /// masked.
    ///
    /// Errors: KVM_GET_IRQCHIP / KVM_SET_IRQCHIP failing (no irqchip).
    pub fn mask_bios_pic(&self) -> Result<bool> {
        let get = |chip_id| {
            let mut chip = kvm_bindings::kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            self.fd
                .get_irqchip(&mut chip)
                .map(|()| chip)
                .map_err(|e| Error::Ioctl("KVM_GET_IRQCHIP", e))
        };
        let master = get(kvm_bindings::KVM_IRQCHIP_PIC_MASTER)?;
        // SAFETY: for the PIC chip ids KVM fills the union's `pic` member;
        // it is plain bytes, any value is valid.
        if unsafe { master.chip.pic.irq_base } != 0x08 {
            return Ok(false);
        }
        for mut chip in [master, get(kvm_bindings::KVM_IRQCHIP_PIC_SLAVE)?] {
            chip.chip.pic.imr = 0xff;
            self.fd
                .set_irqchip(&chip)
                .map_err(|e| Error::Ioctl("KVM_SET_IRQCHIP", e))?;
        }
        Ok(true)
    }

    /// The raw VM file descriptor, for device set-up not wrapped here.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }
}

//! The `ioctl` request numbers the allow-lists name, computed the way the
//! kernel headers do (`_IO`, `_IOR`, `_IOW`, `_IOWR`) from kvm-bindings'
//! structures, so a size change in the bindings moves them too.

use std::mem::size_of;

use kvm_bindings::{
    kvm_cpuid2, kvm_fpu, kvm_ioeventfd, kvm_irq_routing, kvm_irqchip, kvm_irqfd, kvm_lapic_state,
    kvm_msrs, kvm_pit_config, kvm_regs, kvm_sregs, kvm_userspace_memory_region,
};

const NONE: u64 = 0;
const WRITE: u64 = 1;
const READ: u64 = 2;

const fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (ty << 8) | nr
}

const KVMIO: u64 = 0xAE;

/// `/dev/kvm`: API version.
pub const KVM_GET_API_VERSION: u64 = ioc(NONE, KVMIO, 0x00, 0);
/// `/dev/kvm`: a new VM.
pub const KVM_CREATE_VM: u64 = ioc(NONE, KVMIO, 0x01, 0);
/// `/dev/kvm` and VM fds: capability checks.
pub const KVM_CHECK_EXTENSION: u64 = ioc(NONE, KVMIO, 0x03, 0);
/// `/dev/kvm`: size of the `kvm_run` mapping.
pub const KVM_GET_VCPU_MMAP_SIZE: u64 = ioc(NONE, KVMIO, 0x04, 0);
/// `/dev/kvm`: the CPUID the host supports.
pub const KVM_GET_SUPPORTED_CPUID: u64 = ioc(READ | WRITE, KVMIO, 0x05, size_of::<kvm_cpuid2>());
/// VM: a new vCPU.
pub const KVM_CREATE_VCPU: u64 = ioc(NONE, KVMIO, 0x41, 0);
/// VM: a guest memory slot.
pub const KVM_SET_USER_MEMORY_REGION: u64 =
    ioc(WRITE, KVMIO, 0x46, size_of::<kvm_userspace_memory_region>());
/// VM: the TSS address (Intel).
pub const KVM_SET_TSS_ADDR: u64 = ioc(NONE, KVMIO, 0x47, 0);
/// VM: the identity map address (Intel).
pub const KVM_SET_IDENTITY_MAP_ADDR: u64 = ioc(WRITE, KVMIO, 0x48, size_of::<u64>());
/// VM: in-kernel PIC/IOAPIC/LAPIC.
pub const KVM_CREATE_IRQCHIP: u64 = ioc(NONE, KVMIO, 0x60, 0);
/// Reads an in-kernel irqchip's state (the PICs' masks at OS hand-off).
pub const KVM_GET_IRQCHIP: u64 = ioc(READ | WRITE, KVMIO, 0x62, size_of::<kvm_irqchip>());
/// Writes an in-kernel irqchip's state (KVM defines it as `_IOR`).
pub const KVM_SET_IRQCHIP: u64 = ioc(READ, KVMIO, 0x63, size_of::<kvm_irqchip>());
/// VM: the GSI routing table (MSI routes; also from vCPUs on MSI-X writes).
pub const KVM_SET_GSI_ROUTING: u64 = ioc(WRITE, KVMIO, 0x6a, size_of::<kvm_irq_routing>());
/// VM: an eventfd that raises a GSI.
pub const KVM_IRQFD: u64 = ioc(WRITE, KVMIO, 0x76, size_of::<kvm_irqfd>());
/// VM: the in-kernel PIT.
pub const KVM_CREATE_PIT2: u64 = ioc(WRITE, KVMIO, 0x77, size_of::<kvm_pit_config>());
/// VM: an eventfd written on a guest MMIO/PIO write (virtio notifications).
pub const KVM_IOEVENTFD: u64 = ioc(WRITE, KVMIO, 0x79, size_of::<kvm_ioeventfd>());
/// vCPU: run the guest.
pub const KVM_RUN: u64 = ioc(NONE, KVMIO, 0x80, 0);
/// vCPU: general registers.
pub const KVM_GET_REGS: u64 = ioc(READ, KVMIO, 0x81, size_of::<kvm_regs>());
/// vCPU: general registers.
pub const KVM_SET_REGS: u64 = ioc(WRITE, KVMIO, 0x82, size_of::<kvm_regs>());
/// vCPU: segment and control registers.
pub const KVM_GET_SREGS: u64 = ioc(READ, KVMIO, 0x83, size_of::<kvm_sregs>());
/// vCPU: segment and control registers.
pub const KVM_SET_SREGS: u64 = ioc(WRITE, KVMIO, 0x84, size_of::<kvm_sregs>());
/// vCPU: MSRs.
pub const KVM_SET_MSRS: u64 = ioc(WRITE, KVMIO, 0x89, size_of::<kvm_msrs>());
/// vCPU: FPU state.
pub const KVM_SET_FPU: u64 = ioc(WRITE, KVMIO, 0x8d, size_of::<kvm_fpu>());
/// vCPU: local APIC state.
pub const KVM_GET_LAPIC: u64 = ioc(READ, KVMIO, 0x8e, size_of::<kvm_lapic_state>());
/// vCPU: local APIC state.
pub const KVM_SET_LAPIC: u64 = ioc(WRITE, KVMIO, 0x8f, size_of::<kvm_lapic_state>());
/// vCPU: CPUID.
pub const KVM_SET_CPUID2: u64 = ioc(WRITE, KVMIO, 0x90, size_of::<kvm_cpuid2>());

const TUNTAP: u64 = b'T' as u64;
/// Tap: attach to / create an interface.
pub const TUNSETIFF: u64 = ioc(WRITE, TUNTAP, 0xca, size_of::<libc::c_int>());
/// Tap: which interface a passed tap descriptor is attached to (and its
/// flags), checked before a manager's tap is used (`--net fd=N`).
pub const TUNGETIFF: u64 = ioc(READ, TUNTAP, 0xd2, size_of::<libc::c_uint>());
/// Tap: checksum/TSO offloads the guest accepted.
pub const TUNSETOFFLOAD: u64 = ioc(WRITE, TUNTAP, 0xd0, size_of::<libc::c_uint>());
/// Tap: send buffer size.
pub const TUNSETSNDBUF: u64 = ioc(WRITE, TUNTAP, 0xd4, size_of::<libc::c_int>());
/// Tap: virtio-net header size.
pub const TUNSETVNETHDRSZ: u64 = ioc(WRITE, TUNTAP, 0xd8, size_of::<libc::c_int>());

/// Interface flags (bringing a new tap up), on a datagram socket.
pub const SIOCGIFFLAGS: u64 = libc::SIOCGIFFLAGS;
/// Interface flags (bringing a new tap up), on a datagram socket.
pub const SIOCSIFFLAGS: u64 = libc::SIOCSIFFLAGS;

/// Terminal settings (the raw stdin terminal is restored at exit).
pub const TCGETS: u64 = libc::TCGETS;
/// Terminal settings (the raw stdin terminal is restored at exit).
pub const TCSETS: u64 = libc::TCSETS;

/// Everything KVM the main thread does to build a VM and its vCPUs.
pub const KVM_BUILD: &[u64] = &[
    KVM_GET_API_VERSION,
    KVM_CREATE_VM,
    KVM_CHECK_EXTENSION,
    KVM_GET_VCPU_MMAP_SIZE,
    KVM_GET_SUPPORTED_CPUID,
    KVM_CREATE_VCPU,
    KVM_SET_USER_MEMORY_REGION,
    KVM_SET_TSS_ADDR,
    KVM_SET_IDENTITY_MAP_ADDR,
    KVM_CREATE_IRQCHIP,
    KVM_CREATE_PIT2,
    KVM_GET_REGS,
    KVM_SET_REGS,
    KVM_GET_SREGS,
    KVM_SET_SREGS,
    KVM_SET_MSRS,
    KVM_SET_FPU,
    KVM_GET_LAPIC,
    KVM_SET_LAPIC,
    KVM_SET_CPUID2,
];

/// What a vCPU thread does: run, and (on guest MMIO writes to a virtio
/// device's registers) route MSI-X vectors, move notification eventfds,
/// set tap offloads on activation.
pub const VCPU: &[u64] = &[
    KVM_RUN,
    // Registers for a crash report (and CR0.PG at a firmware boot's OS
    // hand-off).
    KVM_GET_REGS,
    KVM_GET_SREGS,
    // The PICs masked at a firmware boot's OS hand-off (vCPU 0, once).
    KVM_GET_IRQCHIP,
    KVM_SET_IRQCHIP,
    KVM_SET_GSI_ROUTING,
    KVM_IRQFD,
    KVM_IOEVENTFD,
    TUNSETOFFLOAD,
];

/// Tap creation (main thread, each build).
pub const TAP_SETUP: &[u64] = &[
    TUNSETIFF,
    TUNGETIFF,
    TUNSETVNETHDRSZ,
    TUNSETSNDBUF,
    TUNSETOFFLOAD,
    SIOCGIFFLAGS,
    SIOCSIFFLAGS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_kernel_headers() {
        // Values from <linux/kvm.h> / <linux/if_tun.h> on x86_64.
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(TUNGETIFF, 0x8004_54d2);
        assert_eq!(KVM_CREATE_VM, 0xae01);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
        assert_eq!(KVM_IRQFD, 0x4020_ae76);
        assert_eq!(KVM_IOEVENTFD, 0x4040_ae79);
        assert_eq!(KVM_SET_GSI_ROUTING, 0x4008_ae6a);
        assert_eq!(KVM_GET_SUPPORTED_CPUID, 0xc008_ae05);
        assert_eq!(KVM_SET_CPUID2, 0x4008_ae90);
        assert_eq!(KVM_GET_LAPIC, 0x8400_ae8e);
        assert_eq!(KVM_SET_SREGS, 0x4138_ae84);
        assert_eq!(KVM_GET_IRQCHIP, 0xc208_ae62);
        assert_eq!(KVM_SET_IRQCHIP, 0x8208_ae63);
        assert_eq!(TUNSETIFF, 0x4004_54ca);
        assert_eq!(TUNSETOFFLOAD, 0x4004_54d0);
        assert_eq!(TUNSETVNETHDRSZ, 0x4004_54d8);
        assert_eq!(TUNSETSNDBUF, 0x4004_54d4);
    }
}

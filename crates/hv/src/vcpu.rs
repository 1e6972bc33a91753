//! One vCPU file descriptor and its boot-time register set-up.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs, CpuId, Msrs};
use kvm_ioctls::VcpuFd;

pub use kvm_ioctls::VcpuExit;

use crate::{Error, Result};

const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// A KVM vCPU.
pub struct Vcpu {
    fd: VcpuFd,
    id: u8,
}

impl Vcpu {
    pub(crate) fn new(fd: VcpuFd, id: u8) -> Self {
        Vcpu { fd, id }
    }

    /// The vCPU index (also its APIC ID).
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Sets the CPUID table the guest sees.
    pub fn set_cpuid(&self, cpuid: &CpuId) -> Result<()> {
        self.fd
            .set_cpuid2(cpuid)
            .map_err(|e| Error::Ioctl("KVM_SET_CPUID2", e))
    }

    /// Writes MSRs; fails if KVM takes fewer than all of them.
    pub fn set_msrs(&self, msrs: &Msrs) -> Result<()> {
        let n = self
            .fd
            .set_msrs(msrs)
            .map_err(|e| Error::Ioctl("KVM_SET_MSRS", e))?;
        match msrs.as_slice().get(n) {
            Some(rejected) => Err(Error::MsrRejected(rejected.index)),
            None => Ok(()),
        }
    }

    /// Sets the FPU to its reset state (x87 control word, SSE MXCSR).
    pub fn reset_fpu(&self) -> Result<()> {
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        self.fd
            .set_fpu(&fpu)
            .map_err(|e| Error::Ioctl("KVM_SET_FPU", e))
    }

    /// Routes LINT0 to ExtINT (the 8259) and LINT1 to NMI, as firmware does.
    pub fn setup_lapic(&self) -> Result<()> {
        let mut lapic = self
            .fd
            .get_lapic()
            .map_err(|e| Error::Ioctl("KVM_GET_LAPIC", e))?;
        for (reg, mode) in [
            (APIC_LVT_LINT0, APIC_MODE_EXTINT),
            (APIC_LVT_LINT1, APIC_MODE_NMI),
        ] {
            let old = read_apic_reg(&lapic.regs, reg);
            let new = (old & !0x700) | (mode << 8);
            write_apic_reg(&mut lapic.regs, reg, new);
        }
        self.fd
            .set_lapic(&lapic)
            .map_err(|e| Error::Ioctl("KVM_SET_LAPIC", e))
    }

    /// Reads the general registers.
    pub fn regs(&self) -> Result<kvm_regs> {
        self.fd
            .get_regs()
            .map_err(|e| Error::Ioctl("KVM_GET_REGS", e))
    }

    /// Sets the general registers.
    pub fn set_regs(&self, regs: &kvm_regs) -> Result<()> {
        self.fd
            .set_regs(regs)
            .map_err(|e| Error::Ioctl("KVM_SET_REGS", e))
    }

    /// Reads the special registers.
    pub fn sregs(&self) -> Result<kvm_sregs> {
        self.fd
            .get_sregs()
            .map_err(|e| Error::Ioctl("KVM_GET_SREGS", e))
    }

    /// Sets the special registers.
    pub fn set_sregs(&self, sregs: &kvm_sregs) -> Result<()> {
        self.fd
            .set_sregs(sregs)
            .map_err(|e| Error::Ioctl("KVM_SET_SREGS", e))
    }

    /// Runs the vCPU until the next exit that needs user space.
    pub fn run(&mut self) -> std::result::Result<VcpuExit<'_>, kvm_ioctls::Error> {
        self.fd.run()
    }

    /// Makes the next (or current, once interrupted) `run` return at once.
    pub fn set_immediate_exit(&mut self, on: bool) {
        self.fd.set_kvm_immediate_exit(u8::from(on));
    }

    /// The `kvm_run.immediate_exit` byte, for a signal handler to set.
    pub fn immediate_exit_ptr(&mut self) -> *mut u8 {
        &mut self.fd.get_kvm_run().immediate_exit as *mut u8
    }

    /// Details of the last KVM_EXIT_INTERNAL_ERROR: suberror and data words.
    pub fn internal_error(&mut self) -> (u32, Vec<u64>) {
        let run = self.fd.get_kvm_run();
        // SAFETY: this is only called right after `run` returned
        // KVM_EXIT_INTERNAL_ERROR, when `internal` is the active union member.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        (internal.suberror, internal.data[..n].to_vec())
    }
}

fn read_apic_reg(regs: &[std::os::raw::c_char; 1024], offset: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = regs[offset + i] as u8;
    }
    u32::from_le_bytes(b)
}

fn write_apic_reg(regs: &mut [std::os::raw::c_char; 1024], offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *byte as std::os::raw::c_char;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apic_reg_round_trip() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        write_apic_reg(&mut regs, APIC_LVT_LINT0, 0x0001_0700);
        assert_eq!(read_apic_reg(&regs, APIC_LVT_LINT0), 0x0001_0700);
        assert_eq!(read_apic_reg(&regs, APIC_LVT_LINT1), 0);
    }
}

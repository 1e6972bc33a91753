//! Putting the guest's boot state in place: kernel, initramfs, command line,
//! ACPI tables, and each vCPU's registers.

use std::fs::File;
use std::path::Path;

use api::VmConfig;
use arch::boot::{self, BootCpu};
use hv::{CpuTopology, Hypervisor, Vcpu};
use vm_memory::GuestMemoryMmap;

use crate::Error;

fn open(what: &'static str, path: &Path) -> Result<File, Error> {
    devices::files::open(path, false, 0).map_err(|source| Error::Open {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn open_kernel(path: &Path) -> Result<File, Error> {
    let file = open("kernel", path)?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(Error::Open {
            what: "kernel",
            path: path.display().to_string(),
            source: std::io::Error::other("is a directory"),
        });
    }
    Ok(file)
}

/// Opens the kernel and initramfs once, so that a bad path gets its own
/// error before Landlock (which would answer EACCES for a directory).
pub fn check_boot_files(config: &VmConfig) -> Result<(), Error> {
    if let Some(fw) = &config.firmware {
        crate::firmware::load(fw)?;
        return Ok(());
    }
    open_kernel(&config.kernel)?;
    if let Some(initrd) = &config.initrd {
        open("initramfs", initrd)?;
    }
    Ok(())
}

/// Loads kernel, initramfs, command line and ACPI tables; returns the boot vCPU's entry.
pub fn load_guest(mem: &GuestMemoryMmap, config: &VmConfig, cpus: u8) -> Result<BootCpu, Error> {
    let kernel_err = |source| Error::Kernel {
        path: config.kernel.display().to_string(),
        source,
    };
    let mut kernel_file = open_kernel(&config.kernel)?;
    let kernel = boot::load_kernel(mem, &mut kernel_file).map_err(kernel_err)?;
    boot::write_cmdline(mem, &kernel, &config.cmdline).map_err(kernel_err)?;
    let initrd = match &config.initrd {
        Some(path) => {
            let mut f = open("initramfs", path)?;
            Some(
                boot::load_initrd(mem, config.memory_bytes(), &kernel, &mut f).map_err(
                    |source| Error::Kernel {
                        path: path.display().to_string(),
                        source,
                    },
                )?,
            )
        }
        None => None,
    };
    let rsdp = arch::acpi::write_tables(mem, cpus)?;
    boot::write_boot_info(
        mem,
        config.memory_bytes(),
        &kernel,
        config.cmdline.len(),
        initrd,
        rsdp,
    )
    .map_err(kernel_err)
}

/// Creates and configures all vCPUs; only vCPU 0 gets entry registers
/// (the others wait for INIT/SIPI from the guest, as on hardware). With
/// no `boot_cpu` (firmware boot), vCPU 0 keeps KVM's reset state: real
/// mode at the reset vector.
pub fn create_vcpus(
    hv: &Hypervisor,
    vm: &hv::Vm,
    count: u8,
    boot_cpu: Option<&BootCpu>,
) -> Result<Vec<Vcpu>, Error> {
    let base_cpuid = hv.supported_cpuid()?;
    let msrs = hv::boot_msrs()?;
    let mut vcpus = Vec::with_capacity(count.into());
    for index in 0..count {
        let vcpu = vm.create_vcpu(index)?;
        let mut cpuid = base_cpuid.clone();
        hv::patch_cpuid(&mut cpuid, CpuTopology { index, count });
        vcpu.set_cpuid(&cpuid)?;
        vcpu.set_msrs(&msrs)?;
        vcpu.reset_fpu()?;
        vcpu.setup_lapic()?;
        if let (0, Some(boot_cpu)) = (index, boot_cpu) {
            vcpu.set_regs(&boot::boot_regs(boot_cpu))?;
            let mut sregs = vcpu.sregs()?;
            boot::boot_sregs(boot_cpu, &mut sregs);
            vcpu.set_sregs(&sregs)?;
        }
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

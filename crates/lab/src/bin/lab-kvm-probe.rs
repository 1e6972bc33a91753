//! A KVM sanity check for the lab: creates a VM with one vCPU, runs a few
//! real-mode instructions (`mov al, 0x42; out 0x10, al; hlt`) and checks the
//! exits. Prints `KVM-PROBE ok ...` and exits 0 on success.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};
use std::process::ExitCode;

const GUEST_ADDR: u64 = 0x1000;
const MEM_SIZE: usize = 0x1000;
const CODE: [u8; 5] = [0xb0, 0x42, 0xe6, 0x10, 0xf4];

fn probe() -> Result<String, String> {
    let kvm = Kvm::new().map_err(|e| format!("open /dev/kvm: {e}"))?;
    let api = kvm.get_api_version();
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;

    // SAFETY: an anonymous private mapping with no address hint; the result is
    // checked against MAP_FAILED before use.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEM_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `mem` is a fresh, writable mapping of MEM_SIZE bytes that nothing
    // else references; it lives until the process exits.
    let guest = unsafe { std::slice::from_raw_parts_mut(mem.cast::<u8>(), MEM_SIZE) };
    guest[..CODE.len()].copy_from_slice(&CODE);

    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: GUEST_ADDR,
        memory_size: MEM_SIZE as u64,
        userspace_addr: mem as u64,
        flags: 0,
    };
    // SAFETY: the region covers exactly the mapping above, which stays mapped
    // (never unmapped) for as long as the VM exists.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;

    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    regs.rip = GUEST_ADDR;
    regs.rflags = 2;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;

    let mut seen = Vec::new();
    for _ in 0..16 {
        match vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))? {
            VcpuExit::IoOut(port, data) => {
                if port != 0x10 || data != [0x42] {
                    return Err(format!("unexpected out {port:#x} {data:?}"));
                }
                seen.push("io");
            }
            VcpuExit::Hlt => {
                seen.push("hlt");
                break;
            }
            other => return Err(format!("unexpected exit {other:?}")),
        }
    }
    if seen != ["io", "hlt"] {
        return Err(format!("exits were {seen:?}, expected io then hlt"));
    }
    Ok(format!("KVM-PROBE ok api={api} exits={}", seen.join(",")))
}

fn main() -> ExitCode {
    match probe() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("KVM-PROBE failed: {e}");
            ExitCode::FAILURE
        }
    }
}

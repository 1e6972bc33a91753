//! `hv` against the host's real /dev/kvm (skipped without one).

use hv::{Hypervisor, MsiRoute};
use vmm_sys_util::eventfd::EventFd;

#[test]
fn vm_with_irqchip_accepts_msi_routes_and_irqfds() {
    let Ok(hv) = Hypervisor::open() else {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    };
    let vm = hv.create_vm().expect("VM");
    vm.create_irqchip().expect("irqchip and PIT");
    let route = MsiRoute {
        gsi: 24,
        address: 0xfee0_0000,
        data: 0x30,
    };
    vm.set_msi_routes(&[route]).expect("routing table");
    let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    vm.register_irqfd(&evt, 24).expect("irqfd on the MSI route");
    let legacy = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    vm.register_irqfd(&legacy, 4)
        .expect("irqfd on a legacy pin");
    assert!(hv.max_vcpus() >= 1);
    assert!(hv.supported_cpuid().expect("cpuid").as_slice().len() > 4);
}

//! Interrupt routing: the legacy pins every VM has, plus MSI routes for
//! PCI devices (MSI-X vectors), installed with KVM_SET_GSI_ROUTING.
//!
//! KVM replaces the whole table on each call, so the legacy entries are
//! always re-sent: GSI n → IOAPIC pin n (n < 24) and, for n < 16, the 8259
//! pin n as well — the same table KVM sets up with the in-kernel irqchip.

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};

use crate::{Error, Result, Vm};

/// IOAPIC pins, and so the first GSI free for MSI routes.
pub const IOAPIC_PINS: u32 = 24;
/// Most GSIs KVM accepts in a routing table (KVM_MAX_IRQ_ROUTES).
pub const MAX_GSI: u32 = 4096;

/// Where one MSI goes (as the guest wrote it in the MSI-X table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiRoute {
    pub gsi: u32,
    pub address: u64,
    pub data: u32,
}

fn irqchip(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

fn msi(r: &MsiRoute) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi: r.gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = r.address as u32;
    e.u.msi.address_hi = (r.address >> 32) as u32;
    e.u.msi.data = r.data;
    e
}

/// The full routing table: legacy pins, then `routes`.
pub fn routing_table(routes: &[MsiRoute]) -> Result<KvmIrqRouting> {
    let mut entries = Vec::with_capacity(40 + routes.len());
    for gsi in 0..IOAPIC_PINS {
        if gsi < 8 {
            entries.push(irqchip(gsi, KVM_IRQCHIP_PIC_MASTER, gsi));
        } else if gsi < 16 {
            entries.push(irqchip(gsi, KVM_IRQCHIP_PIC_SLAVE, gsi - 8));
        }
        entries.push(irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    for r in routes {
        if r.gsi < IOAPIC_PINS || r.gsi >= MAX_GSI {
            return Err(Error::Routing(format!(
                "MSI route on reserved GSI {}",
                r.gsi
            )));
        }
        entries.push(msi(r));
    }
    KvmIrqRouting::from_entries(&entries).map_err(|_| Error::Routing("table too large".into()))
}

impl Vm {
    /// Installs the legacy pins plus `routes`.
    pub fn set_msi_routes(&self, routes: &[MsiRoute]) -> Result<()> {
        let table = routing_table(routes)?;
        self.fd()
            .set_gsi_routing(&table)
            .map_err(|e| Error::Ioctl("KVM_SET_GSI_ROUTING", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_pins_are_kept_and_msi_appended() {
        let t = routing_table(&[MsiRoute {
            gsi: 24,
            address: 0x1_fee0_1000,
            data: 0x41,
        }])
        .unwrap();
        let e = t.as_slice();
        // 16 PIC + 24 IOAPIC + 1 MSI.
        assert_eq!(e.len(), 41);
        let ioapic4 = e
            .iter()
            .find(|x| {
                x.gsi == 4 && x.type_ == KVM_IRQ_ROUTING_IRQCHIP
                // SAFETY: irqchip entries carry the irqchip member.
                && unsafe { x.u.irqchip.irqchip } == KVM_IRQCHIP_IOAPIC
            })
            .expect("GSI 4 on the IOAPIC");
        // SAFETY: an irqchip entry.
        assert_eq!(unsafe { ioapic4.u.irqchip.pin }, 4);
        let m = e.last().unwrap();
        assert_eq!((m.gsi, m.type_), (24, KVM_IRQ_ROUTING_MSI));
        // SAFETY: an MSI entry.
        let (lo, hi, data) = unsafe { (m.u.msi.address_lo, m.u.msi.address_hi, m.u.msi.data) };
        assert_eq!((lo, hi, data), (0xfee0_1000, 1, 0x41));
    }

    #[test]
    fn msi_on_a_legacy_gsi_is_refused() {
        let r = MsiRoute {
            gsi: 4,
            address: 0,
            data: 0,
        };
        assert!(routing_table(&[r]).is_err());
    }
}

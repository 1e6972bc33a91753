//! CPUID shaping: start from what KVM supports and fix up the leaves that
//! describe topology, APIC IDs and the hypervisor.
//!
//! Topology model: one socket, `count` cores, one thread per core; vCPU `i`
//! has APIC ID `i`.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_VENDOR: u32 = 0x0;
const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_INTEL: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
const LEAF_AMD_SIZE: u32 = 0x8000_0008;
const LEAF_AMD_TOPOLOGY: u32 = 0x8000_001e;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const ECX_AMD_CMP_LEGACY: u32 = 1 << 1;

/// Topology level types of leaves 0xb / 0x1f.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// The CPU vendor as the guest sees it (the host's, as KVM reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuVendor {
    Intel,
    Amd,
    Other,
}

/// Where one vCPU sits in the VM's topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    /// This vCPU's index, which is also its APIC ID.
    pub index: u8,
    /// How many vCPUs the VM has (1..=254).
    pub count: u8,
}

impl CpuTopology {
    /// Bits of the APIC ID that number the cores in the package.
    fn core_bits(&self) -> u32 {
        let n = u32::from(self.count.max(1));
        n.next_power_of_two().trailing_zeros()
    }
}

/// Reads the vendor from leaf 0.
pub fn vendor(cpuid: &CpuId) -> CpuVendor {
    let Some(e) = cpuid.as_slice().iter().find(|e| e.function == LEAF_VENDOR) else {
        return CpuVendor::Other;
    };
    let mut id = [0u8; 12];
    id[0..4].copy_from_slice(&e.ebx.to_le_bytes());
    id[4..8].copy_from_slice(&e.edx.to_le_bytes());
    id[8..12].copy_from_slice(&e.ecx.to_le_bytes());
    match &id {
        b"GenuineIntel" => CpuVendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => CpuVendor::Amd,
        _ => CpuVendor::Other,
    }
}

/// Rewrites `cpuid` (as returned by KVM_GET_SUPPORTED_CPUID) for one vCPU.
pub fn patch_cpuid(cpuid: &mut CpuId, topo: CpuTopology) {
    let vendor = vendor(cpuid);
    let apic_id = u32::from(topo.index);
    let count = u32::from(topo.count.max(1));
    let core_bits = topo.core_bits();
    for e in cpuid.as_mut_slice().iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | ((count & 0xff) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_INTEL if vendor == CpuVendor::Intel => patch_cache_leaf(e, count),
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => patch_topology_leaf(e, apic_id, count, core_bits),
            LEAF_EXT_FEATURES if vendor == CpuVendor::Amd => {
                if count > 1 {
                    e.ecx |= ECX_AMD_CMP_LEGACY;
                } else {
                    e.ecx &= !ECX_AMD_CMP_LEGACY;
                }
            }
            LEAF_AMD_SIZE if vendor == CpuVendor::Amd => {
                // NC (cores - 1) in bits 7:0, ApicIdCoreIdSize in bits 15:12.
                e.ecx = (e.ecx & !0xf0ff) | ((count - 1) & 0xff) | ((core_bits & 0xf) << 12);
            }
            LEAF_AMD_TOPOLOGY if vendor == CpuVendor::Amd => {
                e.eax = apic_id;
                // Core ID in 7:0, threads per core - 1 (0) in 15:8.
                e.ebx = apic_id & 0xff;
                // One node, node ID 0.
                e.ecx = 0;
                e.edx = 0;
            }
            _ => {}
        }
    }
}

fn patch_cache_leaf(e: &mut kvm_cpuid_entry2, count: u32) {
    if e.eax & 0x1f == 0 {
        return; // no cache at this sub-leaf
    }
    let level = (e.eax >> 5) & 0x7;
    let cores_minus_one = (count - 1).min(63);
    let sharing_minus_one = if level >= 3 {
        (count - 1).min(0xfff)
    } else {
        0
    };
    e.eax = (e.eax & 0x3fff) | (sharing_minus_one << 14) | (cores_minus_one << 26);
}

fn patch_topology_leaf(e: &mut kvm_cpuid_entry2, apic_id: u32, count: u32, core_bits: u32) {
    e.edx = apic_id;
    match e.index {
        0 => {
            e.eax = 0;
            e.ebx = 1;
            e.ecx = (LEVEL_SMT << 8) | e.index;
        }
        1 => {
            e.eax = core_bits;
            e.ebx = count;
            e.ecx = (LEVEL_CORE << 8) | e.index;
        }
        _ => {
            e.eax = 0;
            e.ebx = 0;
            e.ecx = e.index & 0xff;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn table(vendor: &[u8; 12]) -> CpuId {
        let mut leaf0 = entry(0, 0);
        leaf0.ebx = u32::from_le_bytes([vendor[0], vendor[1], vendor[2], vendor[3]]);
        leaf0.edx = u32::from_le_bytes([vendor[4], vendor[5], vendor[6], vendor[7]]);
        leaf0.ecx = u32::from_le_bytes([vendor[8], vendor[9], vendor[10], vendor[11]]);
        let mut leaf1 = entry(1, 0);
        leaf1.ebx = 0xaabb_0800;
        let mut cache = entry(4, 2);
        cache.eax = (3 << 5) | 3; // L3 unified
        CpuId::from_entries(&[
            leaf0,
            leaf1,
            cache,
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
            entry(0x8000_0008, 0),
            entry(0x8000_001e, 0),
        ])
        .expect("small table")
    }

    fn find(c: &CpuId, f: u32, i: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == f && e.index == i)
            .expect("leaf present")
    }

    #[test]
    fn vendor_detected() {
        assert_eq!(vendor(&table(b"GenuineIntel")), CpuVendor::Intel);
        assert_eq!(vendor(&table(b"AuthenticAMD")), CpuVendor::Amd);
        assert_eq!(vendor(&table(b"SomethingOdd")), CpuVendor::Other);
    }

    #[test]
    fn leaf1_has_apic_id_count_and_hypervisor_bit() {
        let mut c = table(b"GenuineIntel");
        patch_cpuid(&mut c, CpuTopology { index: 5, count: 6 });
        let e = find(&c, 1, 0);
        assert_eq!(e.ebx >> 24, 5);
        assert_eq!((e.ebx >> 16) & 0xff, 6);
        assert_eq!(e.ebx & 0xffff, 0x0800, "clflush size kept");
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e.edx & EDX_HTT, 0);
    }

    #[test]
    fn single_cpu_has_no_htt() {
        let mut c = table(b"GenuineIntel");
        patch_cpuid(&mut c, CpuTopology { index: 0, count: 1 });
        assert_eq!(find(&c, 1, 0).edx & EDX_HTT, 0);
        assert_eq!(find(&c, 0xb, 1).eax, 0);
    }

    #[test]
    fn topology_leaf_describes_cores() {
        let mut c = table(b"GenuineIntel");
        patch_cpuid(&mut c, CpuTopology { index: 2, count: 3 });
        let smt = find(&c, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx >> 8, smt.edx), (0, 1, 1, 2));
        let core = find(&c, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx >> 8, core.edx), (2, 3, 2, 2));
        let end = find(&c, 0xb, 2);
        assert_eq!((end.eax, end.ebx, end.ecx >> 8), (0, 0, 0));
    }

    #[test]
    fn intel_cache_leaf_counts_cores() {
        let mut c = table(b"GenuineIntel");
        patch_cpuid(&mut c, CpuTopology { index: 0, count: 4 });
        let e = find(&c, 4, 2);
        assert_eq!(e.eax >> 26, 3);
        assert_eq!((e.eax >> 14) & 0xfff, 3);
    }

    #[test]
    fn amd_leaves_count_cores() {
        let mut c = table(b"AuthenticAMD");
        patch_cpuid(&mut c, CpuTopology { index: 7, count: 8 });
        let size = find(&c, 0x8000_0008, 0);
        assert_eq!(size.ecx & 0xff, 7);
        assert_eq!((size.ecx >> 12) & 0xf, 3);
        let topo = find(&c, 0x8000_001e, 0);
        assert_eq!(topo.eax, 7);
    }

    #[test]
    fn max_cpus_fit_the_fields() {
        let mut c = table(b"GenuineIntel");
        patch_cpuid(
            &mut c,
            CpuTopology {
                index: 253,
                count: 254,
            },
        );
        assert_eq!(find(&c, 1, 0).ebx >> 24, 253);
        assert_eq!(find(&c, 0xb, 1).eax, 8);
    }
}

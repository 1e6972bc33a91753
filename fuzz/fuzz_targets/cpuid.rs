//! CPUID shaping must accept whatever KVM reports and any topology.
#![no_main]

use hv::kvm_bindings::{kvm_cpuid_entry2, CpuId};
use hv::{patch_cpuid, CpuTopology};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[index, count], rest)) = data.split_first_chunk::<2>() else { return };
    let entries: Vec<kvm_cpuid_entry2> = rest
        .chunks_exact(24)
        .take(80)
        .map(|c| {
            let w = |i: usize| u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
            kvm_cpuid_entry2 {
                function: w(0) % 0x20 | (w(0) & 0x8000_0000) | (w(0) & 0x1f),
                index: w(4) % 4,
                eax: w(8),
                ebx: w(12),
                ecx: w(16),
                edx: w(20),
                ..Default::default()
            }
        })
        .collect();
    let Ok(mut cpuid) = CpuId::from_entries(&entries) else { return };
    patch_cpuid(&mut cpuid, CpuTopology { index, count });
});

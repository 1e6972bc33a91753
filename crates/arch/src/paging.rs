//! Identity page tables for the 64-bit Linux boot protocol.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::PML4_START;

const PDPT_START: u64 = PML4_START + 0x1000;
const PD_START: u64 = PML4_START + 0x2000;
/// GiB mapped: the Linux boot protocol needs the kernel, zero page and
/// command line mapped; we map all of the low 4 GiB with 2 MiB pages.
const MAPPED_GIB: u64 = 4;

const PRESENT_RW: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// Writes the tables; returns the CR3 value.
pub fn write_identity_tables(mem: &GuestMemoryMmap) -> Result<u64, vm_memory::GuestMemoryError> {
    mem.write_obj(PDPT_START | PRESENT_RW, GuestAddress(PML4_START))?;
    for gib in 0..MAPPED_GIB {
        let pd = PD_START + gib * 0x1000;
        mem.write_obj(pd | PRESENT_RW, GuestAddress(PDPT_START + gib * 8))?;
        let mut table = [0u8; 4096];
        for (i, slot) in table.chunks_exact_mut(8).enumerate() {
            let addr = ((gib << 30) | ((i as u64) << 21)) | PRESENT_RW | PAGE_SIZE_2M;
            slot.copy_from_slice(&addr.to_le_bytes());
        }
        mem.write_slice(&table, GuestAddress(pd))?;
    }
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_an_address_to_itself() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let cr3 = write_identity_tables(&mem).unwrap();
        // Walk 0x1_2345_6789 (GiB 4 is not mapped) and 0xb234_5678 (GiB 2).
        let va: u64 = 0xb234_5678;
        let pml4e: u64 = mem
            .read_obj(GuestAddress(cr3 + ((va >> 39) & 0x1ff) * 8))
            .unwrap();
        let pdpte: u64 = mem
            .read_obj(GuestAddress((pml4e & !0xfff) + ((va >> 30) & 0x1ff) * 8))
            .unwrap();
        let pde: u64 = mem
            .read_obj(GuestAddress((pdpte & !0xfff) + ((va >> 21) & 0x1ff) * 8))
            .unwrap();
        assert_ne!(pde & PAGE_SIZE_2M, 0);
        assert_eq!((pde & !0x1f_ffff) | (va & 0x1f_ffff), va);
    }
}

//! The boot GDT and the segment registers derived from it.

use kvm_bindings::kvm_segment;

/// Flat 64-bit code.
pub const CODE64: u64 = gdt_entry(0xa09b, 0, 0xfffff);
/// Flat data.
pub const DATA: u64 = gdt_entry(0xc093, 0, 0xfffff);
/// A 64-bit TSS (unused, but TR must point at something valid).
pub const TSS: u64 = gdt_entry(0x808b, 0, 0xfffff);
/// Flat 32-bit code, for the PVH entry.
pub const CODE32: u64 = gdt_entry(0xc09b, 0, 0xfffff);

/// The table written at [`crate::layout::GDT_START`]: null, code64, data, tss, code32.
pub const TABLE: [u64; 5] = [0, CODE64, DATA, TSS, CODE32];
pub const CODE64_INDEX: u16 = 1;
pub const DATA_INDEX: u16 = 2;
pub const TSS_INDEX: u16 = 3;
pub const CODE32_INDEX: u16 = 4;

/// Builds a GDT descriptor from flags (access byte in bits 7:0, flags in 15:12), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The KVM segment register value for GDT entry `entry` at `index`.
pub fn segment(entry: u64, index: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base,
        limit,
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code64_is_long_mode_code() {
        let s = segment(CODE64, CODE64_INDEX);
        assert_eq!((s.l, s.db, s.present, s.s, s.type_), (1, 0, 1, 1, 0xb));
        assert_eq!(s.selector, 8);
        assert_eq!(s.limit, 0xffff_ffff);
        assert_eq!(s.base, 0);
    }

    #[test]
    fn code32_is_flat_32_bit() {
        let s = segment(CODE32, CODE32_INDEX);
        assert_eq!((s.l, s.db, s.g), (0, 1, 1));
        assert_eq!(s.limit, 0xffff_ffff);
    }

    #[test]
    fn entry_round_trips_base_and_limit() {
        let e = gdt_entry(0x0093, 0x1234_5678, 0xabcde);
        let s = segment(e, 2);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcde);
        assert_eq!(s.g, 0);
    }
}

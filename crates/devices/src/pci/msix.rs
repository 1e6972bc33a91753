//! MSI-X: the vector table and pending-bit array a function exposes in one
//! of its BARs, and the capability that points at them.
//!
//! The table is guest memory-mapped I/O: every offset, length and value is
//! guest-controlled. Accesses that are not naturally aligned 4- or 8-byte
//! reads/writes inside the table or PBA are ignored (reads return zeros),
//! as the PCI spec allows.

/// Capability ID of MSI-X.
pub const CAP_ID: u8 = 0x11;
/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
const MSG_CTL_ENABLE: u16 = 1 << 15;
const MSG_CTL_FUNCTION_MASK: u16 = 1 << 14;
const VECTOR_CTL_MASK: u32 = 1;

/// One vector as the guest programmed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsixEntry {
    pub addr_lo: u32,
    pub addr_hi: u32,
    pub data: u32,
    pub vector_ctl: u32,
}

impl MsixEntry {
    pub fn masked(&self) -> bool {
        self.vector_ctl & VECTOR_CTL_MASK != 0
    }

    pub fn address(&self) -> u64 {
        (u64::from(self.addr_hi) << 32) | u64::from(self.addr_lo)
    }
}

/// What a guest write changed, for the VMM to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsixChange {
    /// Nothing the interrupt routing cares about.
    None,
    /// Vector `n`'s address, data or mask changed: re-route it.
    Vector(u16),
}

/// The table, the PBA and the enable/mask bits of the capability.
#[derive(Debug, Clone)]
pub struct Msix {
    entries: Vec<MsixEntry>,
    pending: Vec<u64>,
    control: u16,
}

impl Msix {
    /// `vectors` entries (1..=2048), all masked, as after reset.
    pub fn new(vectors: u16) -> Self {
        let n = usize::from(vectors.clamp(1, 2048));
        let masked = MsixEntry {
            vector_ctl: VECTOR_CTL_MASK,
            ..Default::default()
        };
        Msix {
            entries: vec![masked; n],
            pending: vec![0; n.div_ceil(64)],
            control: (n - 1) as u16,
        }
    }

    pub fn vectors(&self) -> u16 {
        self.entries.len() as u16
    }

    /// Table size in bytes.
    pub fn table_len(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE
    }

    /// PBA size in bytes.
    pub fn pba_len(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    /// The capability body (ID, next, message control, table and PBA
    /// locations) and its write mask: only the enable and function-mask bits
    /// of message control are writable.
    pub fn capability(&self, bir: u8, table_offset: u32, pba_offset: u32) -> (Vec<u8>, Vec<u8>) {
        let mut body = vec![CAP_ID, 0];
        body.extend_from_slice(&self.control.to_le_bytes());
        body.extend_from_slice(&(table_offset | u32::from(bir & 7)).to_le_bytes());
        body.extend_from_slice(&(pba_offset | u32::from(bir & 7)).to_le_bytes());
        let mut mask = vec![0u8; body.len()];
        mask[3] = 0xc0;
        (body, mask)
    }

    /// Takes the message-control word as the guest wrote it to config space.
    pub fn set_control(&mut self, control: u16) {
        let writable = MSG_CTL_ENABLE | MSG_CTL_FUNCTION_MASK;
        self.control = (self.control & !writable) | (control & writable);
    }

    pub fn enabled(&self) -> bool {
        self.control & MSG_CTL_ENABLE != 0
    }

    pub fn function_masked(&self) -> bool {
        self.control & MSG_CTL_FUNCTION_MASK != 0
    }

    pub fn entry(&self, vector: u16) -> Option<MsixEntry> {
        self.entries.get(usize::from(vector)).copied()
    }

    /// Whether vector `vector` may fire now (enabled, and neither the
    /// function nor the vector is masked); marks nothing.
    pub fn unmasked(&self, vector: u16) -> bool {
        self.enabled()
            && !self.function_masked()
            && self
                .entries
                .get(usize::from(vector))
                .is_some_and(|e| !e.masked())
    }

    /// Whether vector `vector` may fire now; if not, marks it pending.
    pub fn deliverable(&mut self, vector: u16) -> bool {
        let Some(e) = self.entries.get(usize::from(vector)) else {
            return false;
        };
        if self.enabled() && !self.function_masked() && !e.masked() {
            return true;
        }
        let v = usize::from(vector);
        if let Some(word) = self.pending.get_mut(v / 64) {
            *word |= 1 << (v % 64);
        }
        false
    }

    /// Clears and returns vector `vector`'s pending bit (once it is unmasked
    /// the VMM fires it).
    pub fn take_pending(&mut self, vector: u16) -> bool {
        let v = usize::from(vector);
        match self.pending.get_mut(v / 64) {
            Some(word) if *word & (1 << (v % 64)) != 0 => {
                *word &= !(1 << (v % 64));
                true
            }
            _ => false,
        }
    }

    fn aligned(offset: u64, len: usize) -> bool {
        matches!(len, 4 | 8) && offset.is_multiple_of(len as u64)
    }

    /// Guest read of the table at `offset`.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if !Self::aligned(offset, data.len()) {
            return;
        }
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            let at = offset + i as u64 * 4;
            let Some(e) = usize::try_from(at / ENTRY_SIZE)
                .ok()
                .and_then(|n| self.entries.get(n))
            else {
                return;
            };
            let v = match at % ENTRY_SIZE {
                0 => e.addr_lo,
                4 => e.addr_hi,
                8 => e.data,
                _ => e.vector_ctl,
            };
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Guest write of the table at `offset`.
    pub fn write_table(&mut self, offset: u64, data: &[u8]) -> MsixChange {
        if !Self::aligned(offset, data.len()) {
            return MsixChange::None;
        }
        let mut change = MsixChange::None;
        for (i, chunk) in data.chunks(4).enumerate() {
            let at = offset + i as u64 * 4;
            let Some(n) = usize::try_from(at / ENTRY_SIZE)
                .ok()
                .filter(|n| *n < self.entries.len())
            else {
                return change;
            };
            let mut b = [0u8; 4];
            b.copy_from_slice(chunk);
            let v = u32::from_le_bytes(b);
            let e = &mut self.entries[n];
            match at % ENTRY_SIZE {
                0 => e.addr_lo = v & !0x3,
                4 => e.addr_hi = v,
                8 => e.data = v,
                _ => e.vector_ctl = v & VECTOR_CTL_MASK,
            }
            change = MsixChange::Vector(n as u16);
        }
        change
    }

    /// Guest read of the PBA at `offset` (writes to the PBA are ignored).
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if !Self::aligned(offset, data.len()) {
            return;
        }
        let Some(word) = usize::try_from(offset / 8)
            .ok()
            .and_then(|n| self.pending.get(n))
        else {
            return;
        };
        let bytes = word.to_le_bytes();
        let start = (offset % 8) as usize;
        for (d, s) in data.iter_mut().zip(bytes[start..].iter()) {
            *d = *s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_masked_and_disabled() {
        let mut m = Msix::new(3);
        assert_eq!(m.vectors(), 3);
        assert!(!m.enabled());
        assert!(m.entry(0).unwrap().masked());
        assert!(!m.deliverable(0));
        assert!(m.take_pending(0));
        assert!(!m.take_pending(0));
    }

    #[test]
    fn guest_programs_a_vector() {
        let mut m = Msix::new(2);
        assert_eq!(
            m.write_table(16, &0xfee0_1000u32.to_le_bytes()),
            MsixChange::Vector(1)
        );
        m.write_table(24, &0x4041u32.to_le_bytes());
        m.write_table(28, &0u32.to_le_bytes());
        m.set_control(0xffff);
        assert!(m.enabled() && m.function_masked());
        assert_eq!(m.vectors(), 2, "table size is read-only");
        m.set_control(MSG_CTL_ENABLE);
        let e = m.entry(1).unwrap();
        assert_eq!(
            (e.address(), e.data, e.masked()),
            (0xfee0_1000, 0x4041, false)
        );
        assert!(m.deliverable(1));
        let mut b = [0u8; 8];
        m.read_table(16, &mut b);
        assert_eq!(u64::from_le_bytes(b), 0xfee0_1000);
    }

    #[test]
    fn pending_bits_show_in_the_pba() {
        let mut m = Msix::new(70);
        assert_eq!(m.pba_len(), 16);
        assert!(!m.deliverable(65));
        let mut b = [0u8; 8];
        m.read_pba(8, &mut b);
        assert_eq!(u64::from_le_bytes(b), 1 << 1);
    }

    #[test]
    fn capability_layout() {
        let m = Msix::new(4);
        let (body, mask) = m.capability(1, 0x2000, 0x3000);
        assert_eq!(body[0], CAP_ID);
        assert_eq!(u16::from_le_bytes([body[2], body[3]]), 3);
        assert_eq!(u32::from_le_bytes(body[4..8].try_into().unwrap()), 0x2001);
        assert_eq!(u32::from_le_bytes(body[8..12].try_into().unwrap()), 0x3001);
        assert_eq!(mask[3], 0xc0);
    }

    #[test]
    fn hostile_accesses_are_ignored() {
        let mut m = Msix::new(1);
        for off in [0u64, 1, 2, 15, 16, 17, u64::MAX - 3, u64::MAX] {
            for len in [0usize, 1, 2, 3, 4, 5, 8, 16] {
                let mut buf = vec![0xaa; len];
                m.read_table(off, &mut buf);
                m.write_table(off, &buf);
                m.read_pba(off, &mut buf);
            }
        }
        assert!(!m.deliverable(9));
        assert!(!m.take_pending(2047));
        assert_eq!(Msix::new(0).vectors(), 1);
        assert_eq!(Msix::new(u16::MAX).vectors(), 2048);
    }
}

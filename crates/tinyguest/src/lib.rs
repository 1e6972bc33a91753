//! A tiny guest: prints a message on COM1, then powers off.
//!
//! The code is position-dependent machine code loaded at 1 MiB. Its
//! instructions encode the same in 32-bit protected mode and 64-bit long mode,
//! so it runs from a PVH entry (32-bit) and from a 64-bit entry alike:
//!
//! ```text
//!     mov  dx, 0x3f8          ; COM1
//!     mov  esi, message
//! next:
//!     lodsb
//!     test al, al
//!     jz   done
//!     out  dx, al
//!     jmp  next
//! done:
//!     mov  dx, 0x600          ; VT System ACPI sleep control: S5 | SLP_EN
//!     mov  al, 0x34
//!     out  dx, al
//!     mov  dx, 0xf4           ; QEMU isa-debug-exit, for peers without our port
//!     xor  al, al
//!     out  dx, al
//! halt:
//!     hlt
//!     jmp  halt
//! ```

/// Guest-physical load (and entry) address.
pub const LOAD_ADDR: u32 = 0x10_0000;
/// What the guest prints unless told otherwise.
pub const DEFAULT_MESSAGE: &str = "VT tiny guest: hello\n";

const CODE_FILE_OFFSET: usize = 0x1000;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// What the guest does after printing its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// ACPI S5 power-off (then QEMU's isa-debug-exit).
    PowerOff,
    /// i8042 CPU reset (0xFE to port 0x64).
    Reboot,
    /// Loads an empty IDT and executes `ud2`: a triple fault.
    TripleFault,
    /// Spins forever.
    Spin,
    /// Halts forever with interrupts off: stays up without using the host
    /// CPU (the in-kernel irqchip keeps `hlt` in KVM).
    Halt,
    /// Prints its message again and again, forever (a guest whose console
    /// never stops; it uses a host CPU: stop it when the test is done).
    Repeat,
    /// Spins through `n` rounds of a `pause` loop, then powers off as
    /// [`Ending::PowerOff`]: a guest that powers itself off a while after
    /// it booted. On PVM each round exits to the host: about 1.5 s per
    /// 10^6 rounds (hardware KVM is faster).
    PowerOffAfter(u32),
}

/// The guest's machine code followed by its NUL-terminated message.
pub fn code(message: &str) -> Vec<u8> {
    code_with(message, Ending::PowerOff)
}

/// The guest's machine code with a chosen ending.
pub fn code_with(message: &str, ending: Ending) -> Vec<u8> {
    let mut c = Vec::new();
    c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    let mov_esi_at = c.len();
    c.extend_from_slice(&[0xbe, 0, 0, 0, 0]); // mov esi, imm32 (patched below)
    c.extend_from_slice(&[
        0xac, // next: lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x03, // jz done (+3)
        0xee, // out dx, al
        0xeb, 0xf8, // jmp next (-8)
    ]);
    let mut idtr_patch = None;
    match ending {
        Ending::PowerOff => {
            c.extend_from_slice(&[0x66, 0xba, 0x00, 0x06, 0xb0, 0x34, 0xee]); // ACPI S5
            c.extend_from_slice(&[0x66, 0xba, 0xf4, 0x00, 0x30, 0xc0, 0xee]); // isa-debug-exit
        }
        Ending::Reboot => c.extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64]), // mov al, 0xfe; out 0x64, al
        Ending::TripleFault => {
            idtr_patch = Some(c.len() + 1);
            c.extend_from_slice(&[0xbe, 0, 0, 0, 0]); // mov esi, idtr
            c.extend_from_slice(&[0x0f, 0x01, 0x1e]); // lidt [esi]
            c.extend_from_slice(&[0x0f, 0x0b]); // ud2
        }
        Ending::PowerOffAfter(n) => {
            c.push(0xb9); // mov ecx, imm32
            c.extend_from_slice(&n.max(1).to_le_bytes());
            // wait: pause; dec ecx; jnz wait (valid in 32- and 64-bit mode)
            c.extend_from_slice(&[0xf3, 0x90, 0xff, 0xc9, 0x75, 0xfa]);
            c.extend_from_slice(&[0x66, 0xba, 0x00, 0x06, 0xb0, 0x34, 0xee]); // ACPI S5
        }
        Ending::Spin => {}
        Ending::Halt => c.push(0xfa), // cli
        Ending::Repeat => {
            // jmp back to `mov esi, message`
            let back = (mov_esi_at as isize - (c.len() as isize + 2)) as i8;
            c.extend_from_slice(&[0xeb, back as u8]);
        }
    }
    c.extend_from_slice(&[0xf4, 0xeb, 0xfd]); // halt: hlt; jmp halt
    if ending == Ending::Spin {
        // Spin without halting: jmp $
        let n = c.len();
        c[n - 3..].copy_from_slice(&[0x90, 0xeb, 0xfe]);
    }
    if let Some(at) = idtr_patch {
        let idtr = LOAD_ADDR + c.len() as u32;
        c[at..at + 4].copy_from_slice(&idtr.to_le_bytes());
        c.extend_from_slice(&[0u8; 10]); // limit 0, base 0
    }
    let msg_addr = LOAD_ADDR + c.len() as u32;
    c[mov_esi_at + 1..mov_esi_at + 5].copy_from_slice(&msg_addr.to_le_bytes());
    c.extend_from_slice(message.as_bytes());
    c.push(0);
    c
}

/// An ELF64 image of the guest; with `pvh`, it carries the Xen PVH entry note.
pub fn elf(message: &str, pvh: bool) -> Vec<u8> {
    elf_with(message, pvh, Ending::PowerOff)
}

/// An ELF64 image of the guest with a chosen ending.
pub fn elf_with(message: &str, pvh: bool, ending: Ending) -> Vec<u8> {
    let code = code_with(message, ending);
    let phnum: u16 = if pvh { 2 } else { 1 };
    let mut f = vec![0u8; CODE_FILE_OFFSET];
    // ELF header.
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little endian
    f[6] = 1; // EV_CURRENT
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, 62); // EM_X86_64
    put32(&mut f, 20, 1);
    put64(&mut f, 24, u64::from(LOAD_ADDR)); // e_entry
    put64(&mut f, 32, 64); // e_phoff
    put16(&mut f, 52, 64); // e_ehsize
    put16(&mut f, 54, 56); // e_phentsize
    put16(&mut f, 56, phnum);
    // PT_LOAD.
    let ph = 64;
    put32(&mut f, ph, 1);
    put32(&mut f, ph + 4, 5); // R + X
    put64(&mut f, ph + 8, CODE_FILE_OFFSET as u64);
    put64(&mut f, ph + 16, u64::from(LOAD_ADDR));
    put64(&mut f, ph + 24, u64::from(LOAD_ADDR));
    put64(&mut f, ph + 32, code.len() as u64);
    put64(&mut f, ph + 40, code.len() as u64);
    put64(&mut f, ph + 48, 0x1000);
    if pvh {
        let note_off = 64 + 2 * 56;
        let ph = 64 + 56;
        put32(&mut f, ph, 4); // PT_NOTE
        put32(&mut f, ph + 4, 4);
        put64(&mut f, ph + 8, note_off as u64);
        put64(&mut f, ph + 32, 20);
        put64(&mut f, ph + 40, 20);
        put64(&mut f, ph + 48, 4);
        put32(&mut f, note_off, 4); // namesz
        put32(&mut f, note_off + 4, 4); // descsz
        put32(&mut f, note_off + 8, XEN_ELFNOTE_PHYS32_ENTRY);
        f[note_off + 12..note_off + 16].copy_from_slice(b"Xen\0");
        put32(&mut f, note_off + 16, LOAD_ADDR);
    }
    f.extend_from_slice(&code);
    f
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(f: &mut [u8], at: usize, v: u32) {
    f[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(f: &mut [u8], at: usize, v: u64) {
    f[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_addressed_correctly() {
        for ending in [
            Ending::PowerOff,
            Ending::Reboot,
            Ending::TripleFault,
            Ending::Spin,
            Ending::Repeat,
        ] {
            let c = code_with("hi", ending);
            let addr = u32::from_le_bytes(c[5..9].try_into().unwrap());
            let off = (addr - LOAD_ADDR) as usize;
            assert_eq!(&c[off..], b"hi\0");
        }
    }

    #[test]
    fn elf_header_and_segments() {
        let e = elf("x", true);
        assert_eq!(&e[0..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([e[56], e[57]]), 2);
        assert_eq!(
            &e[CODE_FILE_OFFSET..CODE_FILE_OFFSET + 4],
            &[0x66, 0xba, 0xf8, 0x03]
        );
        assert_eq!(u16::from_le_bytes([elf("x", false)[56], 0]), 1);
    }
}

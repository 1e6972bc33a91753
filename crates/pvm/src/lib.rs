//! `pvm`: is this host's `/dev/kvm` PVM, and is a kernel image Linux?
//!
//! PVM (the `kvm_pvm` module) is KVM done in software, without VT-x or
//! AMD-V: small guests run, a stock Linux kernel does not (it needs a
//! PVM-enabled guest kernel). `vt-vmm` and `vtd` warn when both hold.
//!
//! How PVM is told apart, robustly:
//! - hardware KVM cannot exist without the CPU's `vmx` (Intel) or `svm`
//!   (AMD) flag in `/proc/cpuinfo`; a `/dev/kvm` on a CPU without both is
//!   software;
//! - otherwise it is PVM only when `kvm_pvm` is loaded and neither
//!   `kvm_intel` nor `kvm_amd` is (`/sys/module/NAME`).

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// What decides the kind of `/dev/kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// `/sys/module/kvm_pvm` exists.
    pub pvm_module: bool,
    /// `/sys/module/kvm_intel` or `/sys/module/kvm_amd` exists.
    pub hardware_module: bool,
    /// `/proc/cpuinfo` has the `vmx` or `svm` flag (`None`: unreadable).
    pub cpu_virt_flag: Option<bool>,
}

impl Facts {
    /// This host's.
    pub fn read() -> Facts {
        let module = |m: &str| Path::new("/sys/module").join(m).exists();
        let cpu_virt_flag = std::fs::read_to_string("/proc/cpuinfo").ok().map(|c| {
            c.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        });
        Facts {
            pvm_module: module("kvm_pvm"),
            hardware_module: module("kvm_intel") || module("kvm_amd"),
            cpu_virt_flag,
        }
    }

    /// Whether a `/dev/kvm` with these facts is PVM.
    pub fn is_pvm(&self) -> bool {
        if self.cpu_virt_flag == Some(false) {
            return true;
        }
        self.pvm_module && !self.hardware_module
    }
}

/// Whether this host's `/dev/kvm` is PVM.
pub fn host_is_pvm() -> bool {
    Facts::read().is_pvm()
}

/// The warning both `vt-vmm` and `vtd` give, one line.
pub const WARNING: &str = "this host's /dev/kvm is PVM (software virtualization, module kvm_pvm, no VT-x/AMD-V): a stock Linux kernel does not boot on it (it needs a PVM guest kernel); use a host with hardware virtualization, or `vt lab run`";

/// The longest stretch of an ELF file's notes read.
const MAX_NOTES: u64 = 1 << 20;

/// Whether `image` is a Linux kernel: a bzImage (`HdrS` at 0x202) or an
/// ELF vmlinux with a note named `Linux` (every vmlinux has them). Reads
/// at most a few headers and 1 MiB of notes; a short or hostile file is
/// simply not Linux.
pub fn is_linux(image: &mut (impl Read + Seek)) -> io::Result<bool> {
    let mut head = [0u8; 0x240];
    let n = read_at(image, 0, &mut head)?;
    let head = &head[..n];
    if head.get(0x202..0x206) == Some(b"HdrS") {
        return Ok(true);
    }
    if head.get(..4) != Some(b"\x7fELF") || head.get(4) != Some(&2) || head.get(5) != Some(&1) {
        return Ok(false);
    }
    let u16_at = |o: usize| head.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |b: &[u8], o: usize| {
        b.get(o..o + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (u64_at(head, 0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Ok(false);
    };
    if phentsize < 56 {
        return Ok(false);
    }
    for i in 0..u64::from(phnum.min(64)) {
        let mut ph = [0u8; 56];
        let off = phoff.saturating_add(i * u64::from(phentsize));
        if read_at(image, off, &mut ph)? < 56 {
            return Ok(false);
        }
        // PT_NOTE.
        if ph[..4] != 4u32.to_le_bytes() {
            continue;
        }
        let (Some(p_offset), Some(p_filesz)) = (u64_at(&ph, 8), u64_at(&ph, 32)) else {
            continue;
        };
        let mut notes = vec![0u8; p_filesz.min(MAX_NOTES) as usize];
        let n = read_at(image, p_offset, &mut notes)?;
        if notes_name_linux(&notes[..n]) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a note in `notes` (ELF note format, 4-byte aligned) is named
/// `Linux`.
fn notes_name_linux(notes: &[u8]) -> bool {
    let word = |o: usize| {
        notes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let align = |n: usize| n.checked_add(3).map(|v| v & !3);
    let mut at = 0;
    while let (Some(namesz), Some(descsz)) = (word(at), word(at + 4)) {
        let name_start = at + 12;
        let Some(name_end) = name_start.checked_add(namesz) else {
            return false;
        };
        if notes.get(name_start..name_end) == Some(b"Linux\0") {
            return true;
        }
        let next = align(namesz)
            .and_then(|n| Some(name_start + n + align(descsz)?))
            .filter(|n| *n > at);
        match next {
            Some(n) => at = n,
            None => return false,
        }
    }
    false
}

/// Reads up to `buf.len()` bytes at `offset`; fewer at the end of the file.
fn read_at(f: &mut (impl Read + Seek), offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    f.seek(SeekFrom::Start(offset))?;
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// Whether the kernel at `path` is Linux (false when it cannot be read
/// or is not a regular file). Nothing but a regular file is opened: a
/// handle that opens nothing comes first (`O_PATH`, a symlink not
/// followed), its type is checked, then that very inode is opened through
/// `/proc/self/fd` (`O_NOCTTY | O_NONBLOCK`), so a FIFO, a device or a
/// symlink named as the kernel is never opened (no device open routine,
/// no controlling tty, no hang).
pub fn path_is_linux(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(handle) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    else {
        return false;
    };
    if !handle.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
    else {
        return false;
    };
    is_linux(&mut f).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn facts(pvm: bool, hw: bool, flag: Option<bool>) -> Facts {
        Facts {
            pvm_module: pvm,
            hardware_module: hw,
            cpu_virt_flag: flag,
        }
    }

    #[test]
    fn kinds() {
        // This host's kind: a CPU without vmx/svm (PVM).
        assert!(facts(true, false, Some(false)).is_pvm());
        assert!(facts(false, false, Some(false)).is_pvm());
        assert!(facts(true, false, None).is_pvm());
        // Hardware KVM, with or without kvm_pvm also loaded.
        assert!(!facts(false, true, Some(true)).is_pvm());
        assert!(!facts(true, true, Some(true)).is_pvm());
        assert!(!facts(false, false, None).is_pvm());
    }

    /// A minimal ELF64 with one PT_NOTE holding `notes`.
    fn elf_with_notes(notes: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x40 + 56];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        f[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let ph = 0x40;
        f[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes());
        let len = f.len() as u64;
        f[ph + 8..ph + 16].copy_from_slice(&len.to_le_bytes());
        f[ph + 32..ph + 40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        f.extend_from_slice(notes);
        f
    }

    fn note(name: &[u8], desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&1u32.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend_from_slice(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    #[test]
    fn linux_images_are_recognised() {
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert!(is_linux(&mut Cursor::new(bz)).unwrap());
        let mut notes = note(b"Xen\0", &[1, 2, 3, 4]);
        notes.extend(note(b"Linux\0", b"6.1"));
        assert!(is_linux(&mut Cursor::new(elf_with_notes(&notes))).unwrap());
        // A PVH ELF with only a Xen note (the tiny guest's kind) is not.
        let xen = elf_with_notes(&note(b"Xen\0", &[0; 4]));
        assert!(!is_linux(&mut Cursor::new(xen)).unwrap());
    }

    #[test]
    fn hostile_images_are_not_linux_and_do_not_panic() {
        for bad in [
            Vec::new(),
            b"\x7fELF".to_vec(),
            elf_with_notes(&[0xff; 12]),
            elf_with_notes(&[0xff; 40]),
            {
                let mut e = elf_with_notes(&note(b"Linux\0", b""));
                e[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
                e
            },
        ] {
            assert!(!is_linux(&mut Cursor::new(bad)).unwrap());
        }
        let tiny = tinyguest_like();
        assert!(!is_linux(&mut Cursor::new(tiny)).unwrap());
    }

    /// Only a regular file is opened: a symlink (even to a Linux image),
    /// a FIFO or a device is refused from its `O_PATH` handle.
    #[test]
    fn path_is_linux_opens_only_regular_files() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::env::temp_dir().join(format!("pvm-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let image = dir.join("bzImage");
        std::fs::write(&image, bz).unwrap();
        assert!(path_is_linux(&image));
        let link = dir.join("link");
        std::os::unix::fs::symlink(&image, &link).unwrap();
        assert!(!path_is_linux(&link), "a symlink is not followed");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that lives across the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let fifo_link = dir.join("fifo-link");
        std::os::unix::fs::symlink(&fifo, &fifo_link).unwrap();
        // Refused from the O_PATH handle: never opened (inotify sees no
        // IN_OPEN; it does see the test's own open, so it would).
        let opens = || {
            // SAFETY: plain syscalls on descriptors this closure owns; the
            // event buffer outlives the read.
            unsafe {
                let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
                assert!(fd >= 0);
                assert!(libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_OPEN) >= 0);
                move || {
                    let mut buf = [0u8; 256];
                    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                    libc::close(fd);
                    n > 0
                }
            }
        };
        let seen = opens();
        assert!(!path_is_linux(&fifo));
        assert!(!path_is_linux(&fifo_link));
        assert!(!seen(), "the FIFO was opened");
        let seen = opens();
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        assert!(seen(), "inotify does not see opens here");
        drop(reader);
        assert!(!path_is_linux(Path::new("/dev/null")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tinyguest_like() -> Vec<u8> {
        elf_with_notes(&note(b"Xen\0", &0x100000u32.to_le_bytes()))
    }
}

/// The lab's real guest kernels (`target/guest`, fetched by `vt image` /
/// the lab tests), when this checkout has them.
#[cfg(test)]
mod real_kernels {
    #[test]
    fn the_labs_vmlinux_and_vmlinuz_are_linux() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guest");
        for name in ["vmlinux", "vmlinuz"] {
            let p = dir.join(name);
            if p.is_file() {
                assert!(super::path_is_linux(&p), "{}", p.display());
            } else {
                eprintln!("skipped: no {}", p.display());
            }
        }
    }
}

//! Loading a kernel, initramfs and command line, and handing them over with
//! the Linux 64-bit boot protocol (zero page) or the PVH boot protocol.

use std::fs::File;
use std::io::{Seek, SeekFrom};

use kvm_bindings::{kvm_regs, kvm_sregs};
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::gdt;
use crate::layout::{
    self, BOOT_STACK_TOP, CMDLINE_MAX, CMDLINE_START, GDT_START, HIMEM_START, PVH_INFO_START,
    PVH_MEMMAP_START, PVH_MODLIST_START, RESET_VECTOR, ZERO_PAGE_START,
};
use crate::paging;

const HDRS_MAGIC: u32 = 0x5372_6448;
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const XLF_KERNEL_64: u16 = 1;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const PAGE_SIZE: u64 = 4096;

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Errors while loading what the guest boots.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a bootable kernel (neither an ELF vmlinux nor a bzImage)")]
    NotAKernel,
    #[error("cannot load the ELF kernel")]
    Elf(#[source] linux_loader::loader::Error),
    #[error("cannot load the bzImage")]
    BzImage(#[source] linux_loader::loader::Error),
    #[error("the bzImage does not support the 64-bit boot protocol (need Linux 3.8 or later)")]
    No64BitEntry,
    #[error("kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("initramfs of {size} bytes does not fit in guest memory above the kernel")]
    InitrdTooLarge { size: u64 },
    #[error("cannot read the initramfs")]
    InitrdRead(#[source] std::io::Error),
    #[error("cannot write boot data to guest memory")]
    Memory(#[source] vm_memory::GuestMemoryError),
    #[error("cannot write the PVH start info")]
    Pvh(#[source] linux_loader::configurator::Error),
}

type Result<T> = std::result::Result<T, Error>;

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode with identity paging; RSI points at the zero page.
    Linux64,
    /// 32-bit protected mode, paging off; RBX points at the PVH start info.
    Pvh,
}

/// A kernel loaded in guest memory.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    pub entry: GuestAddress,
    pub mode: EntryMode,
    /// First byte after the kernel image.
    pub end: u64,
    /// The bzImage setup header, if the kernel is a bzImage.
    pub setup_header: Option<setup_header>,
}

/// What the boot vCPU's registers must hold.
#[derive(Debug, Clone, Copy)]
pub struct BootCpu {
    pub entry: GuestAddress,
    pub mode: EntryMode,
    pub cr3: u64,
}

/// Loads `kernel`, trying ELF first (PVH entry when present), then bzImage.
pub fn load_kernel(mem: &GuestMemoryMmap, kernel: &mut File) -> Result<LoadedKernel> {
    match Elf::load(mem, None, kernel, Some(GuestAddress(HIMEM_START))) {
        Ok(r) => {
            let (entry, mode) = match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => (addr, EntryMode::Pvh),
                _ => (r.kernel_load, EntryMode::Linux64),
            };
            return Ok(LoadedKernel {
                entry,
                mode,
                end: r.kernel_end,
                setup_header: None,
            });
        }
        Err(linux_loader::loader::Error::Elf(
            linux_loader::loader::elf::Error::InvalidElfMagicNumber,
        )) => {}
        Err(e) => return Err(Error::Elf(e)),
    }
    let r = match BzImage::load(mem, None, kernel, Some(GuestAddress(HIMEM_START))) {
        Ok(r) => r,
        Err(linux_loader::loader::Error::Bzimage(
            linux_loader::loader::bzimage::Error::InvalidBzImage,
        )) => return Err(Error::NotAKernel),
        Err(e) => return Err(Error::BzImage(e)),
    };
    let hdr = r.setup_header.ok_or(Error::NotAKernel)?;
    if hdr.version < 0x020c || hdr.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(Error::No64BitEntry);
    }
    Ok(LoadedKernel {
        // The 64-bit entry point is 0x200 past the protected-mode code start.
        entry: r.kernel_load.unchecked_add(0x200),
        mode: EntryMode::Linux64,
        end: r.kernel_end,
        setup_header: Some(hdr),
    })
}

/// The longest command line `kernel` accepts (without the NUL).
pub fn cmdline_limit(kernel: &LoadedKernel) -> usize {
    let max = CMDLINE_MAX - 1;
    match kernel.setup_header {
        Some(h) if h.version >= 0x0206 => (h.cmdline_size as usize).min(max),
        Some(_) => 255,
        None => max,
    }
}

/// Checks the command line against the kernel's limit and writes it.
pub fn write_cmdline(mem: &GuestMemoryMmap, kernel: &LoadedKernel, cmdline: &str) -> Result<()> {
    let max = cmdline_limit(kernel);
    if cmdline.len() > max {
        return Err(Error::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    if cmdline.as_bytes().contains(&0) {
        return Err(Error::CmdlineNul);
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(Error::Memory)
}

/// Where the initramfs went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Initrd {
    pub addr: u64,
    pub size: u64,
}

/// Places the initramfs as high in low memory as the kernel allows.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &LoadedKernel,
    file: &mut File,
) -> Result<Initrd> {
    let size = file.metadata().map_err(Error::InitrdRead)?.len();
    let mut top = layout::low_ram_end(mem_size);
    if let Some(h) = kernel.setup_header {
        top = top.min(u64::from(h.initrd_addr_max) + 1);
    }
    let addr = top
        .checked_sub(size)
        .map(|a| a & !(PAGE_SIZE - 1))
        .filter(|a| *a >= kernel.end.max(HIMEM_START))
        .ok_or(Error::InitrdTooLarge { size })?;
    let len = usize::try_from(size).map_err(|_| Error::InitrdTooLarge { size })?;
    file.seek(SeekFrom::Start(0)).map_err(Error::InitrdRead)?;
    mem.read_exact_volatile_from(GuestAddress(addr), file, len)
        .map_err(Error::Memory)?;
    Ok(Initrd { addr, size })
}

/// Writes the zero page or PVH start info, GDT and page tables.
pub fn write_boot_info(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initrd: Option<Initrd>,
    rsdp: GuestAddress,
) -> Result<BootCpu> {
    for (i, entry) in gdt::TABLE.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_START + i as u64 * 8))
            .map_err(Error::Memory)?;
    }
    let cr3 = paging::write_identity_tables(mem).map_err(Error::Memory)?;
    mem.write_slice(&reset_stub(), GuestAddress(RESET_VECTOR))
        .map_err(Error::Memory)?;
    match kernel.mode {
        EntryMode::Linux64 => write_zero_page(mem, mem_size, kernel, cmdline_len, initrd)?,
        EntryMode::Pvh => write_pvh_info(mem, mem_size, initrd, rsdp)?,
    }
    Ok(BootCpu {
        entry: kernel.entry,
        mode: kernel.mode,
        cr3,
    })
}

/// Real-mode code for the reset vector. There is no BIOS: a guest that
/// jumps there (Linux's "BIOS" reboot method, which it picks on
/// hardware-reduced ACPI platforms, or a CPU put through INIT) writes the
/// ACPI reset register, so the VMM sees a reboot instead of a CPU running
/// through zeroed memory forever.
pub fn reset_stub() -> Vec<u8> {
    let [lo, hi] = crate::acpi::RESET_PORT.to_le_bytes();
    vec![
        0xb0,
        crate::acpi::RESET_VALUE, // mov al, RESET_VALUE
        0xba,
        lo,
        hi,   // mov dx, RESET_PORT
        0xee, // out dx, al
        0xf4, // hlt
        0xeb,
        0xfd, // jmp hlt
    ]
}

fn write_zero_page(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initrd: Option<Initrd>,
) -> Result<()> {
    let mut params = boot_params::default();
    if let Some(h) = kernel.setup_header {
        params.hdr = h;
    } else {
        params.hdr.header = HDRS_MAGIC;
        params.hdr.boot_flag = BOOT_FLAG_MAGIC;
        params.hdr.kernel_alignment = 0x0100_0000;
    }
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(i) = initrd {
        params.hdr.ramdisk_image = i.addr as u32;
        params.hdr.ramdisk_size = i.size as u32;
    }
    let map = layout::e820_map(mem_size);
    for (slot, r) in params.e820_table.iter_mut().zip(map.iter()) {
        slot.addr = r.start;
        slot.size = r.size;
        slot.r#type = r.kind;
    }
    params.e820_entries = map.len().min(params.e820_table.len()) as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(Error::Memory)
}

fn write_pvh_info(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    initrd: Option<Initrd>,
    rsdp: GuestAddress,
) -> Result<()> {
    let map: Vec<hvm_memmap_table_entry> = layout::e820_map(mem_size)
        .iter()
        .map(|r| hvm_memmap_table_entry {
            addr: r.start,
            size: r.size,
            type_: r.kind,
            reserved: 0,
        })
        .collect();
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: rsdp.raw_value(),
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    let mut params;
    if let Some(i) = initrd {
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_START;
        params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
        let module = hvm_modlist_entry {
            paddr: i.addr,
            size: i.size,
            ..Default::default()
        };
        params.set_modules(&[module], GuestAddress(PVH_MODLIST_START));
    } else {
        params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
    }
    params.set_sections(&map, GuestAddress(PVH_MEMMAP_START));
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem).map_err(Error::Pvh)
}

/// General registers at the kernel entry.
pub fn boot_regs(cpu: &BootCpu) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: cpu.entry.raw_value(),
        ..Default::default()
    };
    match cpu.mode {
        EntryMode::Linux64 => {
            regs.rsp = BOOT_STACK_TOP;
            regs.rbp = BOOT_STACK_TOP;
            regs.rsi = ZERO_PAGE_START;
        }
        EntryMode::Pvh => regs.rbx = PVH_INFO_START,
    }
    regs
}

/// Segment and control registers at the kernel entry.
pub fn boot_sregs(cpu: &BootCpu, sregs: &mut kvm_sregs) {
    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = (gdt::TABLE.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    let data = gdt::segment(gdt::DATA, gdt::DATA_INDEX);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt::segment(gdt::TSS, gdt::TSS_INDEX);
    match cpu.mode {
        EntryMode::Linux64 => {
            sregs.cs = gdt::segment(gdt::CODE64, gdt::CODE64_INDEX);
            sregs.cr3 = cpu.cr3;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG | X86_CR0_ET;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh => {
            sregs.cs = gdt::segment(gdt::CODE32, gdt::CODE32_INDEX);
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mem(size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap()
    }

    fn temp_file(bytes: &[u8]) -> File {
        let mut f = tempfile_in_target();
        f.write_all(bytes).unwrap();
        f
    }

    fn tempfile_in_target() -> File {
        let dir = std::env::temp_dir();
        let path = dir.join(format!(
            "arch-boot-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        f
    }

    #[test]
    fn garbage_is_not_a_kernel() {
        let m = mem(16 << 20);
        let mut f = temp_file(&[0x55u8; 8192]);
        assert!(matches!(load_kernel(&m, &mut f), Err(Error::NotAKernel)));
    }

    #[test]
    fn empty_file_is_not_a_kernel() {
        let m = mem(16 << 20);
        let mut f = temp_file(&[]);
        assert!(load_kernel(&m, &mut f).is_err());
    }

    fn fake_bzimage(version: u16, xloadflags: u16, cmdline_size: u32) -> Vec<u8> {
        let mut img = vec![0u8; 0x1000 + 4096];
        img[0x1f1] = 7; // setup_sects: 7 + 1 sectors of setup
        img[0x1fe..0x200].copy_from_slice(&BOOT_FLAG_MAGIC.to_le_bytes());
        img[0x202..0x206].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        img[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        img[0x211] = 1; // loadflags: LOADED_HIGH
        img[0x214..0x218].copy_from_slice(&(HIMEM_START as u32).to_le_bytes());
        img[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
        img[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        img[0x238..0x23c].copy_from_slice(&cmdline_size.to_le_bytes());
        img
    }

    #[test]
    fn bzimage_loads_with_64_bit_entry() {
        let m = mem(64 << 20);
        let mut f = temp_file(&fake_bzimage(0x020f, XLF_KERNEL_64, 2047));
        let k = load_kernel(&m, &mut f).unwrap();
        assert_eq!(k.mode, EntryMode::Linux64);
        assert_eq!(k.entry, GuestAddress(HIMEM_START + 0x200));
        assert_eq!(cmdline_limit(&k), 2047);
    }

    #[test]
    fn old_bzimage_without_64_bit_entry_is_refused() {
        let m = mem(64 << 20);
        let mut f = temp_file(&fake_bzimage(0x020a, 0, 255));
        assert!(matches!(load_kernel(&m, &mut f), Err(Error::No64BitEntry)));
    }

    #[test]
    fn cmdline_over_the_kernel_limit_is_refused() {
        let m = mem(64 << 20);
        let mut f = temp_file(&fake_bzimage(0x020f, XLF_KERNEL_64, 100));
        let k = load_kernel(&m, &mut f).unwrap();
        let long = "x".repeat(101);
        assert!(matches!(
            write_cmdline(&m, &k, &long),
            Err(Error::CmdlineTooLong { len: 101, max: 100 })
        ));
        write_cmdline(&m, &k, &"y".repeat(100)).unwrap();
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        let m = mem(64 << 20);
        let mut kf = temp_file(&fake_bzimage(0x020f, XLF_KERNEL_64, 2047));
        let k = load_kernel(&m, &mut kf).unwrap();
        let mut f = temp_file(&[7u8; 10_000]);
        let i = load_initrd(&m, 64 << 20, &k, &mut f).unwrap();
        assert_eq!(i.size, 10_000);
        assert_eq!(i.addr % PAGE_SIZE, 0);
        assert!(i.addr + i.size <= 64 << 20);
        assert!(i.addr + i.size > (64 << 20) - 2 * PAGE_SIZE);
        let b: u8 = m.read_obj(GuestAddress(i.addr + 9_999)).unwrap();
        assert_eq!(b, 7);
    }

    #[test]
    fn initrd_larger_than_memory_is_refused() {
        let m = mem(16 << 20);
        let mut kf = temp_file(&fake_bzimage(0x020f, XLF_KERNEL_64, 2047));
        let k = load_kernel(&m, &mut kf).unwrap();
        let mut f = temp_file(&vec![0u8; 16 << 20]);
        assert!(matches!(
            load_initrd(&m, 16 << 20, &k, &mut f),
            Err(Error::InitrdTooLarge { .. })
        ));
    }

    #[test]
    fn zero_page_carries_cmdline_initrd_and_e820() {
        let m = mem(64 << 20);
        let mut kf = temp_file(&fake_bzimage(0x020f, XLF_KERNEL_64, 2047));
        let k = load_kernel(&m, &mut kf).unwrap();
        let initrd = Initrd {
            addr: 0x300_0000,
            size: 0x1234,
        };
        let cpu = write_boot_info(&m, 64 << 20, &k, 10, Some(initrd), GuestAddress(0)).unwrap();
        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.ramdisk_image }, 0x300_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x1234);
        assert_eq!(p.hdr.type_of_loader, LOADER_TYPE_UNDEFINED);
        assert_eq!(p.e820_entries, 4);
        let regs = boot_regs(&cpu);
        assert_eq!(regs.rsi, ZERO_PAGE_START);
        assert_eq!(regs.rip, HIMEM_START + 0x200);
    }

    #[test]
    fn reset_vector_holds_the_reset_stub() {
        let m = mem(16 << 20);
        let mut kf = temp_file(&fake_bzimage(0x020f, XLF_KERNEL_64, 2047));
        let k = load_kernel(&m, &mut kf).unwrap();
        write_boot_info(&m, 16 << 20, &k, 0, None, GuestAddress(0)).unwrap();
        let mut code = [0u8; 9];
        m.read_slice(&mut code, GuestAddress(RESET_VECTOR)).unwrap();
        assert_eq!(code.to_vec(), reset_stub());
        assert!(RESET_VECTOR + reset_stub().len() as u64 <= 0x10_0000);
        // out dx, al with dx = the FADT reset port and al = its value.
        assert_eq!(&code[..6], &[0xb0, 1, 0xba, 0x02, 0x06, 0xee]);
    }

    #[test]
    fn pvh_sregs_are_32_bit_without_paging() {
        let cpu = BootCpu {
            entry: GuestAddress(0x100_0000),
            mode: EntryMode::Pvh,
            cr3: 0,
        };
        let mut s = kvm_sregs::default();
        boot_sregs(&cpu, &mut s);
        assert_eq!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!(s.cs.db, 1);
        assert_eq!(s.efer, 0);
        assert_eq!(boot_regs(&cpu).rbx, PVH_INFO_START);
    }
}

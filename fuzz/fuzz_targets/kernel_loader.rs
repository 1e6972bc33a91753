//! Any file given as --kernel / --initrd must load or fail cleanly.
#![no_main]

use std::io::{Seek, SeekFrom, Write};
use std::os::fd::FromRawFd;

use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

fn memfd(data: &[u8]) -> std::fs::File {
    // SAFETY: memfd_create with a valid NUL-terminated name; the fd is owned below.
    let fd = unsafe { libc::memfd_create(c"fuzz".as_ptr(), 0) };
    assert!(fd >= 0);
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(data).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f
}

fuzz_target!(|data: &[u8]| {
    let size: u64 = 32 << 20;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap();
    let mut kernel = memfd(data);
    if let Ok(k) = arch::boot::load_kernel(&mem, &mut kernel) {
        let _ = arch::boot::write_cmdline(&mem, &k, "console=ttyS0");
        let mut initrd = memfd(&data[..data.len().min(4096)]);
        let initrd = arch::boot::load_initrd(&mem, size, &k, &mut initrd).ok();
        let _ = arch::boot::write_boot_info(&mem, size, &k, 13, initrd, GuestAddress(0xe0000));
    }
});

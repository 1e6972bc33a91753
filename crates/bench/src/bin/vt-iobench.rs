//! `vt-iobench DEVICE [SECONDS] [MIB]`: O_DIRECT throughput and QD1 IOPS on
//! a scratch block device or file (it is overwritten), the same program in
//! the lab host and in its guests so the figures compare. Prints
//! `seq_write_mbs= seq_read_mbs= rand_write_iops= rand_read_iops=`.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

const BIG: usize = 1 << 20;
const SMALL: usize = 4096;

/// A 4 KiB-aligned buffer, as O_DIRECT wants.
struct Buf {
    ptr: *mut u8,
    layout: Layout,
}

impl Buf {
    fn new(len: usize) -> Buf {
        let layout = Layout::from_size_align(len, SMALL).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        Buf { ptr, layout }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

fn io(fd: i32, buf: &Buf, len: usize, offset: u64, write: bool) {
    // SAFETY: `buf` holds at least `len` bytes and outlives the call.
    let n = unsafe {
        if write {
            libc::pwrite(fd, buf.ptr.cast(), len, offset as libc::off_t)
        } else {
            libc::pread(fd, buf.ptr.cast(), len, offset as libc::off_t)
        }
    };
    if n != len as isize {
        eprintln!(
            "vt-iobench: {} at {offset}: {}",
            if write { "write" } else { "read" },
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
}

/// Runs `len`-byte operations for `secs`; returns operations per second.
fn run(fd: i32, len: usize, span: u64, secs: f64, write: bool, random: bool) -> f64 {
    let buf = Buf::new(len);
    let blocks = span / len as u64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let (mut ops, mut at) = (0u64, 0u64);
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    while start.elapsed() < limit {
        let block = if random {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % blocks
        } else {
            at = (at + 1) % blocks;
            at
        };
        io(fd, &buf, len, block * len as u64, write);
        ops += 1;
    }
    if write {
        // SAFETY: plain syscall on our fd.
        unsafe { libc::fdatasync(fd) };
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: vt-iobench DEVICE [SECONDS] [MIB]");
        std::process::exit(2);
    };
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let mib: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(256);
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vt-iobench: {path}: {e}");
            std::process::exit(1);
        }
    };
    let fd = file.as_raw_fd();
    let span = mib << 20;
    let mbs = |ops: f64| ops * BIG as f64 / 1e6;
    println!(
        "seq_write_mbs={:.1}",
        mbs(run(fd, BIG, span, secs, true, false))
    );
    println!(
        "seq_read_mbs={:.1}",
        mbs(run(fd, BIG, span, secs, false, false))
    );
    println!(
        "rand_write_iops={:.0}",
        run(fd, SMALL, span, secs, true, true)
    );
    println!(
        "rand_read_iops={:.0}",
        run(fd, SMALL, span, secs, false, true)
    );
}

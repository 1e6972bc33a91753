//! virtio-blk through the fake driver on a temporary raw file.

use std::path::PathBuf;

use vm_memory::{Bytes, GuestAddress};

use super::request::*;
use super::{Block, BlockOptions, RawFile};
use crate::rate_limiter::RateLimiter;
use crate::virtio::testing::*;
use crate::virtio::{status, COMMON_FEATURES};

struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn image(len: u64) -> TempFile {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let p = std::env::temp_dir().join(format!(
        "vt-blk-{}-{}.img",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let data: Vec<u8> = (0..len).map(|i| (i / 512) as u8).collect();
    std::fs::write(&p, data).unwrap();
    TempFile(p)
}

fn driver(f: &TempFile, readonly: bool, serial: Option<&str>, limiter: RateLimiter) -> Driver {
    let disk = RawFile::open(&f.0, readonly).unwrap();
    let dev = Block::new(
        Box::new(disk),
        BlockOptions {
            readonly,
            serial: serial.map(str::to_string),
            limiter,
            stats: None,
        },
    );
    let mut d = Driver::new(Box::new(dev));
    let features = d.device_features();
    assert_eq!(d.init(features, 1) & status::NEEDS_RESET, 0);
    d
}

const HDR: u64 = DATA;
const BUF: u64 = DATA + 0x1000;
const STATUS: u64 = DATA + 0x100;

/// Posts a request: header, one data buffer (writable for IN/GET_ID),
/// status. Returns (status byte, used length).
fn request(d: &mut Driver, kind: u32, sector: u64, len: u32) -> (u8, u32) {
    d.mem.write_obj(kind, GuestAddress(HDR)).unwrap();
    d.mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
    d.mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
    d.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    let data_flags = if kind == T_IN || kind == T_GET_ID {
        F_WRITE
    } else {
        0
    };
    if len > 0 {
        d.desc(0, 0, HDR, 16, F_NEXT, 1);
        d.desc(0, 1, BUF, len, data_flags | F_NEXT, 2);
        d.desc(0, 2, STATUS, 1, F_WRITE, 0);
    } else {
        d.desc(0, 0, HDR, 16, F_NEXT, 2);
        d.desc(0, 2, STATUS, 1, F_WRITE, 0);
    }
    d.post(0, 0);
    let (_, used) = d.used(0).expect("request completed");
    (d.mem.read_obj(GuestAddress(STATUS)).unwrap(), used)
}

#[test]
fn config_reports_capacity_and_features() {
    let f = image(8 * 512);
    let mut d = driver(&f, false, None, RateLimiter::unlimited());
    assert_eq!(d.config(0, 8), 8);
    assert_eq!(d.config(20, 4), 512);
    let feat = d.device_features();
    assert_ne!(feat & (1 << 9), 0, "flush");
    assert_ne!(feat & (1 << 13), 0, "discard");
    assert_eq!(feat & (1 << 5), 0, "not read-only");
    assert_eq!(feat & COMMON_FEATURES, COMMON_FEATURES);
}

#[test]
fn read_write_flush_and_get_id() {
    let f = image(16 * 512);
    let mut d = driver(&f, false, Some("disk-serial-1"), RateLimiter::unlimited());
    assert_eq!(request(&mut d, T_IN, 3, 1024), (S_OK, 1025));
    let mut got = vec![0u8; 1024];
    d.mem.read_slice(&mut got, GuestAddress(BUF)).unwrap();
    assert!(got[..512].iter().all(|b| *b == 3) && got[512..].iter().all(|b| *b == 4));

    d.mem
        .write_slice(&[0xabu8; 512], GuestAddress(BUF))
        .unwrap();
    assert_eq!(request(&mut d, T_OUT, 15, 512), (S_OK, 1));
    assert_eq!(request(&mut d, T_FLUSH, 0, 0), (S_OK, 1));
    let file = std::fs::read(&f.0).unwrap();
    assert!(file[15 * 512..].iter().all(|b| *b == 0xab));
    assert!(file[14 * 512..15 * 512].iter().all(|b| *b == 14));

    assert_eq!(request(&mut d, T_GET_ID, 0, 20), (S_OK, 21));
    let mut id = [0u8; 20];
    d.mem.read_slice(&mut id, GuestAddress(BUF)).unwrap();
    assert_eq!(&id[..13], b"disk-serial-1");
    assert!(id[13..].iter().all(|b| *b == 0));
}

#[test]
fn bad_requests_get_errors_and_the_device_carries_on() {
    let f = image(8 * 512);
    let mut d = driver(&f, false, None, RateLimiter::unlimited());
    // Past the end, straddling the end, sector overflow, partial sector.
    assert_eq!(request(&mut d, T_IN, 8, 512).0, S_IOERR);
    assert_eq!(request(&mut d, T_OUT, 7, 1024).0, S_IOERR);
    assert_eq!(request(&mut d, T_IN, u64::MAX / 256, 512).0, S_IOERR);
    assert_eq!(request(&mut d, T_IN, 0, 100).0, S_IOERR);
    assert_eq!(request(&mut d, 99, 0, 512).0, S_UNSUPP);
    assert_eq!(request(&mut d, T_IN, 0, 512), (S_OK, 513));
    assert_eq!(d.status() & status::NEEDS_RESET, 0);
}

#[test]
fn discard_and_write_zeroes() {
    let f = image(64 * 512);
    let mut d = driver(&f, false, None, RateLimiter::unlimited());
    // One segment: sector 8, 8 sectors, no flags.
    d.mem.write_obj(8u64, GuestAddress(BUF)).unwrap();
    d.mem.write_obj(8u32, GuestAddress(BUF + 8)).unwrap();
    d.mem.write_obj(0u32, GuestAddress(BUF + 12)).unwrap();
    assert_eq!(request(&mut d, T_WRITE_ZEROES, 0, 16).0, S_OK);
    let file = std::fs::read(&f.0).unwrap();
    assert!(file[8 * 512..16 * 512].iter().all(|b| *b == 0));
    assert!(file[16 * 512..17 * 512].iter().all(|b| *b == 16));
    assert_eq!(request(&mut d, T_DISCARD, 0, 16).0, S_OK);
    // Beyond the disk, and two segments where one is allowed.
    d.mem.write_obj(60u64, GuestAddress(BUF)).unwrap();
    assert_eq!(request(&mut d, T_WRITE_ZEROES, 0, 16).0, S_IOERR);
    assert_eq!(request(&mut d, T_DISCARD, 0, 32).0, S_UNSUPP);
    // Flags: unmap is for write-zeroes only; unknown bits are refused.
    d.mem.write_obj(8u64, GuestAddress(BUF)).unwrap();
    d.mem.write_obj(1u32, GuestAddress(BUF + 12)).unwrap();
    assert_eq!(request(&mut d, T_WRITE_ZEROES, 0, 16).0, S_OK);
    assert_eq!(request(&mut d, T_DISCARD, 0, 16).0, S_UNSUPP);
    d.mem.write_obj(2u32, GuestAddress(BUF + 12)).unwrap();
    assert_eq!(request(&mut d, T_WRITE_ZEROES, 0, 16).0, S_UNSUPP);
    assert_eq!(std::fs::metadata(&f.0).unwrap().len(), 64 * 512);
}

#[test]
fn read_only_disks_refuse_writes() {
    let f = image(8 * 512);
    let mut d = driver(&f, true, None, RateLimiter::unlimited());
    assert_ne!(d.device_features() & (1 << 5), 0);
    assert_eq!(d.device_features() & (1 << 13), 0);
    assert_eq!(request(&mut d, T_OUT, 0, 512).0, S_IOERR);
    assert_eq!(request(&mut d, T_WRITE_ZEROES, 0, 16).0, S_IOERR);
    assert_eq!(request(&mut d, T_IN, 0, 512).0, S_OK);
    assert!(std::fs::read(&f.0).unwrap()[..512].iter().all(|b| *b == 0));
}

#[test]
fn chains_without_header_or_status_fail_the_device() {
    let f = image(8 * 512);
    let mut d = driver(&f, false, None, RateLimiter::unlimited());
    // Header only 8 bytes, no status.
    d.desc(0, 0, HDR, 8, 0, 0);
    d.post(0, 0);
    assert!(d.wait_needs_reset());
    let mut d = driver(&f, false, None, RateLimiter::unlimited());
    // Writable then readable.
    d.desc(0, 0, STATUS, 1, F_WRITE | F_NEXT, 1);
    d.desc(0, 1, HDR, 16, 0, 0);
    d.post(0, 0);
    assert!(d.wait_needs_reset());
}

#[test]
fn reset_and_reactivate_keeps_the_disk() {
    let f = image(8 * 512);
    let mut d = driver(&f, false, None, RateLimiter::unlimited());
    assert_eq!(request(&mut d, T_IN, 1, 512).0, S_OK);
    let features = d.device_features();
    // Reset and set up again: the disk comes back from the stopped worker.
    assert_eq!(d.init(features, 1) & status::NEEDS_RESET, 0);
    assert_eq!(request(&mut d, T_IN, 2, 512), (S_OK, 513));
}

#[test]
fn ops_limit_paces_requests() {
    let f = image(8 * 512);
    let mut d = driver(&f, false, None, RateLimiter::new(None, Some(100)).unwrap());
    let start = std::time::Instant::now();
    for _ in 0..40 {
        assert_eq!(request(&mut d, T_IN, 0, 512).0, S_OK);
    }
    // 10 admitted at once (the burst), 30 more at 100/s.
    let secs = start.elapsed().as_secs_f64();
    assert!((0.25..0.6).contains(&secs), "{secs:.3}s");
}

/// `cache=none`: aligned transfers go around the page cache, unaligned
/// ones through it, and both land in (and come from) the same file.
#[test]
fn cache_none_serves_aligned_and_unaligned_buffers() {
    use super::DiskBackend;
    use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};
    fn one_slice(mem: &GuestMemoryMmap, addr: u64, len: usize) -> vm_memory::VolatileSlice<'_> {
        mem.get_slices(GuestAddress(addr), len)
            .next()
            .unwrap()
            .unwrap()
    }
    let f = image(64 << 10);
    let mut disk = match RawFile::open_with(&f.0, false, true) {
        Ok(d) => d,
        Err(e) => {
            // tmpfs before Linux 6.6 refuses O_DIRECT: the error says so.
            assert!(e.to_string().contains("O_DIRECT"), "{e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    mem.write_slice(&pattern, GuestAddress(0x1000)).unwrap();
    let page = one_slice(&mem, 0x1000, 4096);
    disk.write_at(8192, &[page]).unwrap();
    // An odd guest address cannot go around the cache: it still works.
    let odd = one_slice(&mem, 0x3001, 512);
    disk.read_at(8192, &[odd]).unwrap();
    let mut got = vec![0u8; 512];
    mem.read_slice(&mut got, GuestAddress(0x3001)).unwrap();
    assert_eq!(got, pattern[..512]);
    mem.write_slice(&[0xee; 512], GuestAddress(0x3001)).unwrap();
    let odd = one_slice(&mem, 0x3001, 512);
    disk.write_at(512, &[odd]).unwrap();
    // And an aligned read sees the unaligned write.
    let page = one_slice(&mem, 0x5000, 4096);
    disk.read_at(0, &[page]).unwrap();
    let mut head = vec![0u8; 1024];
    mem.read_slice(&mut head, GuestAddress(0x5000)).unwrap();
    assert!(head[..512].iter().all(|b| *b == 0), "sector 0 changed");
    assert!(
        head[512..].iter().all(|b| *b == 0xee),
        "unaligned write lost"
    );
    disk.flush().unwrap();
    let file = std::fs::read(&f.0).unwrap();
    assert_eq!(file[8192..8192 + 4096], pattern[..]);
    assert!(file[512..1024].iter().all(|b| *b == 0xee));
}

//! virtio-net through the fake driver, on a socket pair standing in for the
//! tap: frames the "host" sends land in the guest's receive buffers (read
//! straight into them, or copied when the guest is short of buffers), and
//! frames the guest posts come out whole.

use std::os::fd::{AsRawFd, OwnedFd};

use vm_memory::{Bytes, GuestAddress};

use super::{Net, Tap, F_CSUM, F_MRG_RXBUF, HDR_LEN, RX, TX};
use crate::virtio::testing::*;
use crate::virtio::{status, COMMON_FEATURES};

const RXQ: u16 = RX as u16;
const TXQ: u16 = TX as u16;

/// A NIC on one end of a socket pair; the other end is the host side.
fn nic(features: u64) -> (Driver, OwnedFd) {
    let (tap, host) = Tap::socket_pair("test0").unwrap();
    let net = Net::with_tap(tap, [0x52, 0x54, 0, 1, 2, 3], Default::default());
    let mut d = Driver::new(Box::new(net));
    assert_eq!(d.init(features, 2) & status::NEEDS_RESET, 0);
    assert_eq!(d.status() & status::DRIVER_OK, status::DRIVER_OK);
    (d, host)
}

/// A frame as the tap hands it over: a zero header, then `len` bytes of
/// a pattern seeded with `seed`.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; HDR_LEN];
    f.extend((0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
    f
}

fn host_send(host: &OwnedFd, f: &[u8]) {
    // SAFETY: writes `f.len()` bytes from `f`, which outlives the call.
    let n = unsafe { libc::write(host.as_raw_fd(), f.as_ptr().cast(), f.len()) };
    assert_eq!(n, f.len() as isize, "{}", std::io::Error::last_os_error());
}

fn host_recv(host: &OwnedFd) -> Option<Vec<u8>> {
    let start = std::time::Instant::now();
    let mut buf = vec![0u8; 70000];
    while start.elapsed() < std::time::Duration::from_secs(5) {
        // SAFETY: reads at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(host.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Some(buf);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    None
}

/// Posts receive buffer `i`: one descriptor of `len` bytes at
/// DATA + i * len.
fn post_rx(d: &mut Driver, i: u16, len: u32) {
    d.desc(RXQ, i, rx_addr(i, len), len, F_WRITE, 0);
    d.post(RXQ, i);
}

fn rx_addr(i: u16, len: u32) -> u64 {
    DATA + u64::from(i) * u64::from(len)
}

/// Reads back a frame spread over used buffers `heads` (each of `len`
/// bytes, `used` bytes filled).
fn gather(d: &Driver, used: &[(u32, u32)], len: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for (head, n) in used {
        let mut part = vec![0u8; *n as usize];
        d.mem
            .read_slice(&mut part, GuestAddress(rx_addr(*head as u16, len)))
            .unwrap();
        out.extend(part);
    }
    out
}

fn num_buffers(f: &[u8]) -> u16 {
    u16::from_le_bytes([f[10], f[11]])
}

#[test]
fn frames_are_read_straight_into_mergeable_buffers() {
    let (mut d, host) = nic(COMMON_FEATURES | F_MRG_RXBUF | F_CSUM);
    // 16 buffers of 8 KiB: room for the largest frame.
    for i in 0..QSIZE {
        post_rx(&mut d, i, 8192);
    }
    let big = frame(20000, 1);
    host_send(&host, &big);
    let used: Vec<_> = (0..3).map(|_| d.used(RXQ).unwrap()).collect();
    assert_eq!(used, vec![(0, 8192), (1, 8192), (2, 20012 - 16384)]);
    let got = gather(&d, &used, 8192);
    assert_eq!(num_buffers(&got), 3);
    assert_eq!(got[HDR_LEN..], big[HDR_LEN..]);
    // The next frame starts in the next buffer; the rest stay the guest's.
    let small = frame(100, 2);
    host_send(&host, &small);
    let used = d.used(RXQ).unwrap();
    assert_eq!(used, (3, 112));
    let got = gather(&d, &[used], 8192);
    assert_eq!(num_buffers(&got), 1);
    assert_eq!(got[HDR_LEN..], small[HDR_LEN..]);
    assert_eq!(d.used_within(RXQ, 50), None);
}

#[test]
fn a_guest_short_of_buffers_gets_frames_copied_and_waits_for_room() {
    let (mut d, host) = nic(COMMON_FEATURES | F_MRG_RXBUF);
    // 2 KiB of room: not enough to read the largest frame in place, nor
    // this one.
    post_rx(&mut d, 0, 1024);
    post_rx(&mut d, 1, 1024);
    let f = frame(3000, 3);
    host_send(&host, &f);
    assert_eq!(d.used_within(RXQ, 100), None);
    // A third buffer makes room: the frame is copied over all three.
    post_rx(&mut d, 2, 1024);
    let used: Vec<_> = (0..3).map(|_| d.used(RXQ).unwrap()).collect();
    assert_eq!(used, vec![(0, 1024), (1, 1024), (2, 3012 - 2048)]);
    let got = gather(&d, &used, 1024);
    assert_eq!(num_buffers(&got), 3);
    assert_eq!(got[HDR_LEN..], f[HDR_LEN..]);
    assert_eq!(d.used_within(RXQ, 50), None);
    post_rx(&mut d, 3, 1024);
    let small = frame(40, 4);
    host_send(&host, &small);
    assert_eq!(d.used(RXQ), Some((3, 52)));
}

#[test]
fn without_mergeable_buffers_a_frame_takes_one_buffer_or_is_dropped() {
    let (mut d, host) = nic(COMMON_FEATURES);
    post_rx(&mut d, 0, 1600);
    post_rx(&mut d, 1, 1600);
    host_send(&host, &frame(4000, 5)); // too big for one buffer: dropped
    let f = frame(1000, 6);
    host_send(&host, &f);
    let used = d.used(RXQ).unwrap();
    assert_eq!(used, (0, 1012));
    assert_eq!(gather(&d, &[used], 1600)[HDR_LEN..], f[HDR_LEN..]);
    assert_eq!(d.used_within(RXQ, 50), None);
}

#[test]
fn transmitted_frames_come_out_whole() {
    let (mut d, host) = nic(COMMON_FEATURES | F_MRG_RXBUF);
    let f = frame(5000, 7);
    // Header and frame in three pieces, as Linux may post them.
    let base = DATA + 0x10000;
    d.mem.write_slice(&f, GuestAddress(base)).unwrap();
    d.desc(TXQ, 0, base, HDR_LEN as u32, F_NEXT, 1);
    d.desc(TXQ, 1, base + HDR_LEN as u64, 2000, F_NEXT, 2);
    d.desc(TXQ, 2, base + HDR_LEN as u64 + 2000, 3000, 0, 0);
    d.post(TXQ, 0);
    assert_eq!(d.used(TXQ), Some((0, 0)));
    assert_eq!(host_recv(&host).as_deref(), Some(&f[..]));
}

#[test]
fn a_receive_buffer_the_device_may_not_write_breaks_the_device() {
    let (mut d, host) = nic(COMMON_FEATURES | F_MRG_RXBUF);
    d.desc(RXQ, 0, DATA, 4096, 0, 0);
    d.post(RXQ, 0);
    let first = frame(100, 8);
    host_send(&host, &first);
    assert!(d.wait_needs_reset());
    // A reset and a fresh start bring it back; the frame that was waiting
    // in the tap is delivered first, then the next one.
    assert_eq!(
        d.init(COMMON_FEATURES | F_MRG_RXBUF, 2) & status::NEEDS_RESET,
        0
    );
    post_rx(&mut d, 0, 4096);
    post_rx(&mut d, 1, 4096);
    let second = frame(100, 9);
    host_send(&host, &second);
    let used = [d.used(RXQ).unwrap(), d.used(RXQ).unwrap()];
    assert_eq!(used, [(0, 112), (1, 112)]);
    assert_eq!(gather(&d, &used[..1], 4096)[HDR_LEN..], first[HDR_LEN..]);
    assert_eq!(gather(&d, &used[1..], 4096)[HDR_LEN..], second[HDR_LEN..]);
}

/// The host side does not read for a while: the stand-in's queue fills
/// and refuses frames (EAGAIN). No frame may be lost or reordered, and
/// every chain must come back once the host reads again.
#[test]
fn a_full_tap_holds_frames_back_and_sends_them_all_later() {
    let (mut d, host) = nic(COMMON_FEATURES | F_MRG_RXBUF);
    let n = QSIZE;
    let sent: Vec<Vec<u8>> = (0..n).map(|i| frame(60_000, i as u8)).collect();
    for (i, f) in sent.iter().enumerate() {
        let base = DATA + i as u64 * 0x10000;
        d.mem.write_slice(f, GuestAddress(base)).unwrap();
        d.desc(TXQ, i as u16, base, f.len() as u32, 0, 0);
        d.post(TXQ, i as u16);
    }
    // Some went out, then the socket filled: not every chain is back.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut back = 0;
    while d.used_within(TXQ, 10).is_some() {
        back += 1;
    }
    assert!(back < usize::from(n), "the stand-in never filled up");
    for (i, f) in sent.iter().enumerate() {
        let got = host_recv(&host).unwrap_or_else(|| panic!("frame {i} lost"));
        assert_eq!(got.len(), f.len(), "frame {i}");
        assert!(got == *f, "frame {i} differs");
    }
    while back < usize::from(n) {
        assert!(d.used(TXQ).is_some(), "chain {back} never came back");
        back += 1;
    }
}

/// CPU ticks (user + system) of this process's threads named `name`.
fn thread_ticks(name: &str) -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
        let fields: Vec<u64> = after
            .split(' ')
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse().ok())
            .collect();
        total += fields.iter().sum::<u64>();
    }
    total
}

#[test]
fn a_tap_that_stops_working_does_not_make_the_worker_spin() {
    let (mut d, host) = nic(COMMON_FEATURES | F_MRG_RXBUF);
    for i in 0..QSIZE {
        post_rx(&mut d, i, 8192);
    }
    host_send(&host, &frame(100, 10));
    assert_eq!(d.used(RXQ), Some((0, 112)));
    // The host side goes away: reads now fail (end of file) for good.
    drop(host);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let before = thread_ticks("virtio-net");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let spent = thread_ticks("virtio-net") - before;
    // A spinning worker would burn ~50 ticks in 500 ms.
    assert!(spent < 10, "worker used {spent} ticks in 500 ms");
    assert_eq!(d.status() & status::NEEDS_RESET, 0);
}

/// A frame over several buffers is published whole: a guest polling the
/// used index (another thread here, as the guest's vCPU is) never sees it
/// stop inside a frame, where the first buffer's `num_buffers` promises
/// buffers the ring does not show yet (spec 5.1.6.4.2).
#[test]
fn a_frame_over_several_buffers_is_published_whole() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (mut d, host) = nic(COMMON_FEATURES | F_MRG_RXBUF);
    for i in 0..QSIZE {
        post_rx(&mut d, i, 8192);
    }
    let used_idx = GuestAddress(ring_base(RXQ) + 0x2000 + 2);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let observer = {
        let (mem, stop) = (d.mem.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let idx: u16 = mem.read_obj(used_idx).unwrap();
                seen.insert(idx);
            }
            seen.insert(mem.read_obj(used_idx).unwrap());
            seen
        })
    };
    // Each frame fills exactly three 8 KiB buffers.
    let f = frame(20000, 5);
    let frames = 1500;
    for _ in 0..frames {
        host_send(&host, &f);
        let used: Vec<_> = (0..3).map(|_| d.used(RXQ).unwrap()).collect();
        assert_eq!(num_buffers(&gather(&d, &used, 8192)), 3);
        for (head, _) in used {
            post_rx(&mut d, head as u16, 8192);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seen = observer.join().unwrap();
    let torn: Vec<u16> = seen.iter().copied().filter(|i| i % 3 != 0).collect();
    assert!(
        torn.is_empty(),
        "the guest saw the used index inside a frame at {} of {} values: {:?}",
        torn.len(),
        seen.len(),
        &torn[..torn.len().min(10)]
    );
    assert!(seen.contains(&(frames * 3)));
}

/// The receive queue interrupts when its used index passes the driver's
/// `used_event` (event index), also when one frame moves it by several.
#[test]
fn receive_interrupts_follow_used_event() {
    use crate::bus::lock;
    let (mut d, host) = nic(COMMON_FEATURES | F_MRG_RXBUF);
    {
        let mut m = lock(&d.pci.vectors.msix);
        m.set_control(1 << 15);
        m.write_table(12, &0u32.to_le_bytes()); // unmask vector 0 (RX)
    }
    let irqfd = d.pci.vectors.irqfd(0).unwrap().try_clone().unwrap();
    let used_event = GuestAddress(ring_base(RXQ) + 0x1000 + 4 + 2 * u64::from(QSIZE));
    let fired = || {
        std::thread::sleep(std::time::Duration::from_millis(30));
        irqfd.read().unwrap_or(0)
    };
    for i in 0..QSIZE {
        post_rx(&mut d, i, 8192);
    }
    let _ = fired();
    d.mem.write_obj(1u16, used_event).unwrap();
    let small = frame(100, 6);
    host_send(&host, &small);
    d.used(RXQ).unwrap();
    assert_eq!(fired(), 0, "used 1 has not passed used_event 1");
    host_send(&host, &small);
    d.used(RXQ).unwrap();
    assert_eq!(fired(), 1, "used 2 passed used_event 1");
    // One frame over three buffers takes the index from 2 to 5, past 3.
    d.mem.write_obj(3u16, used_event).unwrap();
    host_send(&host, &frame(20000, 7));
    for _ in 0..3 {
        d.used(RXQ).unwrap();
    }
    assert_eq!(fired(), 1, "used 5 passed used_event 3 inside one frame");
    host_send(&host, &small);
    d.used(RXQ).unwrap();
    assert_eq!(fired(), 0, "used_event 3 was passed already");
}

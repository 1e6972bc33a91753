//! The balloon under a fake driver, honest and hostile.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::{Balloon, BalloonControl, BalloonOptions, F_DEFLATE_ON_OOM, F_REPORTING, F_STATS_VQ};
use crate::pci::PciFunction;
use crate::virtio::testing::{Driver, DATA, F_WRITE, MEM_SIZE};
use crate::virtio::{status, COMMON_FEATURES};

fn driver(options: BalloonOptions) -> (Driver, Arc<BalloonControl>) {
    let control = Arc::new(BalloonControl::new().unwrap());
    let d = Driver::new(Box::new(Balloon::new(options, control.clone())));
    (d, control)
}

const ALL: BalloonOptions = BalloonOptions {
    deflate_on_oom: true,
    free_page_reporting: true,
    stats: false,
};

/// Bytes at `gpa` that the test filled earlier.
fn page_is(d: &Driver, gpa: u64, byte: u8) -> bool {
    let mut b = vec![0u8; 4096];
    d.mem.read_slice(&mut b, GuestAddress(gpa)).unwrap();
    b.iter().all(|&x| x == byte)
}

/// Posts one buffer of le32 PFNs on queue `q` and waits for it back.
fn post_pfns(d: &mut Driver, q: u16, pfns: &[u32]) {
    let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
    d.mem.write_slice(&bytes, GuestAddress(DATA)).unwrap();
    d.desc(q, 0, DATA, bytes.len() as u32, 0, 0);
    d.post(q, 0);
    assert!(d.used(q).is_some(), "queue {q} buffer not returned");
}

#[test]
fn features_config_and_target() {
    let (mut d, control) = driver(ALL);
    let f = d.device_features();
    assert_eq!(f, COMMON_FEATURES | F_DEFLATE_ON_OOM | F_REPORTING);
    let (mut plain, _) = driver(BalloonOptions::default());
    assert_eq!(plain.device_features(), COMMON_FEATURES);
    assert_eq!(d.init(f, 3) & status::DRIVER_OK, status::DRIVER_OK);
    control.set_target(1234);
    assert_eq!(d.config(0, 4), 1234);
    // The driver says what it holds.
    d.pci.write_bar(
        0,
        crate::virtio::pci::DEVICE_OFFSET + 4,
        &77u32.to_le_bytes(),
    );
    assert_eq!(d.config(4, 4), 77);
    assert_eq!(
        (control.state().target_pages, control.state().actual_pages),
        (1234, 77)
    );
}

#[test]
fn inflate_gives_pages_back_and_deflate_is_accepted() {
    let (mut d, control) = driver(ALL);
    assert_eq!(
        d.init(COMMON_FEATURES | F_REPORTING, 3) & status::DRIVER_OK,
        status::DRIVER_OK
    );
    d.mem
        .write_slice(&vec![0x5a; 0x10000], GuestAddress(0x200000))
        .unwrap();
    // Pages 0x200..0x203 and 0x205: two runs.
    post_pfns(&mut d, 0, &[0x200, 0x201, 0x202, 0x205]);
    for (pfn, freed) in [(0x200, true), (0x202, true), (0x203, false), (0x205, true)] {
        assert_eq!(page_is(&d, pfn << 12, 0), freed, "page {pfn:#x}");
    }
    assert_eq!(control.state().freed_pages, 4);
    post_pfns(&mut d, 1, &[0x200, 0x201]);
    assert_eq!(d.status() & status::NEEDS_RESET, 0);
}

#[test]
fn hostile_pfns_touch_nothing_outside_guest_ram() {
    let (mut d, control) = driver(ALL);
    assert_eq!(
        d.init(COMMON_FEATURES, 2) & status::DRIVER_OK,
        status::DRIVER_OK
    );
    let last = (MEM_SIZE as u32 >> 12) - 1;
    d.mem
        .write_slice(&[0x77; 4096], GuestAddress(u64::from(last) << 12))
        .unwrap();
    // Past the end of RAM, the largest PFN, a run that starts inside and
    // ends outside, the same pages again and again.
    let mut pfns = vec![last + 1, u32::MAX, u32::MAX - 1, 0x4000_0000];
    pfns.extend([last - 1, last, last + 1]);
    for _ in 0..3 {
        post_pfns(&mut d, 0, &pfns);
    }
    let s = control.state();
    // The run last-1..=last+1 crosses the end of RAM: refused whole.
    assert_eq!(s.freed_pages, 0, "{s:?}");
    assert_eq!(s.refused_pages, 3 * 7, "{s:?}");
    assert!(
        page_is(&d, u64::from(last) << 12, 0x77),
        "a refused run is kept"
    );
    // A buffer of many PFNs (more than one chunk) pointing at RAM's first
    // pages, repeated: served, no failure.
    let many: Vec<u32> = (0..3000).map(|i| i % 16).collect();
    post_pfns(&mut d, 0, &many);
    assert_eq!(d.status() & status::NEEDS_RESET, 0);
    // A descriptor outside guest memory breaks the queue, not the VMM.
    d.desc(0, 0, MEM_SIZE as u64 - 8, 64, 0, 0);
    d.post(0, 0);
    assert!(d.wait_needs_reset());
    assert!(d.mem.iter().all(|r| r.len() == MEM_SIZE as u64));
}

#[test]
fn reported_ranges_go_back_and_bad_ones_are_refused() {
    let (mut d, control) = driver(ALL);
    let f = COMMON_FEATURES | F_REPORTING;
    assert_eq!(d.init(f, 3) & status::DRIVER_OK, status::DRIVER_OK);
    d.mem
        .write_slice(&vec![0x11; 0x40000], GuestAddress(0x200000))
        .unwrap();
    // One good 128 KiB range and one unaligned one, in one chain.
    d.desc(2, 0, 0x200000, 0x20000, F_WRITE | 1, 1);
    d.desc(2, 1, 0x220800, 0x1000, F_WRITE, 0);
    d.post(2, 0);
    assert!(d.used(2).is_some());
    assert!(page_is(&d, 0x200000, 0) && page_is(&d, 0x21f000, 0));
    assert!(page_is(&d, 0x221000, 0x11), "the unaligned range is kept");
    let s = control.state();
    assert_eq!((s.freed_pages, s.refused_pages), (32, 1));
}

#[test]
fn statistics_are_kept_and_the_buffer_returned_on_request() {
    let options = BalloonOptions {
        stats: true,
        free_page_reporting: true,
        ..Default::default()
    };
    let (mut d, control) = driver(options);
    let f = COMMON_FEATURES | F_STATS_VQ | F_REPORTING;
    assert_eq!(d.device_features(), f);
    // Statistics on queue 2, reporting after it on queue 3.
    assert_eq!(d.init(f, 4) & status::DRIVER_OK, status::DRIVER_OK);
    let mut buf = Vec::new();
    for (tag, v) in [(5u16, 512u64 << 20), (4, 300 << 20)] {
        buf.extend(tag.to_le_bytes());
        buf.extend(v.to_le_bytes());
    }
    d.mem.write_slice(&buf, GuestAddress(DATA)).unwrap();
    d.desc(2, 0, DATA, buf.len() as u32, 0, 0);
    d.post(2, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while control.state().stats.is_none() {
        assert!(std::time::Instant::now() < deadline, "no statistics");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let s = control.state().stats.unwrap();
    assert_eq!(
        (s.total_memory, s.free_memory),
        (Some(512 << 20), Some(300 << 20))
    );
    // Event index: the device published where it wants the next kick
    // (`avail_event` after the used ring: queue 2's rings at 0x30000),
    // or the driver would never kick for its refilled buffer.
    let avail_event: u16 = d
        .mem
        .read_obj(GuestAddress(0x30000 + 0x2000 + 4 + 8 * 16))
        .unwrap();
    assert_eq!(avail_event, 1);
    // Held until the host asks: then handed back for a refill.
    assert!(d.used_within(2, 100).is_none());
    control.request_stats();
    assert_eq!(d.used(2), Some((0, 0)));
    // Reporting works on its own index.
    d.mem
        .write_slice(&[0x33; 4096], GuestAddress(0x300000))
        .unwrap();
    d.desc(3, 0, 0x300000, 4096, F_WRITE, 0);
    d.post(3, 0);
    assert!(d.used(3).is_some());
    assert!(page_is(&d, 0x300000, 0));
}

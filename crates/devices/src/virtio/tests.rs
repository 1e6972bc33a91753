//! Transport and virtio-rng tests through the fake driver, including a
//! driver that breaks its queue in every way the spec forbids.

use vm_memory::{Address, Bytes, GuestAddress};

use super::rng::Rng;
use super::testing::*;
use super::{status, COMMON_FEATURES, F_VERSION_1};
use crate::pci::PciFunction;

fn rng() -> Driver {
    Driver::new(Box::new(Rng::new()))
}

#[test]
fn pci_identity_and_capabilities() {
    let d = rng();
    let c = d.pci.config();
    assert_eq!(c.read(0), 0x1044_1af4);
    // Capability list: 4 virtio caps then MSI-X.
    let mut at = (c.read(13) & 0xff) as usize;
    let mut kinds = vec![];
    while at != 0 {
        let dw = c.read(at / 4);
        let id = dw & 0xff;
        kinds.push(if id == 9 { (dw >> 24) as u8 } else { id as u8 });
        at = ((dw >> 8) & 0xff) as usize;
    }
    assert_eq!(kinds, vec![1, 3, 4, 2, 0x11]);
}

#[test]
fn features_are_negotiated_and_bad_sets_refused() {
    let mut d = rng();
    assert_eq!(d.device_features(), COMMON_FEATURES);
    // Without VERSION_1 (legacy driver): FEATURES_OK does not stick.
    assert_eq!(d.init(0, 1) & status::FEATURES_OK, 0);
    // A feature the device does not offer: refused too.
    assert_eq!(d.init(F_VERSION_1 | 1 << 40, 1) & status::FEATURES_OK, 0);
    let s = d.init(COMMON_FEATURES, 1);
    assert_eq!(s & (status::FEATURES_OK | status::DRIVER_OK), 12);
}

#[test]
fn rng_fills_buffers_and_reset_stops_it() {
    let mut d = rng();
    assert_eq!(d.init(COMMON_FEATURES, 1) & status::NEEDS_RESET, 0);
    d.desc(0, 0, DATA, 64, F_WRITE, 0);
    d.post(0, 0);
    assert_eq!(d.used(0), Some((0, 64)));
    let mut got = [0u8; 64];
    d.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert!(got.iter().any(|b| *b != 0), "no random bytes");
    // Indirect: a table at DATA+0x1000 with two writable buffers.
    let table = DATA + 0x1000;
    for (i, (addr, len, flags, next)) in [
        (DATA + 0x2000, 16u32, F_WRITE | F_NEXT, 1u16),
        (DATA + 0x3000, 8, F_WRITE, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let at = GuestAddress(table + i as u64 * 16);
        d.mem.write_obj(addr, at).unwrap();
        d.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        d.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        d.mem.write_obj(next, at.unchecked_add(14)).unwrap();
    }
    d.desc(0, 1, table, 32, F_INDIRECT, 0);
    d.post(0, 1);
    assert_eq!(d.used(0), Some((1, 24)));
    d.write(0x14, &[0]);
    assert_eq!(d.status(), 0);
    // After reset the queue is no longer served.
    d.desc(0, 2, DATA, 8, F_WRITE, 0);
    d.post(0, 2);
    assert_eq!(d.used_within(0, 200), None);
}

/// Each broken chain marks the device NEEDS_RESET; after a reset the same
/// device works again. Nothing here may panic or touch memory outside the
/// guest's.
#[test]
fn broken_chains_mark_the_device_needs_reset() {
    type Breaker = fn(&mut Driver);
    let cases: Vec<(&str, Breaker)> = vec![
        ("out of range address", |d| {
            d.desc(0, 0, MEM_SIZE as u64 - 8, 64, F_WRITE, 0);
            d.post(0, 0);
        }),
        ("address overflow", |d| {
            d.desc(0, 0, u64::MAX - 4, 64, F_WRITE, 0);
            d.post(0, 0);
        }),
        ("loop", |d| {
            d.desc(0, 0, DATA, 8, F_WRITE | F_NEXT, 1);
            d.desc(0, 1, DATA, 8, F_WRITE | F_NEXT, 0);
            d.post(0, 0);
        }),
        ("next out of table", |d| {
            d.desc(0, 0, DATA, 8, F_WRITE | F_NEXT, 999);
            d.post(0, 0);
        }),
        ("head out of table", |d| d.post(0, 4000)),
        ("indirect table outside memory", |d| {
            d.desc(0, 0, MEM_SIZE as u64 + 0x1000, 32, F_INDIRECT, 0);
            d.post(0, 0);
        }),
        ("indirect table of odd length", |d| {
            d.desc(0, 0, DATA, 17, F_INDIRECT, 0);
            d.post(0, 0);
        }),
        ("avail index jumps past the queue size", |d| {
            let avail = 0x10000 + 0x1000;
            d.mem.write_obj(500u16, GuestAddress(avail + 2)).unwrap();
            d.pci.write_bar(0, super::pci::NOTIFY_OFFSET, &[0, 0]);
        }),
    ];
    for (name, brk) in cases {
        let mut d = rng();
        assert_eq!(d.init(COMMON_FEATURES, 1) & status::NEEDS_RESET, 0);
        brk(&mut d);
        assert!(
            d.wait_needs_reset(),
            "{name}: device not marked NEEDS_RESET"
        );
        // The driver resets and starts over: the device serves again.
        let mut d2 = d;
        d2.init(COMMON_FEATURES, 1);
        assert_eq!(d2.status() & status::NEEDS_RESET, 0, "{name}");
    }
}

#[test]
fn queue_with_rings_outside_memory_is_refused_at_driver_ok() {
    let mut d = rng();
    d.write(0x14, &[status::ACKNOWLEDGE | status::DRIVER]);
    d.write(0x0c, &0u32.to_le_bytes());
    d.write(0x08, &1u32.to_le_bytes());
    d.write(0x0c, &1u32.to_le_bytes());
    d.write(0x14, &[11]);
    d.write(0x18, &16u16.to_le_bytes());
    d.write(0x20, &(MEM_SIZE as u64 + 0x10000).to_le_bytes());
    d.write(0x1c, &1u16.to_le_bytes());
    d.write(0x14, &[15]);
    assert_ne!(d.status() & status::NEEDS_RESET, 0);
}

#[test]
fn hostile_register_accesses_do_not_panic() {
    let mut d = rng();
    d.init(COMMON_FEATURES, 1);
    for off in (0..0x8000u64)
        .step_by(1)
        .filter(|o| o % 61 == 0 || *o < 0x40)
    {
        for len in [0usize, 1, 2, 3, 4, 8, 16] {
            let mut b = vec![0xa5u8; len];
            d.pci.read_bar(0, off, &mut b);
            d.pci.write_bar(0, off, &b);
            d.pci.read_bar(1, off, &mut b);
            d.pci.write_bar(5, off, &b);
        }
    }
    // queue_select beyond the queues reads zeros, writes are ignored.
    d.write(0x16, &9u16.to_le_bytes());
    assert_eq!(d.read(0x18, 2), 0);
}

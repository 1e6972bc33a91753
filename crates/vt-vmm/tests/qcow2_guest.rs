//! A qcow2 disk under stock Debian Linux, with qemu-img as the referee, in
//! one lab boot: qemu-img makes the image from known data; the guest
//! checksums it, overwrites allocated clusters, writes into unallocated
//! ones (cluster and L2 allocation), discards a range, reads its writes
//! back and flushes; after the VMM exits, `qemu-img check` finds the image
//! clean and `qemu-img compare` finds exactly the expected content.
//!
//! The image reaches the lab as the L1's own virtio disk (`/dev/vda`,
//! the file's bytes, grown to leave room for new clusters), which `vt-vmm`
//! opens with `format=qcow2`; the lab writes it back to the host file, so
//! the checks run here, where qemu-img is.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{case_output, guest_value, initramfs_with, lab_disabled, qemu_img};

const MIB: usize = 1 << 20;
/// Virtual size and the part qemu-img fills with data.
const SIZE: usize = 32 * MIB;
const DATA: usize = 8 * MIB;

const GUEST: &str = r#"
v() { echo "VT-GUEST $1=$2"; }
sha() { sha256sum | cut -d' ' -f1; }
v size "$(cat /sys/block/vda/size)"
v initial_sha "$(dd if=/dev/vda bs=1M count=8 iflag=direct 2>/dev/null | sha)"
yes VT-QCOW2-A | head -c 1048576 > /tmp/a
yes VT-QCOW2-B | head -c 3145728 > /tmp/b
# Over allocated clusters, into unallocated ones (crossing into a new L2
# table's range does not happen at 64K clusters below 512 MiB, but new
# data clusters and refcount updates do), then a discard.
dd if=/tmp/a of=/dev/vda bs=1M seek=4 oflag=direct conv=fsync 2>/dev/null
v write_a $?
dd if=/tmp/b of=/dev/vda bs=1M seek=20 oflag=direct conv=fsync 2>/dev/null
v write_b $?
blkdiscard -o 0 -l 1048576 /dev/vda
v discard $?
sync
v readback_a "$(dd if=/dev/vda bs=1M skip=4 count=1 iflag=direct 2>/dev/null | sha)"
v want_a "$(sha < /tmp/a)"
v readback_b "$(dd if=/dev/vda bs=1M skip=20 count=3 iflag=direct 2>/dev/null | sha)"
v want_b "$(sha < /tmp/b)"
v discarded "$(dd if=/dev/vda bs=1M count=1 iflag=direct 2>/dev/null | tr -d '\0' | wc -c)"
"#;

/// xorshift64*: the image's initial data.
fn data(seed: u64) -> Vec<u8> {
    let mut s = seed;
    let mut out = vec![0u8; DATA];
    for (i, c) in out.chunks_mut(8).enumerate() {
        // Every other 64 KiB block left zero: qemu-img leaves those
        // unallocated, so the guest's writes allocate among used clusters.
        if (i * 8 / 65536) % 2 == 1 {
            continue;
        }
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        c.copy_from_slice(&s.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out
}

fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn pattern(word: &str, len: usize) -> Vec<u8> {
    format!("{word}\n").bytes().cycle().take(len).collect()
}

#[test]
fn linux_guest_reads_and_writes_a_qcow2_made_by_qemu_img() {
    if lab_disabled() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vt-qcow2-guest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join("initial.raw");
    let mut want = data(0x9e37_79b9);
    let mut full = want.clone();
    full.resize(SIZE, 0);
    std::fs::write(&raw, &full).unwrap();
    let initial_sha = {
        let p = dir.join("first8.raw");
        std::fs::write(&p, &want).unwrap();
        sha256(&p)
    };
    let img = dir.join("disk.qcow2");
    let (rc, out) = qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{out}");
    // Room for new clusters when the file is a fixed-size block device.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();

    let direct = matches!(lab::HostKind::detect(), Ok(lab::HostKind::Direct));
    let disk = if direct {
        img.to_str().unwrap().to_string()
    } else {
        "/dev/vda".into()
    };
    let host = format!(
        r#"R="$VTLAB_ROOT"
echo "=== CASE qcow2"
timeout -s KILL 150 "$R/vt/vt-vmm" --kernel "$R/guest/vmlinux" \
    --initrd "$R/vt/initramfs.cpio.gz" --memory 256 \
    --cmdline "console=ttyS0 quiet" --disk path={disk},format=qcow2 </dev/null
echo "=== RC $?"
dmesg | grep -a 'type=1326' | sed 's/^/VT-SECCOMP /'
"#
    );
    let wrapper = common::jailed_vmm_wrapper(&dir);
    let out = lab::Lab::new()
        .memory_mib(2048)
        .cpus(2)
        .timeout(Duration::from_secs(300))
        .with_guest_artifacts()
        .add_file(initramfs_with("qcow2", GUEST), "/vt/initramfs.cpio.gz")
        .add_binary(env!("CARGO_BIN_EXE_vt-vmm"), "/vt/bin/vt-vmm")
        .add_file(wrapper, "/vt/vt-vmm")
        .qemu_arg("-drive")
        .qemu_arg(format!(
            "file={},if=virtio,format=raw,cache=writeback",
            img.display()
        ))
        .run_auto(&host)
        .expect("lab run");
    eprintln!("{}", out.stdout);
    let (body, rc) = case_output(&out.stdout, "qcow2");
    assert_eq!(rc, Some(0), "{}", body.join("\n"));
    let g =
        |k: &str| guest_value(&body, k).unwrap_or_else(|| panic!("no {k}:\n{}", body.join("\n")));
    assert_eq!(g("size"), (SIZE / 512).to_string());
    assert_eq!(
        g("initial_sha"),
        initial_sha,
        "the guest read other bytes than qemu-img wrote"
    );
    assert_eq!(g("write_a"), "0");
    assert_eq!(g("write_b"), "0");
    assert_eq!(g("discard"), "0");
    assert_eq!(g("readback_a"), g("want_a"));
    assert_eq!(g("readback_b"), g("want_b"));
    assert_eq!(g("discarded"), "0");

    // The referee, on the host.
    let (rc, text) = qemu_img(&["check", img.to_str().unwrap()]);
    assert_eq!(rc, 0, "qemu-img check after the guest's writes:\n{text}");
    want.resize(SIZE, 0);
    want[..MIB].fill(0);
    want[4 * MIB..5 * MIB].copy_from_slice(&pattern("VT-QCOW2-A", MIB));
    want[20 * MIB..23 * MIB].copy_from_slice(&pattern("VT-QCOW2-B", 3 * MIB));
    let expected = dir.join("expected.raw");
    std::fs::write(&expected, &want).unwrap();
    let (rc, text) = qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "qcow2",
        expected.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "qemu-img compare:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! virtio-blk and virtio-rng under stock Debian Linux (its own virtio_pci,
//! virtio_blk and virtio_rng drivers), in the lab or on a VT-x/AMD-V host.
//!
//! One lab run, several L2 boots sharing disk images in the lab's /tmp:
//! - `write`: two disks (sizes, serials, read-only flag as the guest sees
//!   them), MSI-X interrupts counted, /dev/hwrng read, a pattern written
//!   with O_DIRECT and flushed; the lab host then checks the image's bytes;
//!   the read-only disk refuses a write;
//! - `read`: a second boot reads the pattern back;
//! - `kill9`: the guest writes and flushes, the VMM is killed with SIGKILL
//!   right after, and the data is in the image;
//! - `ratelimit`: a disk limited to 2 MiB/s reads at that rate ±10 %.

mod common;

use std::time::Duration;

use common::{case_output, guest_value, host_value};

const GUEST: &str = r#"
v() { echo "VT-GUEST $1=$2"; }
sha() { sha256sum | cut -d' ' -f1; }
irqs() { awk -v n="$1" '$0 ~ n {for (i=2; i<=NF; i++) if ($i ~ /^[0-9]+$/) s+=$i} END {print s+0}' /proc/interrupts; }
for w in $(cat /proc/cmdline); do case "$w" in vt.case=*) c=${w#vt.case=} ;; esac; done
case "$c" in
write)
    for d in vda vdb; do
        v "$d" "$(cat /sys/block/$d/size):$(cat /sys/block/$d/ro):$(cat /sys/block/$d/serial)"
    done
    v hwrng "$(cat /sys/class/misc/hw_random/rng_current)"
    v hwrng_bytes "$(dd if=/dev/hwrng bs=64 count=4 2>/dev/null | wc -c)"
    yes VT-PATTERN | head -c 1048576 > /tmp/p
    dd if=/tmp/p of=/dev/vda bs=1M seek=1 oflag=direct conv=fsync 2>/dev/null
    v write_rc $?
    dd if=/tmp/p of=/dev/vdb bs=4096 count=1 oflag=direct 2>/dev/null
    v ro_write_rc $?
    v ro_sha "$(dd if=/dev/vdb bs=1M count=1 iflag=direct 2>/dev/null | sha)"
    v msix_vectors "$(grep virtio /proc/interrupts | grep -c MSI)"
    v blk_irqs "$(irqs virtio0-req)"
    ;;
read)
    v readback_sha "$(dd if=/dev/vda bs=1M skip=1 count=1 iflag=direct 2>/dev/null | sha)"
    ;;
kill9)
    yes VT-KILL9 | head -c 1048576 > /tmp/p
    dd if=/tmp/p of=/dev/vda bs=1M seek=2 oflag=direct conv=fsync 2>/dev/null
    echo "VT-GUEST flushed"
    sleep 1000
    ;;
ratelimit)
    t0=$(cut -d' ' -f1 /proc/uptime)
    dd if=/dev/vda of=/dev/null bs=1M count=8 iflag=direct 2>/dev/null
    t1=$(cut -d' ' -f1 /proc/uptime)
    v rl_seconds "$(echo "$t0 $t1" | awk '{print $2 - $1}')"
    ;;
esac
"#;

const HOST: &str = r#"
R="$VTLAB_ROOT"; T=/tmp/vt-virtio; mkdir -p $T
sha() { sha256sum | cut -d' ' -f1; }
truncate -s 64M $T/d0.img
yes VT-READONLY | head -c 8388608 > $T/ro.img
run() {
    name=$1; shift
    echo "=== CASE $name"
    timeout -s KILL 120 "$R/vt/vt-vmm" --kernel "$R/guest/vmlinux" \
        --initrd "$R/vt/initramfs.cpio.gz" --memory 256 \
        --cmdline "console=ttyS0 quiet vt.case=$name" "$@" </dev/null
    echo "=== RC $?"
}
run write --disk path=$T/d0.img,serial=vt-disk-0 --disk path=$T/ro.img,readonly=on,serial=vt-ro --rng
echo "=== CASE host"
echo "VT-HOST pattern_sha=$(yes VT-PATTERN | head -c 1048576 | sha)"
echo "VT-HOST written_sha=$(dd if=$T/d0.img bs=1M skip=1 count=1 2>/dev/null | sha)"
echo "VT-HOST ro_sha=$(dd if=$T/ro.img bs=1M count=1 2>/dev/null | sha)"
echo "=== RC 0"
run read --disk path=$T/d0.img
echo "=== CASE kill9"
"$R/vt/vt-vmm" --kernel "$R/guest/vmlinux" --initrd "$R/vt/initramfs.cpio.gz" --memory 256 \
    --cmdline "console=ttyS0 quiet vt.case=kill9" --disk path=$T/d0.img \
    --serial file=$T/k9.log </dev/null &
pid=$!
for i in $(seq 1200); do grep -q 'VT-GUEST flushed' $T/k9.log 2>/dev/null && break; sleep 0.1; done
kill -9 $pid
wait $pid
echo "VT-HOST kill_status=$?"
cat $T/k9.log
echo "VT-HOST k9_sha=$(dd if=$T/d0.img bs=1M skip=2 count=1 2>/dev/null | sha)"
echo "VT-HOST k9_want=$(yes VT-KILL9 | head -c 1048576 | sha)"
echo "=== RC 0"
run ratelimit --disk path=$T/d0.img,bw=2M
"#;

#[test]
fn linux_drivers_use_virtio_blk_and_rng() {
    if common::lab_disabled() {
        return;
    }
    let stdout = common::run_in_lab("virtio", GUEST, HOST, Duration::from_secs(400));
    let case = |name: &str| {
        let (body, rc) = case_output(&stdout, name);
        assert_eq!(rc, Some(0), "case {name}:\n{}", body.join("\n"));
        body
    };

    let w = case("write");
    let g = |k: &str| guest_value(&w, k).unwrap_or_else(|| panic!("no {k}:\n{}", w.join("\n")));
    // 64 MiB = 131072 sectors, writable; 8 MiB = 16384 sectors, read-only.
    assert_eq!(g("vda"), "131072:0:vt-disk-0");
    assert_eq!(g("vdb"), "16384:1:vt-ro");
    assert_eq!(g("hwrng"), "virtio_rng.0");
    assert_eq!(g("hwrng_bytes"), "256");
    assert_eq!(g("write_rc"), "0");
    assert_ne!(g("ro_write_rc"), "0", "the read-only disk took a write");
    // Config + request vectors for two disks and the rng.
    assert!(g("msix_vectors").parse::<u32>().unwrap_or(0) >= 6, "{w:?}");
    assert!(g("blk_irqs").parse::<u64>().unwrap_or(0) > 0, "{w:?}");
    assert_eq!(g("test-exit"), "0");

    let h = case("host");
    let hv = |k: &str| host_value(&h, k).unwrap_or_else(|| panic!("no {k}: {h:?}"));
    assert_eq!(
        hv("written_sha"),
        hv("pattern_sha"),
        "image bytes after the guest's write"
    );
    assert_eq!(g("ro_sha"), hv("ro_sha"), "read-only disk contents");

    let r = case("read");
    assert_eq!(guest_value(&r, "readback_sha"), Some(hv("pattern_sha")));

    let k = case("kill9");
    assert!(k.iter().any(|l| l.contains("VT-GUEST flushed")), "{k:?}");
    assert_eq!(host_value(&k, "kill_status"), Some("137"));
    assert_eq!(host_value(&k, "k9_sha"), host_value(&k, "k9_want"), "{k:?}");

    let rl = case("ratelimit");
    let secs: f64 = guest_value(&rl, "rl_seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no rl_seconds: {rl:?}"));
    let rate = 8.0 / secs;
    assert!(
        (1.8..=2.2).contains(&rate),
        "rate-limited disk read at {rate:.2} MiB/s ({secs} s for 8 MiB), want 2 MiB/s ±10 %"
    );
}

//! `GET /vm/counters` against what a stock Debian Linux guest did, in the
//! lab: the guest writes 8 MiB to its disk with `dd oflag=direct` and
//! pings the lab host 5 times over a tap; the VMM's disk write bytes must
//! be those 8 MiB (±1 %) and its NIC must have carried at least the pings.
//! Addresses are link-local (169.254.0.0/16) inside the lab only.

mod common;

use std::time::Duration;

use api::control::VmmCounters;
use common::{case_output, guest_value, host_value};

const GUEST: &str = r#"
v() { echo "VT-GUEST $1=$2"; }
ip addr add 169.254.20.2/24 dev eth0
ip link set eth0 up
dd if=/dev/zero of=/dev/vda bs=1M count=8 oflag=direct 2>/dev/null
v dd_rc $?
ping -c 5 -W 5 169.254.20.1 >/dev/null 2>&1
v ping_rc $?
v guest_tx_packets "$(cat /sys/class/net/eth0/statistics/tx_packets)"
v guest_rx_packets "$(cat /sys/class/net/eth0/statistics/rx_packets)"
v guest_write_sectors "$(awk '{print $7}' /sys/block/vda/stat)"
v done 1
sleep 100000
"#;

const HOST: &str = r#"
R="$VTLAB_ROOT"; T=/tmp/vt-cnt; mkdir -p $T
API="$R/vt/bin/vt-api-call"
truncate -s 64M $T/d.raw
echo "=== CASE counters"
"$R/vt/vt-vmm" --kernel "$R/guest/vmlinux" --initrd "$R/vt/initramfs.cpio.gz" --memory 512 \
    --cmdline "console=ttyS0 quiet" --disk path=$T/d.raw --net tap=vt0 \
    --serial file=$T/serial.log --api-socket $T/api.sock </dev/null 2>$T/vmm.err &
pid=$!
for i in $(seq 100); do [ -e /sys/class/net/vt0 ] && break; sleep 0.1; done
ip addr add 169.254.20.1/24 dev vt0
for i in $(seq 3000); do grep -q 'VT-GUEST done=1' $T/serial.log 2>/dev/null && break; sleep 0.1; done
echo "VT-HOST counters=$("$API" $T/api.sock GET /vm/counters | tr -d '\n')"
"$API" $T/api.sock PUT /vm/stop >/dev/null
timeout -s KILL 60 sh -c "while kill -0 $pid 2>/dev/null; do sleep 0.2; done"
wait $pid
rc=$?
cat $T/serial.log $T/vmm.err
echo "=== RC $rc"
"#;

#[test]
fn linux_guest_io_shows_in_the_counters() {
    if common::lab_disabled() {
        return;
    }
    let stdout = common::run_in_lab_with(
        "counters",
        GUEST,
        HOST,
        Duration::from_secs(400),
        &[(env!("CARGO_BIN_EXE_vt-api-call"), "/vt/bin/vt-api-call")],
    );
    let all: Vec<&str> = stdout.lines().collect();
    let (body, rc) = case_output(&stdout, "counters");
    assert_eq!(rc, Some(0), "{}", body.join("\n"));
    let g = |k: &str| -> u64 {
        guest_value(&body, k)
            .unwrap_or_else(|| panic!("no {k}:\n{}", body.join("\n")))
            .parse()
            .unwrap()
    };
    assert_eq!(g("dd_rc"), 0);
    assert_eq!(g("ping_rc"), 0);
    // vt-api-call prints the status, then the body.
    let answer = host_value(&all, "counters").expect("counters");
    let json = answer
        .strip_prefix("200 ")
        .unwrap_or_else(|| panic!("{answer}"));
    let c: VmmCounters = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let d = &c.detail;

    // Disk: the 8 MiB dd wrote, ±1 %, and what the guest's block layer
    // says it wrote (sectors of 512 bytes) exactly.
    let disk = &d.disks[0];
    let want = 8u64 << 20;
    let diff = disk.write_bytes.abs_diff(want);
    assert!(
        diff * 100 <= want,
        "disk write bytes {} vs {want}",
        disk.write_bytes
    );
    assert_eq!(disk.write_bytes, g("guest_write_sectors") * 512, "{disk:?}");
    assert!(disk.write_ops >= 8, "{disk:?}");
    assert_eq!(disk.errors, 0, "{disk:?}");
    let requests: u64 = disk.latency_buckets.iter().sum();
    assert!(
        requests >= disk.write_ops + disk.read_ops + disk.flush_ops,
        "{disk:?}"
    );
    assert!(disk.interrupts > 0, "{disk:?}");

    // NIC: at least the 5 pings each way, and at least what the guest
    // counted (the guest counts after its last frame; the VMM later).
    let nic = &d.nets[0];
    assert_eq!(nic.tap, "vt0");
    assert!(nic.tx_packets >= 5 && nic.rx_packets >= 5, "{nic:?}");
    assert!(nic.tx_packets >= g("guest_tx_packets"), "{nic:?}");
    assert!(nic.rx_packets >= g("guest_rx_packets"), "{nic:?}");
    assert!(nic.tx_bytes >= 5 * 98 && nic.rx_bytes >= 5 * 98, "{nic:?}");
    assert!(nic.rx_interrupts > 0, "{nic:?}");

    // vCPUs and memory.
    assert_eq!(d.vcpus.len(), 1);
    assert!(d.vcpus[0].cpu_time_ns > 0);
    assert!(
        d.vcpus[0].exits.mmio_write > 0,
        "virtio notifications or PCI setup"
    );
    assert_eq!(d.memory.guest_bytes, 512 << 20);
    assert!(d.memory.guest_resident_bytes > 8 << 20, "{:?}", d.memory);
}

//! A stock Linux guest under a confined `vt-vmm` (seccomp and Landlock on,
//! as by default), in the lab or on a VT-x/AMD-V host: disk, NIC and rng
//! used by Linux's drivers, then a guest reboot with `--on-reboot restart`
//! (the VM, its memory and devices rebuilt under the main thread's filter
//! and Landlock), the devices used again, and a power-off. The VMM's
//! threads show their filters in /proc meanwhile (device workers: three,
//! stacked on the main and vCPU ones), and no call was refused.

mod common;

use std::time::Duration;

use common::{case_output, guest_value};

const GUEST: &str = r#"
v() { echo "VT-GUEST $1=$2"; }
if [ "$(dd if=/dev/vda bs=6 count=1 2>/dev/null)" = "BOOT-1" ]; then b=2; else b=1; fi
yes VT-B$b | head -c 65536 | dd of=/dev/vda bs=64k seek=1 oflag=direct conv=fsync 2>/dev/null
v disk_rw_$b $?
v hwrng_$b "$(dd if=/dev/hwrng bs=64 count=2 2>/dev/null | wc -c)"
ip addr add 169.254.30.2/24 dev eth0
ip link set eth0 up
v eth0_up_$b $?
# Nobody answers: the ARP requests are the frames sent (the link may take
# a moment to come up).
tx() { cat /sys/class/net/eth0/statistics/tx_packets; }
for i in 1 2 3 4 5 6 7 8 9 10; do
    ping -c 1 -W 1 169.254.30.1 >/dev/null 2>&1
    [ "$(tx)" -gt 0 ] && break
done
v tx_$b "$(tx)"
v boot $b
if [ $b = 1 ]; then
    sleep 2
    printf BOOT-1 | dd of=/dev/vda conv=fsync 2>/dev/null
    reboot -f
fi
"#;

const HOST: &str = r#"
R="$VTLAB_ROOT"; T=/tmp/vt-cell; mkdir -p $T
truncate -s 16M $T/d.img
echo "=== CASE reboot"
"$R/vt/vt-vmm" --kernel "$R/guest/vmlinux" --initrd "$R/vt/initramfs.cpio.gz" \
    --memory 256 --cpus 2 --cmdline "console=ttyS0 quiet" \
    --disk path=$T/d.img --net tap=vtc0 --rng --on-reboot restart \
    --seccomp on --landlock on --api-socket $T/api.sock \
    --serial file=$T/con.log </dev/null 2>$T/err.log &
pid=$!
for i in $(seq 1200); do grep -q 'VT-GUEST boot=1' $T/con.log 2>/dev/null && break; sleep 0.1; done
# The VMM runs jailed: the process we started waits outside, the VM is its child.
vmm=$(cat /proc/$pid/task/$pid/children | cut -d' ' -f1)
echo "VT-HOST seccomp=$(sed -n 's/^Seccomp:\s*//p' /proc/$vmm/status)"
echo "VT-HOST nnp=$(sed -n 's/^NoNewPrivs:\s*//p' /proc/$vmm/status)"
echo "VT-HOST uid=$(sed -n 's/^Uid:\s*\([0-9]*\).*/\1/p' /proc/$vmm/status)"
echo "VT-HOST capeff=$(sed -n 's/^CapEff:\s*//p' /proc/$vmm/status)"
echo "VT-HOST netns_differs=$([ "$(readlink /proc/$vmm/ns/net)" != "$(readlink /proc/self/ns/net)" ] && echo yes)"
for t in /proc/$vmm/task/*; do
    echo "VT-HOST thread $(cat $t/comm)=$(sed -n 's/^Seccomp_filters:\s*//p' $t/status)"
done
timeout -s KILL 240 sh -c "while kill -0 $pid 2>/dev/null; do sleep 0.2; done"
wait $pid
rc=$?
cat $T/con.log
sed 's/^/VT-HOST stderr: /' $T/err.log
echo "=== RC $rc"
"#;

#[test]
fn linux_reboots_and_keeps_its_devices_under_seccomp_and_landlock() {
    if common::lab_disabled() {
        return;
    }
    let stdout = common::run_in_lab("confined", GUEST, HOST, Duration::from_secs(500));
    assert!(
        !stdout.contains("VT-SECCOMP"),
        "a call was refused:\n{stdout}"
    );
    let (body, rc) = case_output(&stdout, "reboot");
    let all = body.join("\n");
    assert_eq!(rc, Some(0), "{all}");
    let g = |k: &str| guest_value(&body, k).unwrap_or_else(|| panic!("no {k}:\n{all}"));
    for b in ["1", "2"] {
        assert_eq!(g(&format!("disk_rw_{b}")), "0", "boot {b}");
        assert_eq!(g(&format!("hwrng_{b}")), "128", "boot {b}");
        assert_eq!(g(&format!("eth0_up_{b}")), "0", "boot {b}");
        let tx: u64 = g(&format!("tx_{b}")).parse().unwrap_or(0);
        assert!(tx > 0, "boot {b}: no frame sent");
    }
    assert!(all.contains("VT-GUEST boot=2"), "no second boot:\n{all}");
    assert!(all.contains("reboot: Power down"), "{all}");
    let h = |k: &str| common::host_value(&body, k).unwrap_or_else(|| panic!("no {k}:\n{all}"));
    assert_eq!(h("seccomp"), "2");
    assert_eq!(h("nnp"), "1");
    assert_eq!(h("uid"), common::LAB_VM_UID.to_string());
    assert_eq!(h("capeff"), "0000000000000000");
    assert_eq!(h("netns_differs"), "yes");
    assert_eq!(h("thread vt-vmm"), "1");
    assert_eq!(h("thread vcpu0"), "2");
    assert_eq!(h("thread vcpu1"), "2");
    assert_eq!(h("thread api-listener"), "1");
    assert_eq!(h("thread virtio-blk"), "3");
    assert_eq!(h("thread virtio-net"), "3");
    assert_eq!(h("thread virtio-rng"), "3");
}

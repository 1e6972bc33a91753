//! virtio-net under stock Debian Linux (virtio_net driver) on taps in the
//! lab: two NICs with the asked and the generated MAC, ping both ways, and
//! 64 MiB over TCP in each direction (busybox httpd + wget), checksums
//! compared. Addresses are link-local (169.254.0.0/16) inside the lab only.

mod common;

use std::time::Duration;

use common::{case_output, guest_value, host_value};

const GUEST: &str = r#"
v() { echo "VT-GUEST $1=$2"; }
sha() { sha256sum | cut -d' ' -f1; }
v eth0_mac "$(cat /sys/class/net/eth0/address)"
v eth1_mac "$(cat /sys/class/net/eth1/address)"
ip addr add 169.254.10.2/24 dev eth0
ip link set eth0 up
ip link set lo up
ping -c 3 -W 5 169.254.10.1 >/dev/null 2>&1
v ping_rc $?
v down_sha "$(wget -q -O - http://169.254.10.1:8080/blob | sha)"
mkdir -p /tmp/www
yes VT-NET-UPLOAD | head -c 67108864 > /tmp/www/up
httpd -p 8080 -h /tmp/www
v serving 1
# Wait until the host has fetched it (it then publishes /done).
for i in $(seq 600); do
    wget -q -O /dev/null http://169.254.10.1:8080/done 2>/dev/null && break
    sleep 0.2
done
v tx_bytes "$(cat /sys/class/net/eth0/statistics/tx_bytes)"
v rx_bytes "$(cat /sys/class/net/eth0/statistics/rx_bytes)"
"#;

const HOST: &str = r#"
R="$VTLAB_ROOT"; W=/tmp/vt-www; mkdir -p $W
sha() { sha256sum | cut -d' ' -f1; }
head -c 67108864 /dev/urandom > $W/blob
echo "VT-HOST blob_sha=$(sha < $W/blob)"
echo "VT-HOST up_sha=$(yes VT-NET-UPLOAD | head -c 67108864 | sha)"
ip link set lo up
echo "=== CASE net"
# The VMM creates both taps (we are root) and brings them up.
"$R/vt/vt-vmm" --kernel "$R/guest/vmlinux" --initrd "$R/vt/initramfs.cpio.gz" --memory 512 \
    --cmdline "console=ttyS0 quiet" --net tap=vt0,mac=52:54:00:12:34:56 --net tap=vt1 \
    --serial file=/tmp/net.log </dev/null &
pid=$!
for i in $(seq 100); do [ -e /sys/class/net/vt0 ] && break; sleep 0.1; done
echo "VT-HOST vt0_flags=$(cat /sys/class/net/vt0/flags)"
ip addr add 169.254.10.1/24 dev vt0
httpd -p 169.254.10.1:8080 -h $W
for i in $(seq 1200); do grep -q 'VT-GUEST serving=1' /tmp/net.log 2>/dev/null && break; sleep 0.1; done
ping -c 2 -W 5 169.254.10.2 >/dev/null 2>&1
echo "VT-HOST ping_rc=$?"
echo "VT-HOST up_got=$(wget -q -O - http://169.254.10.2:8080/up | sha)"
echo ok > $W/done
timeout -s KILL 120 sh -c "while kill -0 $pid 2>/dev/null; do sleep 0.2; done"
wait $pid
rc=$?
cat /tmp/net.log
echo "=== RC $rc"
"#;

#[test]
fn linux_virtio_net_on_taps() {
    if common::lab_disabled() {
        return;
    }
    let stdout = common::run_in_lab("virtio-net", GUEST, HOST, Duration::from_secs(400));
    let all: Vec<&str> = stdout.lines().collect();
    let (body, rc) = case_output(&stdout, "net");
    assert_eq!(rc, Some(0), "{}", body.join("\n"));
    let g =
        |k: &str| guest_value(&body, k).unwrap_or_else(|| panic!("no {k}:\n{}", body.join("\n")));
    let h = |k: &str| host_value(&all, k).unwrap_or_else(|| panic!("no {k}"));
    assert_eq!(g("eth0_mac"), "52:54:00:12:34:56");
    let generated = api::parse_net("tap=vt1").unwrap().mac_bytes().unwrap();
    let generated: Vec<String> = generated.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(g("eth1_mac"), generated.join(":"));
    assert_eq!(g("ping_rc"), "0", "guest -> host ping");
    assert_eq!(h("ping_rc"), "0", "host -> guest ping");
    assert_eq!(g("down_sha"), h("blob_sha"), "64 MiB host -> guest");
    assert_eq!(h("up_got"), h("up_sha"), "64 MiB guest -> host");
    let rx: u64 = g("rx_bytes").parse().unwrap_or(0);
    assert!(rx > 64 << 20, "guest counted {rx} bytes received");
}

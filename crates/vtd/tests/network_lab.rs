//! Two stock Linux guests on one `isolated` vtd network, in the lab (real
//! virtio-net NICs on taps, the nftables rules in the lab's kernel): each
//! reaches the gateway, not the other; a guest that changes its IP or MAC
//! loses its traffic; with `vm_inter_vm_traffic` on they reach each
//! other, and off again they do not. Addresses are inside the lab only.

use std::path::PathBuf;
use std::time::Duration;

use lab::{CpioWriter, Lab};

/// Run by each guest's init: its address and peer from the command line.
const GUEST: &str = r#"
for w in $(cat /proc/cmdline); do
    case "$w" in
        vt.ip=*) ip=${w#vt.ip=} ;;
        vt.peer=*) peer=${w#vt.peer=} ;;
        vt.spoof=*) spoof=1 ;;
    esac
done
gw=10.88.0.1
ip link set eth0 up
ip addr add "$ip/24" dev eth0
for i in $(seq 60); do ping -c 1 -W 1 $gw >/dev/null 2>&1 && break; done
ping -c 1 -W 2 $gw >/dev/null 2>&1; echo "VT-GUEST gw=$?"
if [ -n "$spoof" ]; then
    ip addr add 10.88.0.99/24 dev eth0
    ping -c 2 -W 1 -I 10.88.0.99 $gw >/dev/null 2>&1; echo "VT-GUEST spoof_ip=$?"
    ip addr del 10.88.0.99/24 dev eth0
    mac=$(cat /sys/class/net/eth0/address)
    ip link set eth0 address 52:54:00:66:66:66
    ip neigh flush all
    ping -c 2 -W 1 $gw >/dev/null 2>&1; echo "VT-GUEST spoof_mac=$?"
    ip link set eth0 address "$mac"
    ip neigh flush all
    ping -c 1 -W 2 $gw >/dev/null 2>&1; echo "VT-GUEST gw_again=$?"
fi
echo "VT-GUEST ready"
while :; do
    ip neigh flush all
    ping -c 1 -W 1 "$peer" >/dev/null 2>&1; echo "VT-GUEST peer=$?"
    sleep 0.5
done
"#;

const HOST: &str = r#"
R="$VTLAB_ROOT"; VT="$R/vt/vt"; export VT_SOCKET=/tmp/vtd.sock
ip link set lo up
"$R/vt/vtd" --socket $VT_SOCKET --state-dir /tmp/vt-state --vmm "$R/vt/vt-vmm" >/tmp/vtd.log 2>&1 &
for i in $(seq 100); do [ -S $VT_SOCKET ] && break; sleep 0.1; done
$VT net define lan --mode isolated --subnet 10.88.0.0/24 --dhcp off
fail() { echo "VT-HOST failed=$1"; cat /tmp/vtd.log; exit 1; }
$VT net start lan; rc=$?; echo "VT-HOST net_start_rc=$rc"; [ $rc = 0 ] || fail net-start
B="kernel=$R/guest/vmlinux,initrd=$R/vt/initramfs.cpio.gz,kernel_args=console=ttyS0 quiet vt.action=wait"
$VT create --name a --ram 192 --network network=lan,ip=10.88.0.2 --boot "$B vt.ip=10.88.0.2 vt.peer=10.88.0.3 vt.spoof=1"
$VT create --name b --ram 192 --network network=lan,ip=10.88.0.3 --boot "$B vt.ip=10.88.0.3 vt.peer=10.88.0.2"
$VT start a; rc=$?; echo "VT-HOST start_a_rc=$rc"; [ $rc = 0 ] || fail start-a
$VT start b; rc=$?; echo "VT-HOST start_b_rc=$rc"; [ $rc = 0 ] || fail start-b
con() { $VT console "$1" --no-follow 2>/dev/null | tr -d '\r'; }
# The last `peer=` result of a guest (after n more lines appeared).
last() { con "$1" | grep '^VT-GUEST peer=' | tail -n 1; }
count() { con "$1" | grep -c '^VT-GUEST peer='; }
for i in $(seq 300); do
    [ "$(count a)" -ge 3 ] && [ "$(count b)" -ge 3 ] && break
    [ $i = 300 ] && { con a | sed 's/^/CONSOLE-A /'; con b | sed 's/^/CONSOLE-B /'; fail boot; }
    sleep 0.5
done
# Phase 1 (switch off): the last three tries of each failed.
echo "VT-HOST off_a=$(con a | grep '^VT-GUEST peer=' | tail -n 3 | tr '\n' ' ')"
echo "VT-HOST off_b=$(con b | grep '^VT-GUEST peer=' | tail -n 3 | tr '\n' ' ')"
nft list table bridge vtd | sed 's/^/NFT /'
# Phase 2: on; wait for both to get through.
$VT policy set vm_inter_vm_traffic on
for i in $(seq 100); do
    [ "$(last a)" = "VT-GUEST peer=0" ] && [ "$(last b)" = "VT-GUEST peer=0" ] && break
    sleep 0.2
done
echo "VT-HOST on_a=$(last a)"
echo "VT-HOST on_b=$(last b)"
# Phase 3: off again; wait for both to be cut off.
$VT policy set vm_inter_vm_traffic off
sleep 2
for i in $(seq 100); do
    [ "$(last a)" = "VT-GUEST peer=1" ] && [ "$(last b)" = "VT-GUEST peer=1" ] && break
    sleep 0.2
done
echo "VT-HOST off_again_a=$(last a)"
echo "VT-HOST off_again_b=$(last b)"
$VT stop a; $VT stop b
echo "VT-HOST table_after_stop=$(nft list table bridge vtd | grep -c 'ether saddr')"
con a | grep -v 'peer=' | sed 's/^/CONSOLE-A /'
con b | grep -v 'peer=' | sed 's/^/CONSOLE-B /'
cat /tmp/vtd.log
"#;

fn host<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("VT-HOST {key}=");
    out.lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

fn guest_initramfs() -> PathBuf {
    let arts = lab::artifacts::ensure(None).expect("guest artifacts");
    let mut bytes = std::fs::read(&arts.initramfs).expect("read initramfs");
    bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    let mut cpio = CpioWriter::new(Vec::new());
    cpio.file("vt-test.sh", 0o755, GUEST.as_bytes())
        .expect("cpio");
    bytes.extend(cpio.finish().expect("cpio"));
    let dir = std::env::temp_dir().join(format!("vt-netlab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("initramfs.cpio.gz");
    std::fs::write(&path, bytes).expect("write initramfs");
    path
}

#[test]
fn two_guests_on_an_isolated_network() {
    if std::env::var("VT_LAB").is_ok_and(|v| v == "never") {
        eprintln!("VT_LAB=never: Linux guest test skipped");
        return;
    }
    let (Some(nft), Some(ip)) = (network::find_program("nft"), network::find_program("ip")) else {
        eprintln!("skipped: needs nft and ip (scripts/setup-host.sh)");
        return;
    };
    let arts = lab::artifacts::ensure(None).expect("guest artifacts");
    let modules = arts.lab_module_order().expect("lab modules");
    assert!(
        [
            "bridge",
            "nf_tables",
            "nft_meta_bridge",
            "nft_ct",
            "nft_chain_nat"
        ]
        .iter()
        .all(|m| modules.iter().any(|l| l == m)),
        "the lab's modules lack bridge/nftables: run scripts/guest-artifacts.sh"
    );
    let bin = |name: &str| PathBuf::from(env!("CARGO_BIN_EXE_vtd")).with_file_name(name);
    let initramfs = guest_initramfs();
    let out = Lab::new()
        .memory_mib(2048)
        .cpus(2)
        .timeout(Duration::from_secs(300))
        .with_guest_artifacts()
        .add_file(&initramfs, "/vt/initramfs.cpio.gz")
        .add_binary(env!("CARGO_BIN_EXE_vtd"), "/vt/vtd")
        .add_binary(bin("vt"), "/vt/vt")
        .add_binary(bin("vt-vmm"), "/vt/vt-vmm")
        // nftables' and iproute2's tools (busybox's ip makes no bridges).
        .add_binary(&nft, "/usr/sbin/nft")
        .add_binary(&ip, "/bin/ip")
        .run_auto(HOST)
        .expect("lab run");
    let _ = std::fs::remove_dir_all(initramfs.parent().unwrap());
    let o = out.stdout.as_str();
    eprintln!("{o}");
    assert_eq!(out.exit_code, 0, "{o}");
    assert_eq!(host(o, "net_start_rc"), "0");
    assert_eq!(host(o, "start_a_rc"), "0");
    assert_eq!(host(o, "start_b_rc"), "0");
    let console = |who: &str, line: &str| {
        let tag = format!("CONSOLE-{who} ");
        assert!(
            o.lines()
                .any(|l| l.strip_prefix(&tag).is_some_and(|l| l.trim_end() == line)),
            "guest {who} lacks '{line}':\n{o}"
        );
    };
    // Both reach the gateway; a's spoofed IP and MAC are cut off, its own
    // pair works again after.
    console("A", "VT-GUEST gw=0");
    console("B", "VT-GUEST gw=0");
    console("A", "VT-GUEST spoof_ip=1");
    console("A", "VT-GUEST spoof_mac=1");
    console("A", "VT-GUEST gw_again=0");
    // Not each other, then each other, then not.
    let off = "VT-GUEST peer=1 VT-GUEST peer=1 VT-GUEST peer=1";
    assert_eq!(host(o, "off_a").trim(), off);
    assert_eq!(host(o, "off_b").trim(), off);
    assert_eq!(host(o, "on_a"), "VT-GUEST peer=0");
    assert_eq!(host(o, "on_b"), "VT-GUEST peer=0");
    assert_eq!(host(o, "off_again_a"), "VT-GUEST peer=1");
    assert_eq!(host(o, "off_again_b"), "VT-GUEST peer=1");
    // Stopped: no per-NIC rules left.
    assert_eq!(host(o, "table_after_stop"), "0");
}

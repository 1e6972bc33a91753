//! Two stock Linux guests on one `isolated` vtd network, in the lab (real
//! virtio-net NICs on taps, the nftables rules in the lab's kernel): each
//! reaches the gateway, not the other; a guest that changes its IP or MAC
//! loses its traffic; with `vm_inter_vm_traffic` on they reach each
//! other, and off again they do not. The same guests have a second NIC on
//! a `nat` network with DHCP: on it each gets its fixed lease from vtd's
//! dnsmasq with busybox `udhcpc`, pings the gateway, and resolves the other
//! VM's name with the gateway as DNS server. Addresses are inside the lab
//! only.

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
        vt.dhcp=*) dhcp=1 ;;
        vt.lookup=*) lookup=${w#vt.lookup=} ;;
    esac
done
if [ -n "$dhcp" ]; then
    # A DHCP client on the second NIC, on the nat network (udhcpc runs
    # this script with the lease).
    cat >/tmp/dhcp.sh <<'EOF'
#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add "$ip/$mask" dev "$interface"
ip route add default via "$router"
echo "VT-GUEST lease ip=$ip mask=$mask router=$router dns=$dns"
EOF
    chmod 755 /tmp/dhcp.sh
    ip link set eth1 up
    udhcpc -i eth1 -n -q -t 30 -T 1 -s /tmp/dhcp.sh; echo "VT-GUEST udhcpc=$?"
    echo "VT-GUEST mac=$(cat /sys/class/net/eth1/address)"
    echo "VT-GUEST addr=$(ip -4 addr show dev eth1 | awk '/inet / {print $2}')"
    ngw=$(ip route | awk '/^default/ {print $3}')
    for i in $(seq 10); do ping -c 1 -W 1 "$ngw" >/dev/null 2>&1 && break; done
    ping -c 1 -W 2 "$ngw" >/dev/null 2>&1; echo "VT-GUEST dhcp_gw=$?"
    # The other VM's name, asked of the gateway (dnsmasq knows it once
    # that VM has its lease).
    for i in $(seq 120); do
        a=$(nslookup "$lookup" "$ngw" 2>/dev/null | sed -n '/^Name:/,$ s/^Address:[[:space:]]*//p' | head -n 1)
        [ -n "$a" ] && break
        sleep 0.5
    done
    echo "VT-GUEST resolved $lookup=$a"
fi
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
$VT net define out --mode nat --subnet 10.90.0.0/24 --dhcp on
fail() { echo "VT-HOST failed=$1"; cat /tmp/vtd.log; cat /tmp/vt-state/networks/out/dnsmasq.log; exit 1; }
$VT net start lan; rc=$?; echo "VT-HOST net_start_rc=$rc"; [ $rc = 0 ] || fail net-start
# dnsmasq drops its privileges to nobody: the lab has no /etc/passwd.
mkdir -p /etc
echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >>/etc/passwd
echo 'nogroup:x:65534:' >>/etc/group
$VT net start out; rc=$?; echo "VT-HOST nat_start_rc=$rc"; [ $rc = 0 ] || fail nat-start
B="kernel=$R/guest/vmlinux,initrd=$R/vt/initramfs.cpio.gz,kernel_args=console=ttyS0 quiet vt.action=wait"
# eth0 on lan with a static address; eth1 on the nat network, DHCP (no
# address given: vtd picks each NIC's fixed lease).
$VT create --name a --ram 192 --network network=lan,ip=10.88.0.2 --network network=out \
    --boot "$B vt.ip=10.88.0.2 vt.peer=10.88.0.3 vt.spoof=1 vt.dhcp=1 vt.lookup=b"
$VT create --name b --ram 192 --network network=lan,ip=10.88.0.3 --network network=out \
    --boot "$B vt.ip=10.88.0.3 vt.peer=10.88.0.2 vt.dhcp=1 vt.lookup=a"
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
# The nat network, as vtd sees it (the guests asked it before their
# peer loops began).
for v in a b; do echo "VT-HOST nic_$v=$($VT info $v | sed -n 's/^Network: *//p' | grep '^network=out')"; done
$VT net leases out | sed 's/^/LEASES /'
$VT net info out | sed 's/^/NETINFO /'
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
    let (Some(nft), Some(ip), Some(dnsmasq)) = (
        network::find_program("nft"),
        network::find_program("ip"),
        network::find_program("dnsmasq"),
    ) else {
        eprintln!("skipped: needs nft, ip and dnsmasq (scripts/setup-host.sh)");
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
            "nft_chain_nat",
            "nft_masq"
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
        .add_binary(bin("vt-logger"), "/vt/vt-logger")
        // nftables' and iproute2's tools (busybox's ip makes no bridges).
        .add_binary(&nft, "/usr/sbin/nft")
        .add_binary(&ip, "/bin/ip")
        // The nat network's DHCP and DNS.
        .add_binary(&dnsmasq, "/usr/sbin/dnsmasq")
        .run_auto(HOST)
        .expect("lab run");
    let _ = std::fs::remove_dir_all(initramfs.parent().unwrap());
    eprintln!("lab time: {:.1} s", out.duration.as_secs_f64());
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

    // The nat network: each guest got the fixed lease vtd gave its NIC
    // (what `vt info` and `vt net leases` say), the gateway as router and
    // DNS server, reached the gateway and resolved the other VM's name.
    assert_eq!(host(o, "nat_start_rc"), "0");
    let gateway = o
        .lines()
        .find_map(|l| l.strip_prefix("NETINFO Gateway"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no gateway in vt net info:\n{o}"));
    assert_eq!(gateway, "10.90.0.1");
    let nic = |vm: &str| {
        let text = host(o, &format!("nic_{vm}"));
        let field = |k: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in vt info {vm}: {text}"))
                .to_string()
        };
        (field("mac="), field("ip="))
    };
    let (mac_a, ip_a) = nic("a");
    let (mac_b, ip_b) = nic("b");
    assert_ne!(ip_a, ip_b);
    for (vm, mac, ip, other, other_ip) in [
        ("A", &mac_a, &ip_a, "b", &ip_b),
        ("B", &mac_b, &ip_b, "a", &ip_a),
    ] {
        console(vm, "VT-GUEST udhcpc=0");
        console(vm, &format!("VT-GUEST mac={mac}"));
        console(
            vm,
            &format!("VT-GUEST lease ip={ip} mask=24 router={gateway} dns={gateway}"),
        );
        console(vm, &format!("VT-GUEST addr={ip}/24"));
        console(vm, "VT-GUEST dhcp_gw=0");
        console(vm, &format!("VT-GUEST resolved {other}={other_ip}"));
        // dnsmasq's lease file has it, for this VM.
        let vm = vm.to_lowercase();
        assert!(
            o.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(..5) == Some(&["LEASES", ip.as_str(), mac.as_str(), &vm, &vm][..])
            }),
            "no lease {ip} {mac} for {vm} in vt net leases:\n{o}"
        );
    }
}

//! vtd's networks, each test with a vtd in a network namespace of its own
//! (bridges, dnsmasq and nftables tables stay inside it): rules present
//! while a VM runs and gone when it stops, rebuilt after `kill -9` of
//! vtd, fail closed, and bad input refused with nothing half-applied.

mod common;

use std::process::{Command, Output};

use api::network::NetworkStatus;
use common::{require_kvm, Vtd};

fn have_tools() -> bool {
    let ok = ["nft", "dnsmasq"]
        .iter()
        .all(|t| network::find_program(t).is_some());
    if !ok {
        eprintln!("skipped: needs nft and dnsmasq (scripts/setup-host.sh)");
    }
    ok
}

/// `args` run in vtd's network namespace.
fn in_ns(vtd: &Vtd, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={}", vtd.netns_path().unwrap()))
        .arg("--")
        .args(args)
        .output()
        .unwrap()
}

/// `nft list table FAMILY vtd` in vtd's namespace (None: no such table).
fn table(vtd: &Vtd, family: &str) -> Option<String> {
    let nft = network::find_program("nft").unwrap();
    let o = in_ns(
        vtd,
        &[nft.to_str().unwrap(), "list", "table", family, "vtd"],
    );
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn link_exists(vtd: &Vtd, name: &str) -> bool {
    in_ns(vtd, &["ip", "link", "show", name]).status.success()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: Output, code: i32, text: &str) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{e}");
    assert!(e.contains(text), "wanted '{text}' in: {e}");
}

fn net(vtd: &Vtd, name: &str) -> NetworkStatus {
    serde_json::from_value(vtd.expect("GET", &format!("/networks/{name}"), None, 200)).unwrap()
}

#[test]
fn rules_follow_the_vm_and_survive_a_vtd_kill() {
    require_kvm!();
    if !have_tools() {
        return;
    }
    let mut vtd = Vtd::start_in_netns("netrules", "vtdummy0");
    ok(vtd.vt(&[
        "net",
        "define",
        "lan",
        "--mode",
        "isolated",
        "--subnet",
        "10.88.0.0/24",
    ]));
    // Defined only: nothing on the host yet.
    assert!(!link_exists(&vtd, "vtbr-lan"));
    assert!(table(&vtd, "bridge").is_none());
    ok(vtd.vt(&["net", "start", "lan"]));
    let s = net(&vtd, "lan");
    assert!(s.active && link_exists(&vtd, "vtbr-lan"));
    assert!(s.dnsmasq_pid.is_some(), "dnsmasq runs");
    let addr =
        String::from_utf8_lossy(&in_ns(&vtd, &["ip", "-4", "addr", "show", "vtbr-lan"]).stdout)
            .into_owned();
    assert!(addr.contains("10.88.0.1/24"), "{addr}");
    // An isolated network: nothing forwarded off its bridge.
    let inet = table(&vtd, "inet").expect("inet table");
    assert!(inet.contains("iifname \"vtbr-lan\" drop"), "{inet}");

    for vm in ["a", "b"] {
        ok(vtd.vt(&[
            "create",
            "--name",
            vm,
            "--ram",
            "16",
            "--network",
            "network=lan",
        ]));
    }
    let a = vtd.status("a").definition.networks[0].clone();
    let b = vtd.status("b").definition.networks[0].clone();
    let (mac_a, ip_a) = (a.mac.unwrap(), a.ip.unwrap());
    assert_eq!(ip_a.to_string(), "10.88.0.2");
    assert_eq!(b.ip.unwrap().to_string(), "10.88.0.3");
    // Both fixed leases are in dnsmasq's configuration.
    let conf = std::fs::read_to_string(vtd.state.join("networks/lan/dnsmasq.conf")).unwrap();
    assert!(
        conf.contains(&format!("dhcp-host={mac_a},{ip_a},a\n")),
        "{conf}"
    );
    assert!(!table(&vtd, "bridge").unwrap().contains(&mac_a));

    ok(vtd.vt(&["start", "a"]));
    ok(vtd.vt(&["start", "b"]));
    let br = table(&vtd, "bridge").unwrap();
    assert!(br.contains(&format!("ether saddr != {mac_a} drop")), "{br}");
    assert!(br.contains(&format!("ip saddr != {ip_a} drop")), "{br}");
    // VM-to-VM denied on an isolated network (the switch is off)...
    assert!(br.contains("oifname {") && br.contains(" drop"), "{br}");
    let forward_drop = |t: &str| {
        t.lines()
            .any(|l| l.contains("iifname {") && l.contains("oifname {"))
    };
    assert!(forward_drop(&br));
    // ...and allowed once vm_inter_vm_traffic is on: rebuilt at once.
    ok(vtd.vt(&["policy", "set", "vm_inter_vm_traffic", "on"]));
    assert!(!forward_drop(&table(&vtd, "bridge").unwrap()));
    ok(vtd.vt(&["policy", "set", "vm_inter_vm_traffic", "off"]));
    assert!(forward_drop(&table(&vtd, "bridge").unwrap()));

    // The network is in use: not stopped, not undefined.
    err(vtd.vt(&["net", "stop", "lan"]), 5, "running VM(s) a, b");
    err(vtd.vt(&["net", "undefine", "lan"]), 5, "is active");

    // kill -9 of vtd: bridge, dnsmasq and rules stay; a new vtd takes
    // them back and rebuilds the same rules.
    let before = table(&vtd, "bridge").unwrap();
    // dnsmasq was restarted with each new VM's lease: its pid now.
    let dnsmasq = net(&vtd, "lan").dnsmasq_pid.unwrap();
    vtd.kill9();
    assert_eq!(
        table(&vtd, "bridge").unwrap(),
        before,
        "rules changed while vtd was down"
    );
    assert!(common::pid_alive(dnsmasq) && link_exists(&vtd, "vtbr-lan"));
    vtd.restart();
    assert_eq!(table(&vtd, "bridge").unwrap(), before);
    assert_eq!(
        net(&vtd, "lan").dnsmasq_pid,
        Some(dnsmasq),
        "dnsmasq adopted, not restarted"
    );

    // Stop: that VM's rules go, the other's stay.
    ok(vtd.vt(&["stop", "a"]));
    let br = table(&vtd, "bridge").unwrap();
    assert!(
        !br.contains(&mac_a) && br.contains(b.mac.as_deref().unwrap()),
        "{br}"
    );
    ok(vtd.vt(&["stop", "b"]));
    // Still defined on the network: not undefined.
    ok(vtd.vt(&["net", "stop", "lan"]));
    assert!(table(&vtd, "bridge").is_none() && table(&vtd, "inet").is_none());
    assert!(!link_exists(&vtd, "vtbr-lan"));
    assert!(
        !std::path::Path::new(&format!("/proc/{dnsmasq}")).exists() || !common::pid_alive(dnsmasq)
    );
    err(
        vtd.vt(&["net", "undefine", "lan"]),
        5,
        "in use by VM(s) a, b",
    );
    ok(vtd.vt(&["undefine", "a"]));
    ok(vtd.vt(&["undefine", "b"]));
    ok(vtd.vt(&["net", "undefine", "lan"]));
    assert!(!vtd.state.join("networks/lan").exists());
}

/// Interfaces, nftables tables and dnsmasq processes in vtd's namespace
/// (what a refused request must not leave behind).
fn host_side(vtd: &Vtd) -> (String, Option<String>, Option<String>, Vec<u32>) {
    let links = ok(in_ns(vtd, &["ip", "-o", "link", "show"]));
    let links: Vec<&str> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    let dnsmasq: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| p.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let dir = vtd.dir.as_os_str().as_encoded_bytes();
            let mentions = |n: &[u8]| cmd.windows(n.len()).any(|w| w == n);
            mentions(dir) && mentions(b"dnsmasq")
        })
        .collect();
    (
        links.join(" "),
        table(vtd, "bridge"),
        table(vtd, "inet"),
        dnsmasq,
    )
}

#[test]
fn bad_networks_are_refused_with_nothing_half_applied() {
    if !have_tools() {
        return;
    }
    // An nft that fails while DIR/nft-fails exists; dnsmasq missing for
    // networks with DHCP.
    let mut vtd = Vtd::start_in_netns("netbad", "vtdummy0");
    let wrapper = vtd.dir.join("nft");
    let flag = vtd.dir.join("nft-fails");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ -e {} ] && {{ echo 'simulated nft failure' >&2; exit 1; }}\nexec {} \"$@\"\n",
            flag.display(),
            network::find_program("nft").unwrap().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    vtd.kill9();
    vtd.set_args(&[
        "--nft",
        wrapper.to_str().unwrap(),
        "--dnsmasq",
        "/nonexistent/dnsmasq",
    ]);
    vtd.restart();
    // A host route: the dummy bridge gets 10.99.0.1/16.
    ok(in_ns(
        &vtd,
        &["ip", "addr", "add", "10.99.0.1/16", "dev", "vtdummy0"],
    ));
    ok(in_ns(&vtd, &["ip", "link", "set", "vtdummy0", "up"]));
    let clean = host_side(&vtd);

    ok(vtd.vt(&[
        "net",
        "define",
        "one",
        "--mode",
        "isolated",
        "--subnet",
        "10.50.0.0/24",
    ]));
    let snapshot = vtd.snapshot();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--mode", "isolated", "--subnet", "10.50.0.0/16"],
            5,
            "overlaps network 'one'",
        ),
        (
            &["--mode", "nat", "--subnet", "10.99.3.0/24"],
            5,
            "collides with the host route 10.99.0.0/16 on vtdummy0",
        ),
        (
            &["--mode", "isolated", "--subnet", "10.51.0.1/24"],
            2,
            "host bits set",
        ),
        (&["--mode", "isolated"], 2, "needs --subnet"),
        (&["--mode", "bridge"], 2, "needs --bridge"),
        (
            &[
                "--mode",
                "isolated",
                "--subnet",
                "10.52.0.0/24",
                "--bridge",
                "vtdummy0",
            ],
            5,
            "vtdummy0 already exists",
        ),
    ];
    for (args, code, text) in cases {
        let mut a = vec!["net", "define", "two"];
        a.extend_from_slice(args);
        err(vtd.vt(&a), *code, text);
    }
    assert_eq!(
        vtd.snapshot(),
        snapshot,
        "a refused define changed the state"
    );
    err(
        vtd.vt(&[
            "net",
            "define",
            "one",
            "--mode",
            "isolated",
            "--subnet",
            "10.60.0.0/24",
        ]),
        5,
        "exists",
    );

    // DHCP without dnsmasq: refused before anything is made.
    err(
        vtd.vt(&["net", "start", "one"]),
        1,
        "dnsmasq (/nonexistent/dnsmasq) is not installed",
    );
    assert_eq!(host_side(&vtd), clean);
    assert!(!net(&vtd, "one").active);

    // Rules that cannot be loaded: the network does not stay up.
    ok(vtd.vt(&[
        "net",
        "define",
        "quiet",
        "--mode",
        "isolated",
        "--subnet",
        "10.70.0.0/24",
        "--dhcp",
        "off",
    ]));
    std::fs::write(&flag, b"").unwrap();
    err(
        vtd.vt(&["net", "start", "quiet"]),
        1,
        "simulated nft failure",
    );
    assert_eq!(host_side(&vtd), clean, "half-applied network start");
    assert!(!net(&vtd, "quiet").active);
    std::fs::remove_file(&flag).unwrap();
    ok(vtd.vt(&["net", "start", "quiet"]));
    assert!(table(&vtd, "bridge").is_some());

    // A VM on an inactive network, or one that does not exist.
    err(
        vtd.vt(&[
            "create",
            "--name",
            "x",
            "--ram",
            "16",
            "--network",
            "network=nosuch",
        ]),
        1,
        "no network named 'nosuch'",
    );
    ok(vtd.vt(&[
        "create",
        "--name",
        "x",
        "--ram",
        "16",
        "--network",
        "network=one",
    ]));
    err(
        vtd.vt(&["start", "x"]),
        5,
        "network 'one' is not active (vt net start one)",
    );
    // Addresses: outside the subnet, the gateway, taken.
    err(
        vtd.vt(&[
            "create",
            "--name",
            "y",
            "--ram",
            "16",
            "--network",
            "network=quiet,ip=10.1.1.1",
        ]),
        1,
        "is not a VM address",
    );
    err(
        vtd.vt(&[
            "create",
            "--name",
            "y",
            "--ram",
            "16",
            "--network",
            "network=quiet,ip=10.70.0.1",
        ]),
        1,
        "is not a VM address",
    );
    ok(vtd.vt(&[
        "create",
        "--name",
        "y",
        "--ram",
        "16",
        "--network",
        "network=quiet,ip=10.70.0.9,peers=x,z",
    ]));
    let y = vtd.status("y").definition.networks[0].clone();
    assert_eq!(y.peers, ["x", "z"]);
    err(
        vtd.vt(&[
            "create",
            "--name",
            "w",
            "--ram",
            "16",
            "--network",
            "network=quiet,ip=10.70.0.9",
        ]),
        5,
        "another NIC's",
    );

    // Fail closed: no rules, no VM.
    if common::have_kvm() {
        let before = table(&vtd, "bridge");
        std::fs::write(&flag, b"").unwrap();
        err(
            vtd.vt(&["start", "y"]),
            1,
            "VM 'y' not started: its network rules could not be loaded (fail closed)",
        );
        assert_eq!(vtd.status("y").state, api::manager::VmState::Stopped);
        assert_eq!(table(&vtd, "bridge"), before);
        std::fs::remove_file(&flag).unwrap();
        ok(vtd.vt(&["start", "y"]));
        assert!(table(&vtd, "bridge")
            .unwrap()
            .contains(y.mac.as_deref().unwrap()));
        ok(vtd.vt(&["stop", "y"]));
    }
    ok(vtd.vt(&["undefine", "y"]));
    ok(vtd.vt(&["net", "stop", "quiet"]));
    assert_eq!(host_side(&vtd), clean);
}

/// A named network namespace standing for a guest or the outside world,
/// removed when dropped.
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Ns {
        let ns = Ns(format!("vtt{}{tag}", std::process::id()));
        assert!(Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .unwrap()
            .success());
        ns
    }

    /// A veth pair: `outer` in vtd's namespace, `eth0` in this one.
    fn link(&self, vtd: &Vtd, outer: &str) {
        let args = [
            "ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", &self.0,
        ];
        ok(in_ns(vtd, &args));
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn a_nat_network_leases_resolves_and_masquerades() {
    if !have_tools() || network::find_program("busybox").is_none() {
        eprintln!("skipped: needs busybox");
        return;
    }
    let vtd = Vtd::start_in_netns("netnat", "vtdummy0");
    // "The internet": a namespace at 192.0.2.2 behind vtd's uplink, with
    // no route back to the VMs' subnet (only masquerading gets replies home).
    let wan = Ns::new("wan");
    wan.link(&vtd, "up0");
    ok(in_ns(
        &vtd,
        &["ip", "addr", "add", "192.0.2.1/24", "dev", "up0"],
    ));
    ok(in_ns(&vtd, &["ip", "link", "set", "up0", "up"]));
    ok(wan.run(&["ip", "addr", "add", "192.0.2.2/24", "dev", "eth0"]));
    ok(wan.run(&["ip", "link", "set", "eth0", "up"]));

    ok(vtd.vt(&[
        "net",
        "define",
        "out",
        "--mode",
        "nat",
        "--subnet",
        "10.89.0.0/24",
    ]));
    ok(vtd.vt(&["net", "start", "out"]));
    let inet = table(&vtd, "inet").unwrap();
    assert!(
        inet.contains("ip saddr 10.89.0.0/24 ip daddr != 10.89.0.0/24 masquerade"),
        "{inet}"
    );
    // A defined VM's NIC: its MAC gets its fixed lease. A namespace with
    // that MAC on the bridge stands for the guest.
    ok(vtd.vt(&[
        "create",
        "--name",
        "g",
        "--ram",
        "16",
        "--network",
        "network=out",
    ]));
    let nic = vtd.status("g").definition.networks[0].clone();
    let mac = nic.mac.unwrap();
    let guest = Ns::new("g");
    guest.link(&vtd, "gport");
    ok(in_ns(
        &vtd,
        &["ip", "link", "set", "gport", "master", "vtbr-out", "up"],
    ));
    ok(guest.run(&["ip", "link", "set", "eth0", "address", &mac]));
    ok(guest.run(&["ip", "link", "set", "eth0", "up"]));
    let script = vtd.dir.join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nip addr add \"$ip/$mask\" dev \"$interface\"\nip route add default via \"$router\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bb = network::find_program("busybox").unwrap();
    let bb = bb.to_str().unwrap();
    let dhcp = guest.run(&[
        bb,
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-t",
        "5",
        "-T",
        "1",
        "-s",
        script.to_str().unwrap(),
    ]);
    assert!(
        dhcp.status.success(),
        "{}{}\ndnsmasq.log: {}",
        String::from_utf8_lossy(&dhcp.stdout),
        String::from_utf8_lossy(&dhcp.stderr),
        std::fs::read_to_string(vtd.state.join("networks/out/dnsmasq.log")).unwrap_or_default()
    );
    let addr = ok(guest.run(&["ip", "-4", "addr", "show", "eth0"]));
    assert!(addr.contains(&format!("{}/24", nic.ip.unwrap())), "{addr}");
    // vt net leases: the lease, with the VM it is for.
    let leases = ok(vtd.vt(&["net", "leases", "out"]));
    assert!(
        leases
            .lines()
            .any(|l| l.contains("10.89.0.2") && l.contains(&mac) && l.contains(" g ")),
        "{leases}"
    );
    // dnsmasq resolves the VM's name.
    let look = guest.run(&[bb, "nslookup", "g", "10.89.0.1"]);
    let look = String::from_utf8_lossy(&look.stdout);
    assert!(look.contains("10.89.0.2"), "{look}");
    // Out through the uplink, masqueraded.
    let ping = guest.run(&[bb, "ping", "-c", "1", "-W", "2", "192.0.2.2"]);
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // Nothing from outside gets in.
    let ping = wan.run(&["ip", "route", "add", "10.89.0.0/24", "via", "192.0.2.1"]);
    assert!(ping.status.success());
    let ping = wan.run(&[bb, "ping", "-c", "1", "-W", "1", "10.89.0.2"]);
    assert!(!ping.status.success(), "an outside host reached a VM");

    ok(vtd.vt(&["undefine", "g"]));
    ok(vtd.vt(&["net", "stop", "out"]));
}

/// A vtd (in its own network namespace) that group 4242 may use, with
/// an isolated network `lan` on `subnet`, defined, not started.
fn vtd_with_lan(tag: &str, subnet: &str) -> Vtd {
    let mut vtd = Vtd::start_in_netns(tag, "vtdummy0");
    vtd.kill9();
    vtd.set_args(&["--socket-group", "4242"]);
    vtd.restart();
    ok(vtd.vt(&[
        "net", "define", "lan", "--mode", "isolated", "--subnet", subnet, "--dhcp", "off",
    ]));
    vtd
}

#[test]
fn peers_open_a_way_only_between_vms_of_one_owner() {
    require_kvm!();
    if !have_tools() || !jail::is_root() {
        return;
    }
    let vtd = vtd_with_lan("netpeers", "10.90.0.0/24");
    ok(vtd.vt(&["net", "start", "lan"]));
    ok(vtd.vt(&[
        "create",
        "--name",
        "victim",
        "--ram",
        "16",
        "--network",
        "network=lan",
    ]));
    // Another user's VM names root's VM as its peer: no way opens.
    let sock = vtd.socket.clone();
    ok(vtd.vt_as(
        4242,
        &sock,
        &[
            "create",
            "--name",
            "intruder",
            "--ram",
            "16",
            "--network",
            "network=lan,peers=victim",
        ],
    ));
    for vm in ["victim", "intruder"] {
        ok(vtd.vt(&["start", vm]));
    }
    let forward = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.contains("oifname") && l.contains("accept"))
            .map(String::from)
            .collect()
    };
    assert!(forward(&table(&vtd, "bridge").unwrap()).is_empty());
    // Root's own VM naming it does.
    ok(vtd.vt(&[
        "create",
        "--name",
        "friend",
        "--ram",
        "16",
        "--network",
        "network=lan,peers=victim",
    ]));
    ok(vtd.vt(&["start", "friend"]));
    assert_eq!(forward(&table(&vtd, "bridge").unwrap()).len(), 2);
    for vm in ["victim", "intruder", "friend"] {
        ok(vtd.vt(&["stop", vm]));
    }
    ok(vtd.vt(&["net", "stop", "lan"]));
}

/// A refused request: exit status not 0, `text` in the message.
fn refused(o: Output, text: &str) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "accepted, wanted '{text}'");
    assert!(e.contains(text), "wanted '{text}' in: {e}");
}

#[test]
fn nics_are_checked_at_define_and_start() {
    if !jail::is_root() {
        return;
    }
    let vtd = vtd_with_lan("netnics", "10.91.0.0/24");
    let create = |name: &str, nic: &str| {
        vtd.vt(&["create", "--name", name, "--ram", "16", "--network", nic])
    };
    // A vtd network's bridge is reached with network=, never bridge=.
    refused(
        create("b1", "bridge=vtbr-lan"),
        "bridge vtbr-lan is network 'lan's: use network=lan",
    );
    // MACs: two hex digits an octet; stored lowercase; the same MAC
    // written another way is still taken.
    refused(
        create("m0", "network=lan,mac=52:54:00:+a:00:01"),
        "not a unicast MAC",
    );
    ok(create("m1", "network=lan,mac=52:54:00:0A:00:01"));
    let m1 = vtd.status("m1").definition.networks[0].clone();
    assert_eq!(m1.mac.as_deref(), Some("52:54:00:0a:00:01"));
    refused(
        create("m2", "network=lan,mac=52:54:00:0a:00:01"),
        "is another NIC's",
    );
    // Two VM names whose taps would share a name (FNV-1a 32 collides on
    // these): the second is refused, not given the first one's tap.
    ok(create("liquid", "network=lan"));
    refused(
        create("costarring", "network=lan"),
        "collide with VM 'liquid'",
    );
    // Bridge names are plain interface names.
    vtd.expect(
        "POST",
        "/networks",
        Some(r#"{"name":"evil","mode":"bridge","bridge":"x\nlisten-address=0.0.0.0"}"#),
        400,
    );
    vtd.expect(
        "POST",
        "/networks",
        Some(r#"{"name":"evil","mode":"bridge","bridge":"-x"}"#),
        400,
    );
    // bridge= NICs: root's VMs only, unless vm_host_bridges is on.
    ok(create("r1", "bridge=vtdummy0"));
    let sock = vtd.socket.clone();
    let user = |name: &str| {
        vtd.vt_as(
            4242,
            &sock,
            &[
                "create",
                "--name",
                name,
                "--ram",
                "16",
                "--network",
                "bridge=vtdummy0",
            ],
        )
    };
    refused(
        user("u1"),
        "refused by policy (vt policy set vm_host_bridges on",
    );
    ok(vtd.vt(&["policy", "set", "vm_host_bridges", "on"]));
    ok(user("u1"));
    // A bridge that becomes a vtd network's after the define: refused at
    // start.
    ok(vtd.vt(&[
        "net", "define", "up", "--mode", "bridge", "--bridge", "vtdummy0",
    ]));
    refused(
        vtd.vt(&["start", "r1"]),
        "bridge vtdummy0 is network 'up's: use network=up",
    );
}

/// A running VM's pending change holds its NICs' addresses (taken for
/// every other VM), and two edits at once cannot give one address to
/// two VMs (the VM map stays locked from the check to the write).
#[test]
fn pending_nics_are_taken_and_edits_do_not_share_an_address() {
    require_kvm!();
    if !have_tools() || !jail::is_root() {
        return;
    }
    let vtd = vtd_with_lan("netpending", "10.93.0.0/24");
    ok(vtd.vt(&["net", "start", "lan"]));
    for vm in ["a", "b", "c"] {
        ok(vtd.vt(&[
            "create",
            "--name",
            vm,
            "--ram",
            "16",
            "--network",
            "network=lan",
        ]));
    }
    ok(vtd.vt(&["start", "a"]));
    let ip = |ip: &str| format!(r#"{{"networks":[{{"network":"lan","ip":"{ip}"}}]}}"#);
    vtd.expect("PATCH", "/vms/a", Some(&ip("10.93.0.50")), 200);
    assert!(vtd.status("a").pending_changes);
    let r = vtd.call("PATCH", "/vms/b", Some(&ip("10.93.0.50")));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("another NIC's"), "{}", r.text());
    for round in 0..10 {
        let want = ip(&format!("10.93.0.{}", 60 + round));
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let b = s.spawn(|| vtd.call("PATCH", "/vms/b", Some(&want)).status);
            let c = s.spawn(|| vtd.call("PATCH", "/vms/c", Some(&want)).status);
            vec![b.join().unwrap(), c.join().unwrap()]
        });
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, [200, 409], "round {round}");
    }
    ok(vtd.vt(&["stop", "a"]));
    ok(vtd.vt(&["net", "stop", "lan"]));
}

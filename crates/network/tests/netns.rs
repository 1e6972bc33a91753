//! The ruleset against real packets: a bridge in a network namespace of
//! the test's own, three "VMs" (namespaces of their own, each behind a
//! veth whose host end stands for its tap), pings between them with
//! busybox. No packet leaves the namespaces made here.

use std::net::Ipv4Addr;
use std::process::Command;

use api::network::{NetMode, Subnet};
use network::nft::{self, NetRules, Port};

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["nft", "ip", "busybox"]
        .iter()
        .all(|t| network::find_program(t).is_some());
    if !root || !tools {
        eprintln!("skipped: needs root, nft, ip and busybox");
    }
    root && tools
}

fn sh(args: &[&str]) {
    let out = Command::new(network::find_program(args[0]).unwrap())
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named namespace standing for a VM, removed when dropped.
struct Guest {
    ns: String,
    tap: String,
    mac: String,
    ip: Ipv4Addr,
    name: String,
}

impl Guest {
    fn new(tag: &str, n: u8, bridge: &str) -> Guest {
        let g = Guest {
            ns: format!("vtt{}{tag}", std::process::id()),
            tap: format!("vtt{tag}{n}"),
            mac: format!("52:54:00:77:00:{n:02x}"),
            ip: Ipv4Addr::new(10, 77, 0, n),
            name: format!("vm-{tag}"),
        };
        sh(&["ip", "netns", "add", &g.ns]);
        sh(&[
            "ip", "link", "add", &g.tap, "type", "veth", "peer", "name", "eth0", "netns", &g.ns,
        ]);
        sh(&["ip", "link", "set", &g.tap, "master", bridge, "up"]);
        g.exec(&["ip", "link", "set", "eth0", "address", &g.mac]);
        g.exec(&["ip", "addr", "add", &format!("{}/24", g.ip), "dev", "eth0"]);
        g.exec(&["ip", "link", "set", "eth0", "up"]);
        g.exec(&["ip", "link", "set", "lo", "up"]);
        g
    }

    fn exec(&self, args: &[&str]) {
        let mut a = vec!["ip", "netns", "exec", &self.ns];
        a.extend_from_slice(args);
        sh(&a);
    }

    /// One ping to `to` (from `from`, an address of this guest); whether
    /// it was answered.
    fn ping_from(&self, to: Ipv4Addr, from: Option<&str>) -> bool {
        let to = to.to_string();
        let mut a = vec![
            "netns", "exec", &self.ns, "busybox", "ping", "-c", "1", "-W", "1",
        ];
        if let Some(f) = from {
            a.extend_from_slice(&["-I", f]);
        }
        a.push(&to);
        // Stale neighbours would hide what ARP does now.
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns, "ip", "neigh", "flush", "all"])
            .status();
        Command::new(network::find_program("ip").unwrap())
            .args(&a)
            .output()
            .unwrap()
            .status
            .success()
    }

    fn ping(&self, to: Ipv4Addr) -> bool {
        self.ping_from(to, None)
    }

    fn port(&self, peers: &[&str]) -> Port {
        Port {
            tap: self.tap.clone(),
            mac: self.mac.clone(),
            ip: Some(self.ip),
            vm: self.name.clone(),
            peers: peers.iter().map(|p| p.to_string()).collect(),
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn rules(guests: &[(&Guest, &[&str])], inter_vm: bool) -> NetRules {
    NetRules {
        name: "t".into(),
        mode: NetMode::Isolated,
        bridge: "vtbr-t".into(),
        subnet: Some(Subnet::parse("10.77.0.0/24").unwrap()),
        inter_vm,
        ports: guests.iter().map(|(g, p)| g.port(p)).collect(),
    }
}

#[test]
fn vms_reach_the_gateway_not_each_other_and_cannot_spoof() {
    if !can_run() {
        return;
    }
    // Everything below runs in a network namespace of this thread's own
    // (commands it spawns inherit it): vtd's "host" side.
    std::thread::spawn(|| {
        // SAFETY: unshare affects only this thread's namespaces.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        sh(&["ip", "link", "set", "lo", "up"]);
        let gw = Ipv4Addr::new(10, 77, 0, 1);
        assert!(network::link::make_bridge("vtbr-t", Some((gw, 24))).unwrap());
        let a = Guest::new("a", 2, "vtbr-t");
        let b = Guest::new("b", 3, "vtbr-t");
        let c = Guest::new("c", 4, "vtbr-t");
        // Without rules everything passes: the pings below can succeed.
        assert!(a.ping(b.ip), "a bridge without rules forwards");
        assert!(a.ping(gw));

        // Isolated, VM-to-VM denied.
        nft::apply(&nft::ruleset(&[rules(
            &[(&a, &[]), (&b, &[]), (&c, &[])],
            false,
        )]))
        .unwrap();
        assert!(nft::list("bridge").is_some_and(|t| t.contains(&a.tap)));
        assert!(a.ping(gw), "the gateway is reachable");
        assert!(b.ping(gw));
        assert!(!a.ping(b.ip), "a reached b");
        assert!(!c.ping(a.ip), "c reached a");

        // peers: a names b; c stays apart.
        nft::apply(&nft::ruleset(&[rules(
            &[(&a, &["vm-b"]), (&b, &[]), (&c, &[])],
            false,
        )]))
        .unwrap();
        assert!(a.ping(b.ip), "peers a and b");
        assert!(b.ping(a.ip));
        assert!(!a.ping(c.ip), "c is nobody's peer");

        // Another source address: dropped.
        a.exec(&["ip", "addr", "add", "10.77.0.99/24", "dev", "eth0"]);
        assert!(
            !a.ping_from(gw, Some("10.77.0.99")),
            "a spoofed IP got through"
        );
        assert!(a.ping_from(gw, Some("10.77.0.2")));
        a.exec(&["ip", "addr", "del", "10.77.0.99/24", "dev", "eth0"]);
        // Another MAC: dropped (ARP and IP alike).
        a.exec(&["ip", "link", "set", "eth0", "address", "52:54:00:77:00:99"]);
        assert!(!a.ping(gw), "a spoofed MAC got through");
        a.exec(&["ip", "link", "set", "eth0", "address", &a.mac]);
        assert!(a.ping(gw));
        // Another guest's address and MAC together: still a's tap, dropped.
        a.exec(&["ip", "link", "set", "eth0", "address", &b.mac]);
        a.exec(&["ip", "addr", "add", "10.77.0.3/24", "dev", "eth0"]);
        assert!(!a.ping_from(gw, Some("10.77.0.3")), "a posed as b");
        a.exec(&["ip", "addr", "del", "10.77.0.3/24", "dev", "eth0"]);
        a.exec(&["ip", "link", "set", "eth0", "address", &a.mac]);

        // VM-to-VM allowed on the network: all pass.
        nft::apply(&nft::ruleset(&[rules(
            &[(&a, &[]), (&b, &[]), (&c, &[])],
            true,
        )]))
        .unwrap();
        assert!(a.ping(c.ip) && b.ping(c.ip));

        // An isolated network has no way out: nothing forwarded off the bridge.
        let out = nft::list("inet").unwrap();
        assert!(out.contains("iifname \"vtbr-t\" drop"), "{out}");

        nft::remove().unwrap();
        assert!(nft::list("bridge").is_none() && nft::list("inet").is_none());
        network::link::delete("vtbr-t").unwrap();
        assert!(!network::link::exists("vtbr-t"));
    })
    .join()
    .unwrap();
}

/// Whether `from` reaches `to` through the gateway (a host route to `to`
/// via the gateway in both guests: the host routes each packet back onto
/// the bridge).
fn ping_via_gateway(from: &Guest, to: &Guest) -> bool {
    for (g, other) in [(from, to), (to, from)] {
        let dest = format!("{}/32", other.ip);
        g.exec(&["ip", "route", "replace", &dest, "via", "10.77.0.1"]);
    }
    let ok = from.ping(to.ip);
    for (g, other) in [(from, to), (to, from)] {
        g.exec(&["ip", "route", "del", &format!("{}/32", other.ip)]);
    }
    ok
}

#[test]
fn vms_cannot_reach_each_other_through_the_gateway() {
    if !can_run() {
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare affects only this thread's namespaces.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        sh(&["ip", "link", "set", "lo", "up"]);
        // Routing on in this namespace (not the machine's), and no ICMP
        // redirects that would send the guests around the gateway.
        sh(&["busybox", "sysctl", "-w", "net.ipv4.ip_forward=1"]);
        sh(&[
            "busybox",
            "sysctl",
            "-w",
            "net.ipv4.conf.all.send_redirects=0",
        ]);
        sh(&[
            "busybox",
            "sysctl",
            "-w",
            "net.ipv4.conf.default.send_redirects=0",
        ]);
        let gw = Ipv4Addr::new(10, 77, 0, 1);
        assert!(network::link::make_bridge("vtbr-t", Some((gw, 24))).unwrap());
        let a = Guest::new("ha", 2, "vtbr-t");
        let b = Guest::new("hb", 3, "vtbr-t");
        let c = Guest::new("hc", 4, "vtbr-t");
        // The way exists: without rules the host routes a's packets to b.
        assert!(ping_via_gateway(&a, &b), "no hairpin route to test");

        nft::apply(&nft::ruleset(&[rules(
            &[(&a, &["vm-hb"]), (&b, &[]), (&c, &[])],
            false,
        )]))
        .unwrap();
        assert!(!a.ping(c.ip), "a reached c on the bridge");
        assert!(!ping_via_gateway(&a, &c), "a reached c through the gateway");
        assert!(!ping_via_gateway(&c, &b), "c reached b through the gateway");
        assert!(
            ping_via_gateway(&a, &b),
            "peers a and b, through the gateway"
        );
        assert!(a.ping(gw) && c.ping(gw), "the gateway is reachable");

        // VM-to-VM allowed: the gateway's way is open too.
        nft::apply(&nft::ruleset(&[rules(
            &[(&a, &[]), (&b, &[]), (&c, &[])],
            true,
        )]))
        .unwrap();
        assert!(ping_via_gateway(&a, &c));
        nft::remove().unwrap();
        network::link::delete("vtbr-t").unwrap();
    })
    .join()
    .unwrap();
}

#[test]
fn a_bad_ruleset_changes_nothing() {
    if !can_run() {
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare affects only this thread's namespaces.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        let good = NetRules {
            name: "t".into(),
            mode: NetMode::Isolated,
            bridge: "vtbr-t".into(),
            subnet: Some(Subnet::parse("10.77.0.0/24").unwrap()),
            inter_vm: false,
            ports: vec![Port {
                tap: "tapgood".into(),
                mac: "52:54:00:00:00:01".into(),
                ip: Some(Ipv4Addr::new(10, 77, 0, 2)),
                vm: "a".into(),
                peers: vec![],
            }],
        };
        nft::apply(&nft::ruleset(std::slice::from_ref(&good))).unwrap();
        let before = nft::list("bridge").unwrap();
        let mut bad = good;
        bad.ports[0].tap = "tapbad".into();
        bad.ports[0].mac = "not-a-mac".into();
        let e = nft::apply(&nft::ruleset(&[bad])).unwrap_err();
        assert!(e.starts_with("nftables:"), "{e}");
        assert_eq!(nft::list("bridge").unwrap(), before, "half-applied");
    })
    .join()
    .unwrap();
}

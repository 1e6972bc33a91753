//! The nftables ruleset `vtd` owns: table `bridge vtd` (layer 2, every
//! frame a VM's tap sends) and table `inet vtd` (what leaves a network,
//! NAT). Built whole from `vtd`'s state as libnftables JSON
//! (`libnftables-json(5)`) and loaded with `nft -j -f` (from stdin) in one
//! transaction: add-delete-add of each table, so the old ruleset is
//! replaced atomically (no moment without rules) and a failure leaves the
//! old one in force.
//!
//! Per NIC (a tap on a network's bridge), in `bridge vtd prerouting`:
//! source MAC must be the NIC's; ARP sender MAC and IP must be the NIC's
//! (or 0.0.0.0, an ARP probe); IPv4 source must be the NIC's address
//! (0.0.0.0 only for a DHCP request); anything that is neither IPv4 nor
//! ARP (IPv6, VLAN tags, other ether types) is dropped, so neither ND
//! spoofing nor an unfiltered protocol gets through.
//!
//! Per network that denies VM-to-VM traffic, in `bridge vtd forward`:
//! a frame from one NIC's tap to another's is dropped, unless the two
//! VMs are peers. Traffic to the host (the gateway) is not forwarded
//! traffic and passes. The same pairs are dropped in `inet vtd forward`
//! when the host routes a packet from the bridge back onto it (a VM
//! sending to another's address through the gateway's MAC).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use api::network::{NetMode, Subnet};
use serde_json::{json, Value};

/// The name of both tables.
pub const TABLE: &str = "vtd";

static PROGRAM: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Uses `program` (a name searched in PATH, or a path) instead of `nft`;
/// only the first call counts.
pub fn set_program(program: &str) {
    let _ = PROGRAM.set(program.to_string());
}

/// The nft program in use.
pub fn program() -> &'static str {
    PROGRAM.get().map_or("nft", |s| s.as_str())
}

/// One VM NIC on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The tap's interface name.
    pub tap: String,
    /// `52:54:00:12:34:56`.
    pub mac: String,
    /// Its only allowed IPv4 source (None: MAC filtering only, IPv4 from
    /// any address; a `bridge` network without a subnet).
    pub ip: Option<Ipv4Addr>,
    /// The VM.
    pub vm: String,
    /// VMs it may talk to where VM-to-VM traffic is denied.
    pub peers: Vec<String>,
}

/// One started network and the NICs on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRules {
    pub name: String,
    pub mode: NetMode,
    pub bridge: String,
    pub subnet: Option<Subnet>,
    /// VM-to-VM traffic allowed.
    pub inter_vm: bool,
    pub ports: Vec<Port>,
}

fn table(family: &str) -> Value {
    json!({"table": {"family": family, "name": TABLE}})
}

fn chain(family: &str, name: &str, kind: &str, hook: &str, prio: i32) -> Value {
    json!({"add": {"chain": {"family": family, "table": TABLE, "name": name,
        "type": kind, "hook": hook, "prio": prio, "policy": "accept"}}})
}

fn rule(family: &str, chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": family, "table": TABLE, "chain": chain, "expr": expr}}})
}

fn is(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn field(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn set<T: serde::Serialize>(items: &[T]) -> Value {
    json!({"set": items})
}

fn drop_() -> Value {
    json!({"drop": null})
}

fn accept() -> Value {
    json!({"accept": null})
}

fn prefix(s: &Subnet) -> Value {
    json!({"prefix": {"addr": s.network().to_string(), "len": s.prefix}})
}

/// The anti-spoofing rules of one NIC.
fn port_rules(p: &Port) -> Vec<Value> {
    // Each rule: this tap, then `exprs`.
    let on_tap = |exprs: Vec<Value>| {
        let mut e = vec![is("==", meta("iifname"), json!(p.tap))];
        e.extend(exprs);
        rule("bridge", "prerouting", e)
    };
    let mut out = vec![
        on_tap(vec![
            is("!=", field("ether", "saddr"), json!(p.mac)),
            drop_(),
        ]),
        on_tap(vec![
            is("!=", field("arp", "saddr ether"), json!(p.mac)),
            drop_(),
        ]),
    ];
    if let Some(ip) = p.ip {
        let own = [ip.to_string(), "0.0.0.0".into()];
        out.push(on_tap(vec![
            is("!=", field("arp", "saddr ip"), set(&own)),
            drop_(),
        ]));
        out.push(on_tap(vec![
            is("==", field("ip", "saddr"), json!("0.0.0.0")),
            is("==", field("udp", "dport"), json!(67)),
            accept(),
        ]));
        out.push(on_tap(vec![
            is("!=", field("ip", "saddr"), json!(ip.to_string())),
            drop_(),
        ]));
    }
    out.push(on_tap(vec![
        is("!=", field("ether", "type"), set(&["ip", "arp"])),
        drop_(),
    ]));
    out
}

/// The ordered pairs of NICs of two VMs that are peers (either names
/// the other).
fn peer_pairs(n: &NetRules) -> Vec<(&Port, &Port)> {
    let mut out = Vec::new();
    for a in &n.ports {
        for b in &n.ports {
            if a.vm != b.vm && (a.peers.contains(&b.vm) || b.peers.contains(&a.vm)) {
                out.push((a, b));
            }
        }
    }
    out
}

/// The VM-to-VM rules of a network that denies it.
fn isolation_rules(n: &NetRules) -> Vec<Value> {
    let taps: BTreeSet<&str> = n.ports.iter().map(|p| p.tap.as_str()).collect();
    if n.inter_vm || taps.len() < 2 {
        return Vec::new();
    }
    let taps: Vec<&str> = taps.into_iter().collect();
    let mut out = Vec::new();
    for (a, b) in peer_pairs(n) {
        out.push(rule(
            "bridge",
            "forward",
            vec![
                is("==", meta("iifname"), json!(a.tap)),
                is("==", meta("oifname"), json!(b.tap)),
                accept(),
            ],
        ));
    }
    out.push(rule(
        "bridge",
        "forward",
        vec![
            is("==", meta("iifname"), set(&taps)),
            is("==", meta("oifname"), set(&taps)),
            drop_(),
        ],
    ));
    out
}

/// The layer-3 rules of a network with a bridge of its own: what may go
/// from it to the host and beyond.
fn routed_rules(n: &NetRules) -> Vec<Value> {
    let br = || json!(n.bridge);
    let mut out = Vec::new();
    if n.mode == NetMode::Bridge {
        return out;
    }
    // To the host itself: ping, DHCP and DNS (to dnsmasq), replies.
    let input = |extra: Vec<Value>| {
        let mut e = vec![is("==", meta("iifname"), br())];
        e.extend(extra);
        e.push(accept());
        rule("inet", "input", e)
    };
    out.push(input(vec![is("==", meta("l4proto"), json!("icmp"))]));
    out.push(input(vec![
        is("==", meta("l4proto"), json!("udp")),
        is("==", field("th", "dport"), set(&[53, 67])),
    ]));
    out.push(input(vec![
        is("==", meta("l4proto"), json!("tcp")),
        is("==", field("th", "dport"), json!(53)),
    ]));
    out.push(input(vec![is(
        "in",
        json!({"ct": {"key": "state"}}),
        json!(["established", "related"]),
    )]));
    out.push(rule(
        "inet",
        "input",
        vec![is("==", meta("iifname"), br()), drop_()],
    ));
    // Where VM-to-VM traffic is denied, a packet a VM sends to the
    // gateway's MAC for another VM's address (routed by the host back
    // onto the bridge: a hairpin the bridge table never sees as a frame
    // from tap to tap) is dropped too, unless the two are peers.
    if let (false, Some(s)) = (n.inter_vm, &n.subnet) {
        let hairpin = |extra: Vec<Value>| {
            let mut e = vec![
                is("==", meta("iifname"), br()),
                is("==", meta("oifname"), br()),
            ];
            e.extend(extra);
            rule("inet", "forward", e)
        };
        for (a, b) in peer_pairs(n) {
            if let (Some(x), Some(y)) = (a.ip, b.ip) {
                out.push(hairpin(vec![
                    is("==", field("ip", "saddr"), json!(x.to_string())),
                    is("==", field("ip", "daddr"), json!(y.to_string())),
                    accept(),
                ]));
            }
        }
        out.push(hairpin(vec![
            is("==", field("ip", "saddr"), prefix(s)),
            is("==", field("ip", "daddr"), prefix(s)),
            drop_(),
        ]));
    }
    // Other bridged frames seen here (br_netfilter loaded: in and out the
    // same bridge) are the bridge table's business.
    out.push(rule(
        "inet",
        "forward",
        vec![
            is("==", meta("iifname"), br()),
            is("==", meta("oifname"), br()),
            accept(),
        ],
    ));
    if let (NetMode::Nat, Some(s)) = (n.mode, &n.subnet) {
        out.push(rule(
            "inet",
            "forward",
            vec![
                is("==", meta("iifname"), br()),
                is("==", field("ip", "saddr"), prefix(s)),
                accept(),
            ],
        ));
        out.push(rule(
            "inet",
            "forward",
            vec![
                is("==", meta("oifname"), br()),
                is(
                    "in",
                    json!({"ct": {"key": "state"}}),
                    json!(["established", "related"]),
                ),
                accept(),
            ],
        ));
        out.push(rule(
            "inet",
            "postrouting",
            vec![
                is("==", field("ip", "saddr"), prefix(s)),
                is("!=", field("ip", "daddr"), prefix(s)),
                json!({"masquerade": null}),
            ],
        ));
    }
    // Anything else in or out through the bridge: an isolated network
    // has no way out, a nat network no way in.
    out.push(rule(
        "inet",
        "forward",
        vec![is("==", meta("iifname"), br()), drop_()],
    ));
    out.push(rule(
        "inet",
        "forward",
        vec![is("==", meta("oifname"), br()), drop_()],
    ));
    out
}

/// The whole ruleset for `nets` as one `nft -j` document.
pub fn ruleset(nets: &[NetRules]) -> Value {
    let mut cmds = Vec::new();
    for fam in ["bridge", "inet"] {
        cmds.push(json!({"add": table(fam)}));
        cmds.push(json!({"delete": table(fam)}));
        cmds.push(json!({"add": table(fam)}));
    }
    cmds.push(chain("bridge", "prerouting", "filter", "prerouting", -200));
    cmds.push(chain("bridge", "forward", "filter", "forward", 0));
    cmds.push(chain("inet", "input", "filter", "input", 0));
    cmds.push(chain("inet", "forward", "filter", "forward", 0));
    cmds.push(chain("inet", "postrouting", "nat", "postrouting", 100));
    for n in nets {
        for p in &n.ports {
            cmds.extend(port_rules(p));
        }
        cmds.extend(isolation_rules(n));
        cmds.extend(routed_rules(n));
    }
    json!({"nftables": cmds})
}

/// Loads `doc` (from [`ruleset`]) in one transaction.
pub fn apply(doc: &Value) -> Result<(), String> {
    let text = doc.to_string();
    // `-f -` would open /dev/stdin, which a minimal /dev lacks.
    crate::run(
        program(),
        &["-j", "-f", "/proc/self/fd/0"],
        Some(text.as_bytes()),
    )
    .map(|_| ())
    .map_err(|e| format!("nftables: {e}"))
}

/// Removes both tables (atomically; missing tables are no error).
pub fn remove() -> Result<(), String> {
    let mut cmds = Vec::new();
    for fam in ["bridge", "inet"] {
        cmds.push(json!({"add": table(fam)}));
        cmds.push(json!({"delete": table(fam)}));
    }
    apply(&json!({"nftables": cmds}))
}

/// `nft list table FAMILY vtd` as text; None when the table is absent.
pub fn list(family: &str) -> Option<String> {
    crate::run(program(), &["list", "table", family, TABLE], None).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(inter_vm: bool) -> NetRules {
        let port = |tap: &str, vm: &str, ip: u8, peers: &[&str]| Port {
            tap: tap.into(),
            mac: format!("52:54:00:00:00:{ip:02x}"),
            ip: Some(Ipv4Addr::new(10, 0, 0, ip)),
            vm: vm.into(),
            peers: peers.iter().map(|s| s.to_string()).collect(),
        };
        NetRules {
            name: "n".into(),
            mode: NetMode::Isolated,
            bridge: "vtbr-n".into(),
            subnet: Some(Subnet::parse("10.0.0.0/24").unwrap()),
            inter_vm,
            ports: vec![
                port("t1", "a", 2, &["b"]),
                port("t2", "b", 3, &[]),
                port("t3", "c", 4, &[]),
            ],
        }
    }

    /// Each rule as `chain: left op right ... verdict`.
    fn lines(v: &Value) -> Vec<String> {
        let side = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Object(o) => {
                if let Some(m) = o.get("meta") {
                    m["key"].as_str().unwrap_or("").to_string()
                } else if let Some(p) = o.get("payload") {
                    format!(
                        "{} {}",
                        p["protocol"].as_str().unwrap_or(""),
                        p["field"].as_str().unwrap_or("")
                    )
                } else if let Some(s) = o.get("set") {
                    s.to_string()
                } else {
                    v.to_string()
                }
            }
            other => other.to_string(),
        };
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"].get("rule"))
            .map(|r| {
                let mut l = format!("{}:", r["chain"].as_str().unwrap());
                for e in r["expr"].as_array().unwrap() {
                    if let Some(m) = e.get("match") {
                        l.push_str(&format!(
                            " {} {} {}",
                            side(&m["left"]),
                            m["op"].as_str().unwrap(),
                            side(&m["right"])
                        ));
                    } else if let Some(k) = e.as_object().and_then(|o| o.keys().next()) {
                        l.push_str(&format!(" {k}"));
                    }
                }
                l
            })
            .collect()
    }

    #[test]
    fn isolation_and_peers() {
        let deny = lines(&ruleset(&[net(false)]));
        let has = |l: &[String], s: &str| l.iter().any(|x| x == s);
        // a and b are peers both ways; c with nobody; all three in the drop.
        assert!(
            has(&deny, "forward: iifname == t1 oifname == t2 accept"),
            "{deny:#?}"
        );
        assert!(has(&deny, "forward: iifname == t2 oifname == t1 accept"));
        assert!(!deny.iter().any(|l| l.contains("t3 accept")));
        let drop = r#"forward: iifname == ["t1","t2","t3"] oifname == ["t1","t2","t3"] drop"#;
        assert!(has(&deny, drop));
        let allow = lines(&ruleset(&[net(true)]));
        assert!(!has(&allow, drop));
        // Routed back onto the bridge (a hairpin through the gateway):
        // dropped between non-peers, accepted between peers.
        let br = "forward: iifname == vtbr-n oifname == vtbr-n";
        assert!(has(
            &deny,
            &format!("{br} ip saddr == 10.0.0.2 ip daddr == 10.0.0.3 accept")
        ));
        assert!(has(
            &deny,
            &format!("{br} ip saddr == 10.0.0.3 ip daddr == 10.0.0.2 accept")
        ));
        let hairpin_drop = deny
            .iter()
            .position(|l| l.starts_with(&format!("{br} ip saddr ==")) && l.ends_with("drop"));
        let bridged_accept = deny.iter().position(|l| *l == format!("{br} accept"));
        assert!(
            hairpin_drop.is_some() && hairpin_drop < bridged_accept,
            "{deny:#?}"
        );
        assert!(!allow
            .iter()
            .any(|l| l.starts_with(&format!("{br} ip saddr"))));
        assert!(!allow.iter().any(|l| l.starts_with("forward: iifname == t")));
    }

    #[test]
    fn every_port_is_pinned_to_its_mac_and_ip() {
        let doc = lines(&ruleset(&[net(false)]));
        for (tap, ip) in [("t1", 2), ("t2", 3), ("t3", 4)] {
            let mac = format!("52:54:00:00:00:{ip:02x}");
            let want = [
                format!("prerouting: iifname == {tap} ether saddr != {mac} drop"),
                format!("prerouting: iifname == {tap} arp saddr ether != {mac} drop"),
                format!(
                    r#"prerouting: iifname == {tap} arp saddr ip != ["10.0.0.{ip}","0.0.0.0"] drop"#
                ),
                format!("prerouting: iifname == {tap} ip saddr != 10.0.0.{ip} drop"),
                format!(r#"prerouting: iifname == {tap} ether type != ["ip","arp"] drop"#),
            ];
            for w in want {
                assert!(doc.contains(&w), "{w} not in {doc:#?}");
            }
        }
    }
}

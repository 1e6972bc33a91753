//! What `vt info` says of each NIC: its tap, MAC and bridge, and whether
//! the host has the tap up on that bridge right now (`ip -o link show`,
//! asked in vtd's network namespace: /sys may show another one). One `ip`
//! run answers for every tap and is kept briefly ([`FRESH`]): `GET
//! /vms/NAME` is open to anyone on the read-only socket, and must not
//! start a process per NIC per request.

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api::manager::{NicStatus, VmDefinition};
use api::NetConfig;

use crate::daemon::Daemon;
use crate::net::tap_name;

/// The NICs of `def`; `active`: the VM runs, so the host is asked.
pub fn status(d: &Daemon, def: &VmDefinition, active: bool) -> Vec<NicStatus> {
    def.networks
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let tap = tap_name(&def.name, i);
            let nic = NetConfig {
                tap: tap.clone(),
                mac: n.mac.clone(),
                rate: Default::default(),
                fd: None,
            };
            let mac = nic
                .mac_bytes()
                .map(api::format_mac)
                .unwrap_or_else(|_| n.mac.clone().unwrap_or_default());
            let bridge = match (&n.bridge, &n.network) {
                (Some(b), _) => Some(b.clone()),
                (None, Some(net)) => d.nets.get(net).ok().map(|def| def.bridge_name()),
                (None, None) => None,
            };
            let attached = active && bridge.as_deref().is_some_and(|b| on_bridge(&tap, b));
            NicStatus {
                tap,
                mac,
                bridge,
                attached,
            }
        })
        .collect()
}

/// How long one `ip -o link show` answers for.
const FRESH: Duration = Duration::from_secs(1);
/// How soon it is asked again for a tap it did not list (one just made).
const RETRY: Duration = Duration::from_millis(50);

/// The last `ip -o link show`: when, and its lines.
static LINKS: Mutex<Option<(Instant, String)>> = Mutex::new(None);

/// Whether `tap` exists, is up and is a port of `bridge`.
fn on_bridge(tap: &str, bridge: &str) -> bool {
    // Held while `ip` runs: concurrent requests wait for its answer.
    let mut links = crate::vm::lock(&LINKS);
    let age = links.as_ref().map(|(at, _)| at.elapsed());
    let listed = links
        .as_ref()
        .is_some_and(|(_, text)| text.lines().any(|l| link_name(l) == Some(tap)));
    let stale = age.is_none_or(|a| a > FRESH || (!listed && a > RETRY));
    if stale {
        *links = ip_links().map(|text| (Instant::now(), text));
    }
    links.as_ref().is_some_and(|(_, text)| {
        text.lines()
            .find(|l| link_name(l) == Some(tap))
            .is_some_and(|l| link_on_bridge(l, bridge))
    })
}

/// `ip -o link show`: one line per link.
fn ip_links() -> Option<String> {
    let ip = network::find_program("ip")?;
    let out = Command::new(ip)
        .args(["-o", "link", "show"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The link a line of `ip -o link show` is about (`7: NAME: ...` or
/// `7: NAME@PEER: ...`).
fn link_name(line: &str) -> Option<&str> {
    let name = line.split_whitespace().nth(1)?.strip_suffix(':')?;
    Some(name.split('@').next().unwrap_or(name))
}

/// Parses one line of `ip -o link show`: `<...,UP,...>` and `master BR`.
fn link_on_bridge(line: &str, bridge: &str) -> bool {
    let flags = line
        .split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map_or("", |(f, _)| f);
    let up = flags.split(',').any(|f| f == "UP");
    let mut words = line.split_whitespace();
    let master = words.by_ref().find(|w| *w == "master").and(words.next());
    up && master == Some(bridge)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ip_link_lines() {
        let on = "7: vt1234n0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel master vtbr-lan state UP mode DEFAULT";
        assert!(super::link_on_bridge(on, "vtbr-lan"));
        assert!(!super::link_on_bridge(on, "br0"));
        let down = "7: vt1234n0: <BROADCAST,MULTICAST> mtu 1500 master vtbr-lan state DOWN";
        assert!(!super::link_on_bridge(down, "vtbr-lan"));
        let loose = "7: vt1234n0: <BROADCAST,MULTICAST,UP> mtu 1500 state UP";
        assert!(!super::link_on_bridge(loose, "vtbr-lan"));
        assert_eq!(super::link_name(on), Some("vt1234n0"));
        assert_eq!(
            super::link_name("3: veth0@if2: <UP> mtu 1500"),
            Some("veth0")
        );
        assert_eq!(super::link_name("garbage"), None);
    }
}

//! What `vt info` says of each NIC: its tap, MAC and bridge, and whether
//! the host has the tap up on that bridge right now (`ip -o link show`,
//! asked in vtd's network namespace: /sys may show another one).

use std::process::{Command, Stdio};

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

/// Whether `tap` exists, is up and is a port of `bridge`.
fn on_bridge(tap: &str, bridge: &str) -> bool {
    let Some(ip) = network::find_program("ip") else {
        return false;
    };
    let Ok(out) = Command::new(ip)
        .args(["-o", "link", "show", "dev", tap])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && link_on_bridge(&text, bridge)
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
    }
}

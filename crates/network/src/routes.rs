//! The host's IPv4 routes (`/proc/net/route`, this network namespace's),
//! to refuse a network whose subnet collides with one.

use std::net::Ipv4Addr;

use api::network::Subnet;

/// One route: its interface and destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub iface: String,
    pub dest: Ipv4Addr,
    pub prefix: u8,
}

/// Parses `/proc/net/route` text (addresses as host-order hex of the
/// network-order bytes, i.e. little-endian on x86).
pub fn parse(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            Some(Route {
                iface: f.first()?.to_string(),
                dest: Ipv4Addr::from(dest.to_ne_bytes()),
                prefix: u32::from_be_bytes(mask.to_ne_bytes()).count_ones() as u8,
            })
        })
        .collect()
}

/// The routes of this network namespace.
pub fn host_routes() -> Vec<Route> {
    parse(&std::fs::read_to_string("/proc/net/route").unwrap_or_default())
}

/// The first route (not the default route, not on `own_bridge`) whose
/// destination overlaps `subnet`.
pub fn collision(subnet: &Subnet, own_bridge: &str) -> Option<Route> {
    host_routes().into_iter().find(|r| {
        r.prefix > 0
            && r.iface != own_bridge
            && Subnet {
                addr: r.dest,
                prefix: r.prefix,
            }
            .overlaps(subnet)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_route() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let r = parse(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].dest, Ipv4Addr::new(192, 168, 2, 0));
        assert_eq!(r[1].prefix, 24);
        assert_eq!(r[0].prefix, 0);
    }
}

//! Virtual networks (`vtd`'s `/networks`, libvirt's `net-*`) and policy
//! switches (`/policy`, `semanage boolean`'s shape).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// How a network reaches the outside (libvirt's `<forward mode=...>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetMode {
    /// A bridge of its own, the gateway address on it, masquerade to the
    /// host's uplink, DHCP and DNS from dnsmasq.
    Nat,
    /// A bridge of its own with the gateway address; no forwarding out.
    Isolated,
    /// An existing bridge the admin manages (no address, no DHCP from vtd).
    Bridge,
}

impl NetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::Nat => "nat",
            NetMode::Isolated => "isolated",
            NetMode::Bridge => "bridge",
        }
    }
}

/// An IPv4 network in CIDR notation (`192.168.100.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 8-30.
    pub prefix: u8,
}

impl Subnet {
    /// Parses `A.B.C.D/N`; the host bits must be zero; N is 8-30 (room
    /// for a gateway and at least one VM).
    pub fn parse(s: &str) -> Result<Subnet, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| {
            format!("subnet '{s}' must be ADDRESS/PREFIX (e.g. 192.168.100.0/24)")
        })?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("subnet '{s}': '{a}' is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("subnet '{s}': prefix must be 8-30"))?;
        let net = Subnet { addr, prefix };
        if net.network() != addr {
            return Err(format!(
                "subnet '{s}' has host bits set (did you mean {}/{prefix}?)",
                net.network()
            ));
        }
        Ok(net)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// The gateway: the first host address (`.1` of a /24).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + 1)
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether the two share an address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        let m = if p == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(p))
        };
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }

    /// Addresses VMs may have: the gateway's successor to the one before
    /// the broadcast address.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.gateway()) + 1..u32::from(self.broadcast())).map(Ipv4Addr::from)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Subnet::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A network definition (`POST /networks` body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDef {
    /// Network name (the VM name rules).
    pub name: String,
    pub mode: NetMode,
    /// The IPv4 subnet; required for `nat` and `isolated` (the gateway is
    /// its first address), optional for `bridge` (VM addresses come from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Subnet>,
    /// The bridge: for `bridge` the existing one (required); for `nat` and
    /// `isolated` the one vtd makes (default `vtbr-` + up to 10 characters
    /// of the name, else a hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// DHCP (and DNS) from dnsmasq on `nat` and `isolated` networks; each
    /// NIC gets a fixed lease for its address.
    #[serde(default = "yes")]
    pub dhcp: bool,
    /// Start when `vtd` starts.
    #[serde(default)]
    pub autostart: bool,
    /// Whether VMs on the network may reach each other. Unset: allowed on
    /// `nat` and `bridge`, on `isolated` what the `vm_inter_vm_traffic`
    /// switch says at the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_vm: Option<bool>,
}

fn yes() -> bool {
    true
}

impl NetworkDef {
    /// Checks what can be checked without touching the host.
    pub fn validate(&self) -> Result<(), String> {
        if !crate::manager::valid_name(&self.name) || self.name.len() > 32 {
            return Err(
                "network name must be 1-32 characters of A-Z a-z 0-9 . _ - and not start with . or -"
                    .into(),
            );
        }
        if let Some(b) = &self.bridge {
            crate::manager::check_bridge_name(b)?;
        }
        match self.mode {
            NetMode::Nat | NetMode::Isolated if self.subnet.is_none() => Err(format!(
                "a {} network needs --subnet CIDR",
                self.mode.as_str()
            )),
            NetMode::Bridge if self.bridge.is_none() => {
                Err("a bridge network needs --bridge BR (an existing bridge)".into())
            }
            _ => Ok(()),
        }
    }

    /// The bridge the network's taps go on.
    pub fn bridge_name(&self) -> String {
        if let Some(b) = &self.bridge {
            return b.clone();
        }
        if self.name.len() <= 10 && !self.name.contains('.') {
            return format!("vtbr-{}", self.name);
        }
        let mut h: u32 = 0x811c_9dc5;
        for b in self.name.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        format!("vtbr{h:08x}")
    }

    /// Whether VM-to-VM traffic is allowed, given the switch's state.
    pub fn inter_vm_allowed(&self, switch: bool) -> bool {
        self.inter_vm.unwrap_or(match self.mode {
            NetMode::Isolated => switch,
            NetMode::Nat | NetMode::Bridge => true,
        })
    }
}

/// A network with its state (`GET /networks`, `GET /networks/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkStatus {
    pub definition: NetworkDef,
    /// Started (bridge up, dnsmasq running).
    pub active: bool,
    /// The bridge's name.
    pub bridge: String,
    /// The gateway address on the bridge (`nat`, `isolated`).
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// dnsmasq's pid while the network is active with DHCP.
    #[serde(default)]
    pub dnsmasq_pid: Option<u32>,
    /// Running VMs with a NIC on it.
    #[serde(default)]
    pub vms: Vec<String>,
}

/// One DHCP lease (`GET /networks/{name}/leases`), from dnsmasq's lease file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// Expiry, seconds since the Unix epoch (0: never).
    pub expiry: u64,
    pub mac: String,
    pub ip: Ipv4Addr,
    /// The name the guest sent, if any.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The VM the MAC belongs to, if any.
    #[serde(default)]
    pub vm: Option<String>,
}

/// A policy switch (`GET /policy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySwitch {
    pub name: String,
    /// In force now.
    pub state: bool,
    /// What it is after a `vtd` restart (set with `--persistent`).
    pub persistent: bool,
    /// One line saying what `on` allows.
    pub description: String,
}

/// `PUT /policy/{name}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySet {
    pub state: bool,
    /// Also make it the state after a restart.
    #[serde(default)]
    pub persistent: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let s = Subnet::parse("192.168.100.0/24").unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(192, 168, 100, 1));
        assert_eq!(s.broadcast(), Ipv4Addr::new(192, 168, 100, 255));
        assert_eq!(s.hosts().next(), Some(Ipv4Addr::new(192, 168, 100, 2)));
        assert_eq!(s.hosts().count(), 253);
        assert!(s.contains(Ipv4Addr::new(192, 168, 100, 77)));
        assert!(!s.contains(Ipv4Addr::new(192, 168, 101, 1)));
        let t = Subnet::parse("192.168.0.0/16").unwrap();
        assert!(s.overlaps(&t) && t.overlaps(&s));
        assert!(!s.overlaps(&Subnet::parse("192.168.101.0/24").unwrap()));
        for bad in [
            "192.168.100.1/24",
            "10.0.0.0",
            "10.0.0.0/31",
            "x/24",
            "10.0.0.0/4",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn definitions() {
        let d: NetworkDef =
            serde_json::from_str(r#"{"name":"lan","mode":"isolated","subnet":"10.9.0.0/24"}"#)
                .unwrap();
        d.validate().unwrap();
        assert!(d.dhcp);
        assert_eq!(d.bridge_name(), "vtbr-lan");
        assert!(!d.inter_vm_allowed(false) && d.inter_vm_allowed(true));
        let long = NetworkDef {
            name: "a-long-network-name".into(),
            ..d.clone()
        };
        assert!(long.bridge_name().len() <= 15);
        let nosub = NetworkDef { subnet: None, ..d };
        assert!(nosub.validate().unwrap_err().contains("--subnet"));
    }
}

//! The networks `vtd` manages: definitions in `DIR/NAME/network.json`,
//! an `active` marker while started, dnsmasq's files beside them.
//! Nothing is torn down when `vtd` exits: bridges, dnsmasq and the
//! nftables tables stay, and [`Manager::adopt`] takes them back.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use api::network::{Lease, NetMode, NetworkDef, NetworkStatus};

use crate::dnsmasq::{Dnsmasq, Host};
use crate::{link, routes};

/// A refusal or failure, with the HTTP status it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: u16,
    pub message: String,
}

impl Error {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Error {
            status,
            message: message.into(),
        }
    }
}

/// The managed networks.
pub struct Manager {
    dir: PathBuf,
    /// The dnsmasq program (a name searched in PATH, or a path).
    dnsmasq: String,
    nets: Mutex<BTreeMap<String, NetworkDef>>,
    /// Serialises start, stop and undefine.
    op: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Manager {
    /// Loads every definition under `dir` (created if missing).
    pub fn open(dir: &Path, dnsmasq: &str) -> std::io::Result<Manager> {
        std::fs::create_dir_all(dir)?;
        let mut nets = BTreeMap::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let f = e.path().join("network.json");
            let Ok(text) = std::fs::read(&f) else {
                continue;
            };
            match serde_json::from_slice::<NetworkDef>(&text) {
                Ok(def) if def.validate().is_ok() => {
                    nets.insert(def.name.clone(), def);
                }
                _ => eprintln!("vtd: skipping {}: not a valid network", f.display()),
            }
        }
        Ok(Manager {
            dir: dir.to_path_buf(),
            dnsmasq: dnsmasq.to_string(),
            nets: Mutex::new(nets),
            op: Mutex::new(()),
        })
    }

    fn net_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn dns(&self, name: &str) -> Dnsmasq {
        Dnsmasq {
            dir: self.net_dir(name),
        }
    }

    /// A definition.
    pub fn get(&self, name: &str) -> Result<NetworkDef, Error> {
        lock(&self.nets)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::new(404, format!("no network named '{name}'")))
    }

    /// Every definition.
    pub fn list(&self) -> Vec<NetworkDef> {
        lock(&self.nets).values().cloned().collect()
    }

    /// Whether `name` is started.
    pub fn is_active(&self, name: &str) -> bool {
        self.net_dir(name).join("active").exists()
    }

    /// The active networks.
    pub fn active(&self) -> Vec<NetworkDef> {
        self.list()
            .into_iter()
            .filter(|n| self.is_active(&n.name))
            .collect()
    }

    /// Defines a network: name, subnet and bridge not taken by another,
    /// the subnet not overlapping a host route, a `bridge` network's bridge
    /// existing. Nothing is made on the host until it starts.
    pub fn define(&self, def: NetworkDef) -> Result<NetworkStatus, Error> {
        def.validate().map_err(|e| Error::new(400, e))?;
        let mut nets = lock(&self.nets);
        if nets.contains_key(&def.name) {
            return Err(Error::new(
                409,
                format!("a network named '{}' exists", def.name),
            ));
        }
        let bridge = def.bridge_name();
        for other in nets.values() {
            if let (Some(a), Some(b)) = (&def.subnet, &other.subnet) {
                if a.overlaps(b) {
                    return Err(Error::new(
                        409,
                        format!("subnet {a} overlaps network '{}' ({b})", other.name),
                    ));
                }
            }
            if other.bridge_name() == bridge && def.mode != NetMode::Bridge {
                return Err(Error::new(
                    409,
                    format!("bridge {bridge} is network '{}'s", other.name),
                ));
            }
        }
        if def.mode != NetMode::Bridge {
            if let Some(r) = def.subnet.and_then(|s| routes::collision(&s, &bridge)) {
                return Err(Error::new(
                    409,
                    format!(
                        "subnet {} collides with the host route {}/{} on {}",
                        def.subnet.map(|s| s.to_string()).unwrap_or_default(),
                        r.dest,
                        r.prefix,
                        r.iface
                    ),
                ));
            }
            if link::exists(&bridge) {
                return Err(Error::new(
                    409,
                    format!("interface {bridge} already exists: name another bridge with --bridge, or use --mode bridge"),
                ));
            }
        }
        let dir = self.net_dir(&def.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::new(500, format!("{}: {e}", dir.display())))?;
        let text = serde_json::to_vec_pretty(&def).map_err(|e| Error::new(500, e.to_string()))?;
        if let Err(e) = crate::write_atomic(&dir.join("network.json"), &text) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Error::new(500, format!("cannot write the definition: {e}")));
        }
        nets.insert(def.name.clone(), def.clone());
        drop(nets);
        Ok(self.status(&def.name, Vec::new()))
    }

    /// Removes a stopped network no VM uses (`users`: VMs whose
    /// definitions name it).
    pub fn undefine(&self, name: &str, users: &[String]) -> Result<(), Error> {
        let _op = lock(&self.op);
        self.get(name)?;
        if self.is_active(name) {
            return Err(Error::new(
                409,
                format!("network '{name}' is active: stop it first"),
            ));
        }
        if !users.is_empty() {
            return Err(Error::new(
                409,
                format!("network '{name}' is in use by VM(s) {}", users.join(", ")),
            ));
        }
        let mut nets = lock(&self.nets);
        std::fs::remove_dir_all(self.net_dir(name))
            .map_err(|e| Error::new(500, format!("cannot remove the network: {e}")))?;
        nets.remove(name);
        Ok(())
    }

    /// The dnsmasq binary, if the network needs one.
    fn dnsmasq_exe(&self, def: &NetworkDef) -> Result<Option<PathBuf>, Error> {
        if !def.dhcp || def.mode == NetMode::Bridge {
            return Ok(None);
        }
        crate::find_program(&self.dnsmasq).map(Some).ok_or_else(|| {
            Error::new(
                424,
                format!(
                    "network '{}' has DHCP, but dnsmasq ({}) is not installed (Debian package dnsmasq-base), or define it with --dhcp off",
                    def.name, self.dnsmasq
                ),
            )
        })
    }

    /// Brings up what the network needs on the host: its bridge with the
    /// gateway address, dnsmasq. On error what it made is removed again.
    fn bring_up(&self, def: &NetworkDef, hosts: &[Host]) -> Result<(), Error> {
        let bridge = def.bridge_name();
        if def.mode == NetMode::Bridge {
            if !link::is_bridge(&bridge) {
                return Err(Error::new(
                    400,
                    format!("bridge {bridge} does not exist or is not a bridge"),
                ));
            }
            return Ok(());
        }
        let exe = self.dnsmasq_exe(def)?;
        let subnet = def
            .subnet
            .ok_or_else(|| Error::new(400, "the network has no subnet"))?;
        if let Some(r) = routes::collision(&subnet, &bridge) {
            return Err(Error::new(
                409,
                format!(
                    "subnet {subnet} collides with the host route {}/{} on {}",
                    r.dest, r.prefix, r.iface
                ),
            ));
        }
        let made = link::make_bridge(&bridge, Some((subnet.gateway(), subnet.prefix)))
            .map_err(|e| Error::new(500, format!("cannot make bridge {bridge}: {e}")))?;
        if let Some(exe) = exe {
            let dns = self.dns(&def.name);
            let started = dns.start(&exe, def.mode, &bridge, &subnet, hosts);
            if let Err(e) = started {
                if made {
                    let _ = link::delete(&bridge);
                }
                return Err(Error::new(500, format!("cannot start dnsmasq: {e}")));
            }
        }
        if def.mode == NetMode::Nat {
            // Routing between the bridge and the uplink (libvirt does the same).
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
        }
        Ok(())
    }

    /// Starts a network (`hosts`: the fixed leases of its VMs' NICs).
    pub fn start(&self, name: &str, hosts: &[Host]) -> Result<(), Error> {
        let _op = lock(&self.op);
        let def = self.get(name)?;
        if self.is_active(name) {
            return Err(Error::new(
                409,
                format!("network '{name}' is already active"),
            ));
        }
        self.bring_up(&def, hosts)?;
        if let Err(e) = std::fs::write(self.net_dir(name).join("active"), b"") {
            self.tear_down(&def);
            return Err(Error::new(
                500,
                format!("cannot mark the network active: {e}"),
            ));
        }
        Ok(())
    }

    fn tear_down(&self, def: &NetworkDef) {
        self.dns(&def.name).stop();
        if def.mode != NetMode::Bridge {
            let _ = link::delete(&def.bridge_name());
        }
    }

    /// Stops a network no running VM is on (`running`: those that are).
    pub fn stop(&self, name: &str, running: &[String]) -> Result<(), Error> {
        let _op = lock(&self.op);
        let def = self.get(name)?;
        if !self.is_active(name) {
            return Err(Error::new(409, format!("network '{name}' is not active")));
        }
        if !running.is_empty() {
            return Err(Error::new(
                409,
                format!(
                    "network '{name}' has running VM(s) {}: stop them first",
                    running.join(", ")
                ),
            ));
        }
        let _ = std::fs::remove_file(self.net_dir(name).join("active"));
        self.tear_down(&def);
        Ok(())
    }

    /// After a `vtd` restart: every active network's bridge and dnsmasq
    /// are checked and what is missing is brought back (a bridge and a
    /// dnsmasq still there are kept as they are: no traffic is dropped).
    /// Returns one message per network that could not be brought back.
    pub fn adopt(&self, hosts: &dyn Fn(&str) -> Vec<Host>) -> Vec<String> {
        let mut errors = Vec::new();
        for def in self.active() {
            if let Err(e) = self.bring_up(&def, &hosts(&def.name)) {
                errors.push(format!("network '{}': {}", def.name, e.message));
            }
        }
        errors
    }

    /// Restarts dnsmasq of active networks where it has died (the
    /// supervisor calls this now and then).
    pub fn supervise(&self, hosts: &dyn Fn(&str) -> Vec<Host>) {
        // Not while a network starts or stops.
        let _op = lock(&self.op);
        for def in self.active() {
            let Ok(Some(exe)) = self.dnsmasq_exe(&def) else {
                continue;
            };
            let dns = self.dns(&def.name);
            if dns.pid().is_none() {
                if let Some(s) = def.subnet {
                    match dns.start(&exe, def.mode, &def.bridge_name(), &s, &hosts(&def.name)) {
                        Ok(pid) => {
                            eprintln!("vtd: network '{}': dnsmasq restarted (pid {pid})", def.name)
                        }
                        Err(e) => eprintln!("vtd: network '{}': {e}", def.name),
                    }
                }
            }
        }
    }

    /// Restarts a network's dnsmasq with new fixed leases (it reads its
    /// configuration only at start, as root: on SIGHUP it would reread a
    /// `dhcp-hostsfile` as user nobody, who cannot read vtd's state
    /// directory; its lease file keeps the leases it gave). Under the
    /// same lock as start and stop: a restart racing a stop would leave a
    /// dnsmasq behind on a stopped network.
    pub fn set_hosts(&self, name: &str, hosts: &[Host]) {
        let _op = lock(&self.op);
        if !self.is_active(name) {
            return;
        }
        let dns = self.dns(name);
        let (Ok(def), Some(_)) = (self.get(name), dns.pid()) else {
            return;
        };
        if let (Ok(Some(exe)), Some(subnet)) = (self.dnsmasq_exe(&def), def.subnet) {
            dns.stop();
            if let Err(e) = dns.start(&exe, def.mode, &def.bridge_name(), &subnet, hosts) {
                eprintln!("vtd: network '{name}': {e}");
            }
        }
    }

    /// A network's status (`vms`: running VMs on it).
    pub fn status(&self, name: &str, vms: Vec<String>) -> NetworkStatus {
        let def = lock(&self.nets).get(name).cloned();
        let def = def.unwrap_or_else(|| NetworkDef {
            name: name.into(),
            mode: NetMode::Isolated,
            subnet: None,
            bridge: None,
            dhcp: false,
            autostart: false,
            inter_vm: None,
        });
        let active = self.is_active(name);
        NetworkStatus {
            bridge: def.bridge_name(),
            gateway: def
                .subnet
                .filter(|_| def.mode != NetMode::Bridge)
                .map(|s| s.gateway()),
            dnsmasq_pid: if active { self.dns(name).pid() } else { None },
            active,
            vms,
            definition: def,
        }
    }

    /// dnsmasq's leases of a network.
    pub fn leases(&self, name: &str) -> Result<Vec<Lease>, Error> {
        self.get(name)?;
        Ok(self.dns(name).read_leases())
    }

    /// An address of `def`'s subnet not in `used` (nor the gateway).
    pub fn free_ip(def: &NetworkDef, used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        def.subnet?.hosts().find(|ip| !used.contains(ip))
    }
}

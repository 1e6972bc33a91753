//! VMs on `vtd` networks: addresses handed out at define time, the
//! nftables ruleset rebuilt from the VMs that run (rules in before a VMM
//! starts, out when it ends, rebuilt after a restart), the policy
//! checks and the action-log records of a start.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use api::manager::VmDefinition;
use api::network::NetMode;
use network::dnsmasq::Host;
use network::manager::Manager;
use network::nft::{self, NetRules, Port};

use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::net::tap_name;
use crate::vm::{lock, Vm};

impl From<network::manager::Error> for ApiError {
    fn from(e: network::manager::Error) -> Self {
        ApiError::new(e.status, e.message)
    }
}

/// A locally administered MAC in QEMU's 52:54:00 range, random.
fn random_mac() -> [u8; 6] {
    let mut b = [0u8; 3];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 3 {
        let t = crate::store::now_ms().to_le_bytes();
        b.copy_from_slice(&t[..3]);
    }
    [0x52, 0x54, 0x00, b[0], b[1], b[2]]
}

/// Every NIC VM `vm` has, and those its pending change (applied at its
/// next start) has: both count as taken (their MACs, addresses, taps).
fn nics_of(vm: &Vm) -> Vec<api::manager::NetworkSpec> {
    let mut nics = vm.def().networks;
    let pending = crate::store::read_json::<VmDefinition>(&crate::edit::pending_path(&vm.dir));
    if let Ok(Some(p)) = pending {
        nics.extend(p.networks);
    }
    nics
}

impl Daemon {
    /// Refuses a `bridge=` NIC on the bridge of a `vtd` network (it would
    /// sit there without anti-spoofing and outside the VM-to-VM rules:
    /// `network=NAME` is the way onto it), and NICs whose taps would have
    /// the name of another VM's tap (the names are a hash of the VM name:
    /// two names can collide): at define `vms` are all VMs, at start the
    /// running ones.
    pub fn check_nics(&self, def: &VmDefinition, vms: &[Arc<Vm>]) -> Result<(), ApiError> {
        for (i, n) in def.networks.iter().enumerate() {
            let Some(b) = &n.bridge else {
                continue;
            };
            if let Some(net) = self.nets.list().iter().find(|d| d.bridge_name() == *b) {
                return Err(ApiError::bad_request(format!(
                    "NIC {i}: bridge {b} is network '{}'s: use network={} (a bridge= NIC is not filtered)",
                    net.name, net.name
                )));
            }
        }
        for other in vms.iter().filter(|v| v.name() != def.name) {
            for j in 0..nics_of(other).len() {
                let theirs = tap_name(other.name(), j);
                if (0..def.networks.len()).any(|i| tap_name(&def.name, i) == theirs) {
                    return Err(ApiError::conflict(format!(
                        "the tap names of VM '{}' collide with VM '{}''s ({theirs}): choose another name",
                        def.name,
                        other.name()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Fills in each `network=` NIC's MAC and address (the network must
    /// be defined; a given address must be in its subnet and free).
    pub fn assign_nics(
        &self,
        def: &mut VmDefinition,
        vms: &BTreeMap<String, Arc<Vm>>,
    ) -> Result<(), ApiError> {
        let others: Vec<api::manager::NetworkSpec> = vms
            .values()
            .filter(|v| v.name() != def.name)
            .flat_map(|v| nics_of(v))
            .collect();
        // Compared as bytes: a MAC written another way is the same MAC.
        let mut taken_macs: Vec<[u8; 6]> = others
            .iter()
            .filter_map(|n| api::parse_mac(n.mac.as_deref()?).ok())
            .collect();
        // Every MAC stored in its one written form (nftables and dnsmasq
        // get it as stored).
        for (i, n) in def.networks.iter_mut().enumerate() {
            if let Some(m) = &n.mac {
                let m = api::canonical_mac(m)
                    .map_err(|e| ApiError::bad_request(format!("NIC {i}: {e}")))?;
                n.mac = Some(m);
            }
        }
        // Addresses in use per network: other VMs', then this one's as given.
        let mut used: Vec<(String, Ipv4Addr)> = others
            .iter()
            .filter_map(|o| Some((o.network.clone()?, o.ip?)))
            .collect();
        for n in &def.networks {
            if let (Some(net), Some(ip)) = (&n.network, n.ip) {
                if used.contains(&(net.clone(), ip)) {
                    return Err(ApiError::conflict(format!(
                        "ip {ip} is another NIC's on network '{net}'"
                    )));
                }
                used.push((net.clone(), ip));
            }
        }
        for i in 0..def.networks.len() {
            let Some(net_name) = def.networks[i].network.clone() else {
                continue;
            };
            let net = self.nets.get(&net_name).map_err(|e| {
                ApiError::bad_request(format!("NIC {i}: {} (vt net define it first)", e.message))
            })?;
            let nic = &mut def.networks[i];
            let mac = match &nic.mac {
                Some(m) => {
                    let bytes = api::parse_mac(m)
                        .map_err(|e| ApiError::bad_request(format!("NIC {i}: {e}")))?;
                    if taken_macs.contains(&bytes) {
                        return Err(ApiError::conflict(format!("MAC {m} is another NIC's")));
                    }
                    bytes
                }
                None => {
                    let mut m = random_mac();
                    while taken_macs.contains(&m) {
                        m = random_mac();
                    }
                    m
                }
            };
            nic.mac = Some(api::format_mac(mac));
            taken_macs.push(mac);
            let Some(subnet) = net.subnet else {
                continue;
            };
            match nic.ip {
                Some(ip) => {
                    if !subnet.contains(ip)
                        || ip == subnet.network()
                        || ip == subnet.broadcast()
                        || (net.mode != NetMode::Bridge && ip == subnet.gateway())
                    {
                        return Err(ApiError::bad_request(format!(
                            "ip {ip} is not a VM address of network '{net_name}' ({subnet})"
                        )));
                    }
                }
                None => {
                    let taken: Vec<Ipv4Addr> = used
                        .iter()
                        .filter(|(n, _)| *n == net_name)
                        .map(|(_, ip)| *ip)
                        .collect();
                    let ip = Manager::free_ip(&net, &taken).ok_or_else(|| {
                        ApiError::conflict(format!("network '{net_name}' has no free address"))
                    })?;
                    nic.ip = Some(ip);
                    used.push((net_name.clone(), ip));
                }
            }
        }
        Ok(())
    }

    /// The fixed DHCP leases of network `net`: every defined VM's NICs on it.
    pub fn hosts_for(&self, net: &str) -> Vec<Host> {
        self.list()
            .iter()
            .flat_map(|vm| {
                vm.def()
                    .networks
                    .iter()
                    .filter(|n| n.network.as_deref() == Some(net))
                    .filter_map(|n| {
                        Some(Host {
                            mac: api::canonical_mac(n.mac.as_deref()?).ok()?,
                            ip: n.ip?,
                            name: vm.name().to_string(),
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Refreshes the leases of the networks `def` has NICs on.
    pub fn update_hosts(&self, def: &VmDefinition) {
        for n in def.networks.iter().filter_map(|n| n.network.as_deref()) {
            self.nets.set_hosts(n, &self.hosts_for(n));
        }
    }

    /// VMs whose definitions name network `net`, and those of them running.
    pub fn net_users(&self, net: &str) -> (Vec<String>, Vec<String>) {
        let users: Vec<Arc<Vm>> = self
            .list()
            .into_iter()
            .filter(|vm| {
                vm.def()
                    .networks
                    .iter()
                    .any(|n| n.network.as_deref() == Some(net))
            })
            .collect();
        let running = users
            .iter()
            .filter(|v| v.state().is_active() || lock(&self.wired).contains(v.name()))
            .map(|v| v.name().to_string())
            .collect();
        (
            users.iter().map(|v| v.name().to_string()).collect(),
            running,
        )
    }

    /// The ruleset for the active networks and the wired VMs.
    fn rules(&self, wired: &std::collections::BTreeSet<String>) -> Vec<NetRules> {
        let switch = self.policy.on("vm_inter_vm_traffic");
        let vms = self.list();
        let owner = |name: &str| {
            vms.iter()
                .find(|v| v.name() == name)
                .map(|v| v.def().owner.map_or(0, |o| o.uid))
        };
        // A VM may name as peers only VMs of its own owner (root's VMs
        // may name any): a user cannot open a way to someone else's VM.
        let may_name = |from: &Vm, peer: &String| {
            let me = from.def().owner.map_or(0, |o| o.uid);
            owner(peer).is_some_and(|o| me == 0 || o == me)
        };
        self.nets
            .active()
            .into_iter()
            .map(|net| {
                let mut ports = Vec::new();
                for vm in vms.iter().filter(|v| wired.contains(v.name())) {
                    for (i, n) in vm.def().networks.iter().enumerate() {
                        if n.network.as_deref() != Some(net.name.as_str()) {
                            continue;
                        }
                        ports.push(Port {
                            tap: tap_name(vm.name(), i),
                            mac: n
                                .mac
                                .as_deref()
                                .and_then(|m| api::canonical_mac(m).ok())
                                .unwrap_or_default(),
                            ip: n.ip,
                            vm: vm.name().to_string(),
                            peers: n
                                .peers
                                .iter()
                                .filter(|p| may_name(vm, p))
                                .cloned()
                                .collect(),
                        });
                    }
                }
                NetRules {
                    name: net.name.clone(),
                    mode: net.mode,
                    bridge: net.bridge_name(),
                    subnet: net.subnet,
                    inter_vm: net.inter_vm_allowed(switch),
                    ports,
                }
            })
            .collect()
    }

    /// Loads the ruleset for `wired` (no tables at all without active
    /// networks). `STATE/nft.loaded` marks that this vtd has tables in the
    /// kernel: a vtd that never had any touches nothing (another vtd's
    /// tables, or nft missing on a host without networks).
    fn load_rules(&self, wired: &std::collections::BTreeSet<String>) -> Result<(), String> {
        let marker = self.state_dir.join("nft.loaded");
        let rules = self.rules(wired);
        if rules.is_empty() {
            if marker.exists() {
                nft::remove()?;
                let _ = std::fs::remove_file(&marker);
            }
            return Ok(());
        }
        std::fs::write(&marker, b"").map_err(|e| format!("{}: {e}", marker.display()))?;
        nft::apply(&nft::ruleset(&rules))
    }

    /// Rebuilds the ruleset from state (after a policy or network change).
    pub fn sync_rules(&self) -> Result<(), ApiError> {
        let wired = lock(&self.wired);
        self.load_rules(&wired)
            .map_err(|e| ApiError::new(500, format!("cannot load the network rules: {e}")))
    }

    /// Takes VM `name`'s NICs out of the ruleset (its VMM ended).
    pub fn unwire(&self, name: &str) {
        let mut wired = lock(&self.wired);
        if wired.remove(name) {
            if let Err(e) = self.load_rules(&wired) {
                tracing::warn!("removing the network rules of {name}: {e}");
            }
        }
    }

    /// After a restart: VMs running again are wired, active networks'
    /// bridges and dnsmasq taken back (or brought back), autostart networks
    /// started, and the ruleset rebuilt.
    pub fn restore_networks(&self) {
        let hosts = |n: &str| self.hosts_for(n);
        for e in self.nets.adopt(&hosts) {
            tracing::warn!("{e}");
        }
        for net in self.nets.list() {
            if net.autostart && !self.nets.is_active(&net.name) {
                if let Err(e) = self.nets.start(&net.name, &self.hosts_for(&net.name)) {
                    tracing::error!("autostart of network '{}' failed: {}", net.name, e.message);
                }
            }
        }
        let mut wired = lock(&self.wired);
        for vm in self.list() {
            let on_net = vm.def().networks.iter().any(|n| n.network.is_some());
            if on_net && vm.state().is_active() {
                wired.insert(vm.name().to_string());
            }
        }
        if let Err(e) = self.load_rules(&wired) {
            tracing::warn!("cannot load the network rules: {e}");
        }
    }

    /// Starts a VM: the policy switches checked, its networks resolved,
    /// its NICs' rules loaded before the VMM runs (fail closed: no rules,
    /// no start), then the VMM. Refusals by policy go to the action log
    /// with `peer` (None: vtd itself, e.g. autostart).
    pub fn start_vm(&self, vm: &Arc<Vm>, peer: Option<&vt_http::Peer>) -> Result<(), ApiError> {
        if vm.state().is_active() {
            return Err(ApiError::conflict(format!(
                "VM '{}' is already running",
                vm.name()
            )));
        }
        if let Err(e) = crate::admission::check(
            &vm.def(),
            &self.policy,
            &self.options.storage_dirs,
            &self.defaults,
        ) {
            self.record_refusal(peer, vm.name(), &e);
            return Err(e);
        }
        let running: Vec<Arc<Vm>> = self
            .list()
            .into_iter()
            .filter(|v| v.state().is_active())
            .collect();
        if let Err(e) = self.check_nics(&vm.def(), &running) {
            self.record_refusal(peer, vm.name(), &e);
            return Err(e);
        }
        let mut bridges = Vec::new();
        for (i, n) in vm.def().networks.iter().enumerate() {
            match (&n.bridge, &n.network) {
                (Some(b), _) => bridges.push(b.clone()),
                (None, Some(net)) => {
                    let def = self
                        .nets
                        .get(net)
                        .map_err(|e| ApiError::bad_request(format!("NIC {i}: {}", e.message)))?;
                    if !self.nets.is_active(net) {
                        return Err(ApiError::conflict(format!(
                            "network '{net}' is not active (vt net start {net})"
                        )));
                    }
                    bridges.push(def.bridge_name());
                }
                (None, None) => return Err(ApiError::bad_request("a NIC without a network")),
            }
        }
        let on_net = vm.def().networks.iter().any(|n| n.network.is_some());
        if on_net {
            let mut wired = lock(&self.wired);
            wired.insert(vm.name().to_string());
            if let Err(e) = self.load_rules(&wired) {
                wired.remove(vm.name());
                let e = ApiError::new(
                    500,
                    format!(
                        "VM '{}' not started: its network rules could not be loaded (fail closed): {e}",
                        vm.name()
                    ),
                );
                self.record_refusal(peer, vm.name(), &e);
                return Err(e);
            }
        }
        // A file refused by a switch once opened is a policy refusal too.
        let guard = |what: &'static str, path: &std::path::Path, f: &std::fs::File| {
            crate::admission::check_open(
                what,
                path,
                f,
                &self.policy,
                &self.options.storage_dirs,
                &self.defaults,
            )
            .inspect_err(|e| self.record_refusal(peer, vm.name(), e))
        };
        warn_pvm(vm, &self.defaults);
        let started = vm.start(&self.vmm, &self.defaults, &bridges, &guard);
        if started.is_err() && on_net && !vm.state().is_active() {
            self.unwire(vm.name());
        }
        started
    }

    /// Writes a start refused by policy (or failing closed) to the audit
    /// trail: action `start.refused`, the VM, the reason.
    fn record_refusal(&self, peer: Option<&vt_http::Peer>, vm: &str, e: &ApiError) {
        let me = vt_http::Peer {
            pid: std::process::id() as i32,
            uid: 0,
            gid: 0,
        };
        self.audit.action(
            peer.unwrap_or(&me),
            "start.refused",
            Some(vm),
            audit::Outcome::of_status(e.status),
            e.message.clone(),
        );
    }
}

/// Logs that a VM starting a Linux kernel on a PVM host will not boot
/// (see the `pvm` crate): the VM runs, its console stays silent. Only on
/// a PVM host is the kernel looked at, and an owner's kernel is opened as
/// that owner (only a regular file, not through a symlink), never as root.
fn warn_pvm(vm: &Vm, defaults: &crate::daemon::Defaults) {
    if !pvm::host_is_pvm() {
        return;
    }
    let def = vm.def();
    let Some(kernel) = &def.kernel else {
        return;
    };
    let linux = match def.owner.filter(|o| o.uid != 0) {
        Some(owner) if !defaults.is_default(kernel) => crate::access::open_as(
            Some(owner),
            "kernel",
            kernel,
            false,
            libc::O_NOCTTY,
            crate::access::Kind::Regular,
        )
        .ok()
        .and_then(|mut f| pvm::is_linux(&mut f).ok())
        .unwrap_or(false),
        _ => pvm::path_is_linux(kernel),
    };
    if linux {
        tracing::warn!(
            "VM {}: warning: kernel {} is Linux and {}",
            vm.name(),
            kernel.display(),
            pvm::WARNING
        );
    }
}

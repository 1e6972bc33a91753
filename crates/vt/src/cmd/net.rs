//! `vt net define|list|info|start|stop|undefine|leases` (virsh's
//! `net-*`): vtd's virtual networks.

use api::network::{Lease, NetMode, NetworkDef, NetworkStatus, Subnet};
use clap::{Args, Subcommand};

use super::client::{CliError, CliResult, Client};
use super::options::boolean;
use super::output::{print_json, table, Format};

#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// Define a network.
    Define(DefineArgs),
    /// List networks.
    List,
    /// Show one network.
    Info { name: String },
    /// Start a network: its bridge, gateway address, dnsmasq and rules.
    Start { name: String },
    /// Stop a network no running VM is on.
    Stop { name: String },
    /// Remove a stopped network no VM names.
    Undefine { name: String },
    /// The DHCP leases dnsmasq gave out.
    Leases { name: String },
}

#[derive(Debug, Args)]
pub struct DefineArgs {
    pub name: String,
    /// `nat` (outbound through the host, DHCP/DNS), `isolated` (no way
    /// out) or `bridge` (an existing bridge).
    #[arg(long, value_parser = ["nat", "isolated", "bridge"])]
    pub mode: String,
    /// IPv4 subnet, e.g. 192.168.100.0/24 (the gateway is its first address).
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,
    /// The bridge (for `bridge` an existing one; else the one vtd makes).
    #[arg(long, value_name = "BR")]
    pub bridge: Option<String>,
    /// DHCP and DNS from dnsmasq.
    #[arg(long, value_name = "on|off", default_value = "on")]
    pub dhcp: String,
    /// VM-to-VM traffic: `allow` or `deny` (default: allowed on nat and
    /// bridge, on isolated as the vm_inter_vm_traffic switch says).
    #[arg(long, value_name = "allow|deny")]
    pub inter_vm: Option<String>,
    /// Start the network when vtd starts.
    #[arg(long)]
    pub autostart: bool,
}

fn mode(s: &str) -> NetMode {
    match s {
        "nat" => NetMode::Nat,
        "bridge" => NetMode::Bridge,
        _ => NetMode::Isolated,
    }
}

pub fn run(c: &Client, cmd: NetCommand, f: Format) -> CliResult {
    match cmd {
        NetCommand::Define(a) => {
            let inter_vm = match a.inter_vm.as_deref() {
                None => None,
                Some("allow") => Some(true),
                Some("deny") => Some(false),
                Some(o) => return Err(CliError::usage(format!("--inter-vm {o}: allow or deny"))),
            };
            let def = NetworkDef {
                name: a.name,
                mode: mode(&a.mode),
                subnet: a
                    .subnet
                    .as_deref()
                    .map(Subnet::parse)
                    .transpose()
                    .map_err(CliError::usage)?,
                bridge: a.bridge,
                dhcp: boolean("--dhcp", &a.dhcp).map_err(CliError::usage)?,
                autostart: a.autostart,
                inter_vm,
            };
            def.validate().map_err(CliError::usage)?;
            let body = serde_json::to_vec(&def).map_err(|e| CliError::usage(e.to_string()))?;
            let s: NetworkStatus = c.json("POST", "/networks", Some(body))?;
            done(f, &s, "defined")
        }
        NetCommand::List => {
            let all: Vec<NetworkStatus> = c.json("GET", "/networks", None)?;
            if f == Format::Json {
                print_json(&all);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|s| {
                    let d = &s.definition;
                    vec![
                        d.name.clone(),
                        d.mode.as_str().into(),
                        if s.active { "active" } else { "inactive" }.into(),
                        d.subnet.map_or("-".into(), |s| s.to_string()),
                        s.bridge.clone(),
                        if d.autostart { "yes" } else { "no" }.into(),
                    ]
                })
                .collect();
            table(
                &["NAME", "MODE", "STATE", "SUBNET", "BRIDGE", "AUTOSTART"],
                &rows,
            );
            Ok(())
        }
        NetCommand::Info { name } => {
            let s: NetworkStatus = c.json("GET", &format!("/networks/{name}"), None)?;
            if f == Format::Json {
                print_json(&s);
                return Ok(());
            }
            let d = &s.definition;
            let switch = "as vm_inter_vm_traffic".to_string();
            let rows = [
                ("Name", d.name.clone()),
                ("Mode", d.mode.as_str().into()),
                ("State", if s.active { "active" } else { "inactive" }.into()),
                ("Bridge", s.bridge.clone()),
                ("Subnet", d.subnet.map_or("-".into(), |s| s.to_string())),
                ("Gateway", s.gateway.map_or("-".into(), |g| g.to_string())),
                ("DHCP", if d.dhcp { "on" } else { "off" }.into()),
                (
                    "dnsmasq",
                    s.dnsmasq_pid.map_or("-".into(), |p| format!("pid {p}")),
                ),
                (
                    "VM-to-VM",
                    match d.inter_vm {
                        Some(true) => "allow".into(),
                        Some(false) => "deny".into(),
                        None if d.mode == NetMode::Isolated => switch,
                        None => "allow".into(),
                    },
                ),
                ("Autostart", if d.autostart { "yes" } else { "no" }.into()),
                ("Running VMs", s.vms.join(", ")),
            ];
            for (k, v) in rows {
                println!("{k:<12} {v}");
            }
            Ok(())
        }
        NetCommand::Start { name } => {
            let s: NetworkStatus = c.json("POST", &format!("/networks/{name}/start"), None)?;
            done(f, &s, "started")
        }
        NetCommand::Stop { name } => {
            let s: NetworkStatus = c.json("POST", &format!("/networks/{name}/stop"), None)?;
            done(f, &s, "stopped")
        }
        NetCommand::Undefine { name } => {
            c.call("DELETE", &format!("/networks/{name}"), None)?;
            match f {
                Format::Json => print_json(&serde_json::json!({"name": name, "undefined": true})),
                Format::Table => println!("network '{name}' undefined"),
            }
            Ok(())
        }
        NetCommand::Leases { name } => {
            let leases: Vec<Lease> = c.json("GET", &format!("/networks/{name}/leases"), None)?;
            if f == Format::Json {
                print_json(&leases);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = leases
                .iter()
                .map(|l| {
                    vec![
                        l.ip.to_string(),
                        l.mac.clone(),
                        l.vm.clone().unwrap_or_else(|| "-".into()),
                        l.hostname.clone().unwrap_or_else(|| "-".into()),
                        l.expiry.to_string(),
                    ]
                })
                .collect();
            table(&["IP", "MAC", "VM", "HOSTNAME", "EXPIRY"], &rows);
            Ok(())
        }
    }
}

fn done(f: Format, s: &NetworkStatus, what: &str) -> CliResult {
    match f {
        Format::Json => print_json(s),
        Format::Table => println!("network '{}' {what}", s.definition.name),
    }
    Ok(())
}

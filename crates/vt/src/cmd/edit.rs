//! `vt edit NAME --memory/--vcpus/--disk-add/--disk-remove/--network-add/
//! --network-remove/--autostart/--cmdline`, `vt autostart NAME
//! [--disable]`, `vt dumpdef NAME` and `vt define FILE`.
//!
//! Each change is a JSON merge patch (RFC 7396, `PATCH /vms/NAME`) of the
//! definition the VM's next start uses (`GET /vms/NAME/definition`):
//! vtd checks it as it checks a new VM; a running VM gets it at its next
//! start (`vt info` says "pending"). `vt dumpdef NAME > f; vt define f`
//! gives the same definition: `define` makes the VM when it does not
//! exist, else patches it to be exactly the file (fields the file lacks
//! are reset to their defaults).

use std::path::PathBuf;

use api::manager::{VmDefinition, VmStatus};
use clap::Args;
use serde_json::{Map, Value};

use super::client::{CliError, CliResult, Client};
use super::create::{absolute, make_disks, parse_disk, parse_memory_onto, parse_network};
use super::options::boolean;
use super::output::{print_json, Format};

/// `vt edit`'s arguments: each one given changes one part of the
/// definition, the rest stays as it is.
#[derive(Debug, Args)]
pub struct EditArgs {
    /// The VM.
    pub name: String,
    /// Memory: `MIB[,merge=on][,thp=off][,hugepages=2M|1G]` (as `vt
    /// create`); options not named keep their current value.
    #[arg(long, value_name = "SPEC")]
    pub memory: Option<String>,
    /// vCPU count.
    #[arg(long, value_name = "N")]
    pub vcpus: Option<u32>,
    /// Add a disk: `vt create --disk`'s SPEC (`size=` creates the image);
    /// repeatable.
    #[arg(long, value_name = "SPEC")]
    pub disk_add: Vec<String>,
    /// Remove the disk with this image path (the image is kept);
    /// repeatable (all are looked up in the definition as it was).
    #[arg(long, value_name = "PATH")]
    pub disk_remove: Vec<String>,
    /// Add a NIC: `vt create --network`'s SPEC; repeatable.
    #[arg(long, value_name = "SPEC")]
    pub network_add: Vec<String>,
    /// Remove the NIC with this MAC, or at this index (0 first, of the
    /// NICs as they were before this edit); repeatable.
    #[arg(long, value_name = "MAC|INDEX")]
    pub network_remove: Vec<String>,
    /// Start the VM when vtd starts after a host boot: on or off.
    #[arg(long, value_name = "on|off")]
    pub autostart: Option<String>,
    /// The kernel command line.
    #[arg(long, value_name = "STR", allow_hyphen_values = true)]
    pub cmdline: Option<String>,
}

/// The definition the VM's next start uses.
fn next_definition(c: &Client, name: &str) -> CliResult<VmDefinition> {
    c.json("GET", &format!("/vms/{name}/definition"), None)
}

/// Sends `patch`, prints what became of the VM.
fn send(c: &Client, name: &str, patch: &Value, format: Format) -> CliResult {
    let body = serde_json::to_vec(patch).map_err(|e| CliError::usage(e.to_string()))?;
    let s: VmStatus = c.json("PATCH", &format!("/vms/{name}"), Some(body))?;
    match format {
        Format::Json => print_json(&s),
        Format::Table if s.pending_changes => {
            println!("{name}: changed; pending changes apply at next start")
        }
        Format::Table => println!("{name}: changed"),
    }
    Ok(())
}

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::usage(e.to_string())
}

/// The merge patch that makes `from` into `to`: every top-level field
/// that differs, `null` for one `to` lacks.
fn diff(from: &VmDefinition, to: &VmDefinition) -> CliResult<Value> {
    let (Value::Object(a), Value::Object(b)) = (
        serde_json::to_value(from).map_err(usage)?,
        serde_json::to_value(to).map_err(usage)?,
    ) else {
        return Err(usage("a definition is not a JSON object"));
    };
    let mut patch = Map::new();
    for (k, v) in &b {
        if a.get(k) != Some(v) {
            patch.insert(k.clone(), v.clone());
        }
    }
    for k in a.keys().filter(|k| !b.contains_key(*k)) {
        patch.insert(k.clone(), Value::Null);
    }
    Ok(Value::Object(patch))
}

/// `vt edit`: the merge patch of what `a` names, onto the definition the
/// VM's next start uses; exit 2 for bad arguments (a disk or NIC the VM
/// does not have), the API's error else. Images `--disk-add` made are
/// removed again when the change is refused.
pub fn edit(c: &Client, a: EditArgs, format: Format) -> CliResult {
    let current = next_definition(c, &a.name)?;
    let mut def = current.clone();
    if let Some(m) = &a.memory {
        let (mib, options) = parse_memory_onto(m, def.memory).map_err(CliError::usage)?;
        def.memory_mib = mib;
        def.memory = options;
    }
    if let Some(n) = a.vcpus {
        def.vcpus = n;
    }
    if let Some(v) = &a.autostart {
        def.autostart = boolean("--autostart", v).map_err(CliError::usage)?;
    }
    if let Some(cmdline) = &a.cmdline {
        def.cmdline = cmdline.clone();
    }
    let no_such = |flag: &str, r: &dyn std::fmt::Display, thing: &str| {
        CliError::usage(format!("{flag} {r}: VM '{}' has no such {thing}", a.name))
    };
    // Every removal is looked up in the definition as it was, then all
    // go at once (an index given after another removal still means the
    // NIC it meant).
    let mut gone = Vec::new();
    for p in &a.disk_remove {
        let path = absolute(p)?;
        let i = current
            .disks
            .iter()
            .position(|d| d.path == path)
            .ok_or_else(|| no_such("--disk-remove", &path.display(), "disk"))?;
        gone.push(i);
    }
    remove_at(&mut def.disks, gone);
    let mut gone = Vec::new();
    for r in &a.network_remove {
        let index = match r.parse::<usize>() {
            Ok(i) => Some(i).filter(|i| *i < current.networks.len()),
            Err(_) => {
                let mac =
                    api::canonical_mac(r).map_err(|e| usage(format!("--network-remove: {e}")))?;
                current
                    .networks
                    .iter()
                    .position(|n| n.mac.as_deref() == Some(mac.as_str()))
            }
        };
        gone.push(index.ok_or_else(|| no_such("--network-remove", r, "NIC"))?);
    }
    remove_at(&mut def.networks, gone);
    for n in &a.network_add {
        def.networks.extend(parse_network(n)?);
    }
    let mut added = Vec::new();
    let mut new = Vec::new();
    for d in &a.disk_add {
        let (disk, n) = parse_disk(d)?;
        added.push(disk);
        new.push(n);
    }
    def.validate().map_err(usage)?;
    let made: Vec<PathBuf> = make_disks(&mut added, &new)?;
    def.disks.extend(added);
    let patch = diff(&current, &def)?;
    let sent = send(c, &a.name, &patch, format);
    if sent.is_err() {
        // Leave no image behind for a change that was refused.
        made.iter().for_each(|p| drop(std::fs::remove_file(p)));
    }
    sent
}

/// Removes the items at `indexes` (of `v` as it is; each once), the
/// highest first so that the others keep their places.
fn remove_at<T>(v: &mut Vec<T>, mut indexes: Vec<usize>) {
    indexes.sort_unstable();
    indexes.dedup();
    for i in indexes.into_iter().rev() {
        if i < v.len() {
            v.remove(i);
        }
    }
}

/// `vt autostart NAME [--disable]`.
pub fn autostart(c: &Client, name: &str, disable: bool, format: Format) -> CliResult {
    send(
        c,
        name,
        &serde_json::json!({ "autostart": !disable }),
        format,
    )
}

/// `vt dumpdef NAME`: the definition as JSON, for `vt define`.
pub fn dumpdef(c: &Client, name: &str) -> CliResult {
    print_json(&next_definition(c, name)?);
    Ok(())
}

/// `vt define FILE` (`-` for stdin).
pub fn define(c: &Client, file: &str, format: Format) -> CliResult {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| usage(format!("stdin: {e}")))?
    } else {
        std::fs::read_to_string(file).map_err(|e| usage(format!("{file}: {e}")))?
    };
    let def: VmDefinition = serde_json::from_str(&text)
        .map_err(|e| usage(format!("{file}: not a VM definition: {e}")))?;
    def.validate().map_err(|e| usage(format!("{file}: {e}")))?;
    let name = def.name.clone();
    match next_definition(c, &name) {
        Ok(current) => {
            let mut patch = diff(&current, &def)?;
            if def.owner.is_none() {
                // A file without an owner leaves the owner as it is
                // (only root may change it; `null` would try).
                if let Value::Object(m) = &mut patch {
                    m.remove("owner");
                }
            }
            send(c, &name, &patch, format)
        }
        Err(e) if e.code == 4 => {
            let body = serde_json::to_vec(&def).map_err(usage)?;
            let s: VmStatus = c.json("POST", "/vms", Some(body))?;
            match format {
                Format::Json => print_json(&s),
                Format::Table => println!("VM '{name}' defined"),
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

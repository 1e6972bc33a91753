//! Policy switches (`vt policy`, the shape of `semanage boolean`): named
//! on/off settings that allow what is refused by default. The state in
//! force is kept in memory; `--persistent` also writes it to
//! `STATE/policy.json`, read at start. Each switch is checked where its
//! resource is used (see [`SWITCHES`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use api::network::PolicySwitch;

use crate::error::ApiError;
use crate::store;
use crate::vm::lock;

/// Every switch: name, default, what `on` allows.
pub const SWITCHES: &[(&str, bool, &str)] = &[
    (
        "vm_inter_vm_traffic",
        false,
        "VMs on an isolated network without an inter_vm setting of its own may reach each other",
    ),
    (
        "vm_host_bridges",
        false,
        "VMs of users other than root may have bridge= NICs (on a host bridge, no anti-spoofing, no VM-to-VM rules)",
    ),
    (
        "vm_use_nfs",
        false,
        "VMs may start with a kernel, initrd or disk image on an NFS file system",
    ),
    (
        "vm_use_fusefs",
        false,
        "VMs may start with a kernel, initrd or disk image on a FUSE file system",
    ),
    (
        "vm_host_paths",
        true,
        "VMs may use kernels, initrds and images outside vtd's --storage-dir directories",
    ),
    (
        "vm_shared_disks",
        false,
        "disks may be shareable=on (several VMs write one image, no lock taken)",
    ),
    (
        "vm_unconfined",
        false,
        "a VM defined with unconfined=true runs without its cell (root's VMs only)",
    ),
    (
        "vm_host_devices",
        false,
        "host device passthrough (none exists yet: stored and listed only)",
    ),
];

/// The switches in force and their persistent values.
pub struct Policy {
    file: PathBuf,
    state: Mutex<BTreeMap<&'static str, (bool, bool)>>,
}

fn lookup(name: &str) -> Result<&'static (&'static str, bool, &'static str), ApiError> {
    SWITCHES.iter().find(|(n, _, _)| *n == name).ok_or_else(|| {
        let names: Vec<&str> = SWITCHES.iter().map(|s| s.0).collect();
        ApiError::new(
            404,
            format!(
                "no policy switch named '{name}' (there are: {})",
                names.join(", ")
            ),
        )
    })
}

impl Policy {
    /// Loads `path` (`{"name": bool}`; a missing file is all defaults;
    /// unknown names are an error, so a typo is not silently ignored).
    pub fn open(path: &Path) -> std::io::Result<Policy> {
        let saved: BTreeMap<String, bool> = store::read_json(path)?.unwrap_or_default();
        let mut state = BTreeMap::new();
        for (name, default, _) in SWITCHES {
            let v = saved.get(*name).copied().unwrap_or(*default);
            state.insert(*name, (v, v));
        }
        if let Some(bad) = saved.keys().find(|k| lookup(k).is_err()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: unknown policy switch '{bad}'", path.display()),
            ));
        }
        Ok(Policy {
            file: path.to_path_buf(),
            state: Mutex::new(state),
        })
    }

    /// Whether switch `name` (one of [`SWITCHES`]) is on.
    pub fn on(&self, name: &str) -> bool {
        lock(&self.state).get(name).is_some_and(|s| s.0)
    }

    /// Every switch.
    pub fn list(&self) -> Vec<PolicySwitch> {
        let st = lock(&self.state);
        SWITCHES
            .iter()
            .map(|(name, _, desc)| {
                let (state, persistent) = st.get(name).copied().unwrap_or_default();
                PolicySwitch {
                    name: name.to_string(),
                    state,
                    persistent,
                    description: desc.to_string(),
                }
            })
            .collect()
    }

    /// Sets a switch (and, with `persistent`, its value after a restart,
    /// written before the change takes effect).
    pub fn set(&self, name: &str, on: bool, persistent: bool) -> Result<PolicySwitch, ApiError> {
        let (key, _, desc) = lookup(name)?;
        let mut st = lock(&self.state);
        let old = st.get(key).copied().unwrap_or_default();
        let new = (on, if persistent { on } else { old.1 });
        if persistent {
            let saved: BTreeMap<&str, bool> = st
                .iter()
                .map(|(k, v)| (*k, if k == key { on } else { v.1 }))
                .collect();
            store::write_json(&self.file, &saved)
                .map_err(|e| ApiError::internal("cannot write policy.json", e))?;
        }
        st.insert(key, new);
        Ok(PolicySwitch {
            name: key.to_string(),
            state: new.0,
            persistent: new.1,
            description: desc.to_string(),
        })
    }

    /// Puts a switch back as [`Policy::set`] found it (`old`: the state
    /// and persistent value before), when what the change needed failed.
    pub fn restore(&self, old: &PolicySwitch) -> Result<(), ApiError> {
        self.set(&old.name, old.persistent, true)?;
        self.set(&old.name, old.state, false).map(|_| ())
    }

    /// The switch `name` as it is now.
    pub fn get(&self, name: &str) -> Result<PolicySwitch, ApiError> {
        lookup(name)?;
        self.list()
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ApiError::internal("policy", "lost"))
    }

    /// An error unless switch `name` is on: `what` is refused.
    pub fn require(&self, name: &str, what: &str) -> Result<(), ApiError> {
        if self.on(name) {
            return Ok(());
        }
        Err(ApiError::new(
            403,
            format!("{what}: refused by policy (vt policy set {name} on allows it)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_and_persistent() {
        let d = std::env::temp_dir().join(format!("vtd-policy-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("policy.json");
        let p = Policy::open(&f).unwrap();
        assert!(!p.on("vm_use_nfs") && p.on("vm_host_paths"));
        p.set("vm_use_nfs", true, false).unwrap();
        assert!(p.on("vm_use_nfs"));
        // Runtime only: gone after a restart.
        assert!(!Policy::open(&f).unwrap().on("vm_use_nfs"));
        p.set("vm_use_fusefs", true, true).unwrap();
        let q = Policy::open(&f).unwrap();
        assert!(q.on("vm_use_fusefs") && !q.on("vm_use_nfs"));
        assert_eq!(p.set("nope", true, true).unwrap_err().status, 404);
        assert!(p
            .require("vm_shared_disks", "x")
            .unwrap_err()
            .message
            .contains("vt policy set vm_shared_disks on"));
        std::fs::write(&f, r#"{"vm_typo": true}"#).unwrap();
        assert!(Policy::open(&f).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}

//! Changing a defined VM: `PATCH /vms/{name}` with a JSON merge patch
//! (RFC 7396) of its definition.
//!
//! The patched definition is checked exactly as a new one is (`POST /vms`:
//! the definition's own rules, the files as the owner may open them, the
//! policy switches, NIC names, MACs and addresses, those of other VMs'
//! pending changes counted as taken). A stopped VM's `definition.json` is
//! rewritten at once; a running VM's change waits in
//! `definition.next.json` (`pending_changes` in its status) and becomes
//! its definition when it next starts (by request, a graceful reboot or
//! autostart), checked again in full then. Both are written like every
//! state file: temporary, fsync, rename. The VM object is changed in place
//! under its `op` lock: a request waiting on it sees the change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, MutexGuard};

use api::manager::{VmDefinition, VmState};
use vt_http::Peer;

use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::store::{self, VmDir};
use crate::vm::{lock, Vm};

/// The pending definition of a running VM.
pub fn pending_path(dir: &VmDir) -> PathBuf {
    dir.0.join("definition.next.json")
}

/// Whether a change waits for the VM's next start.
pub fn has_pending(dir: &VmDir) -> bool {
    pending_path(dir).is_file()
}

/// The daemon's VM map, held while a definition's NICs are checked and
/// written (two changes cannot take one MAC or address).
type Vms<'a> = MutexGuard<'a, BTreeMap<String, Arc<Vm>>>;

impl Daemon {
    /// The definition the VM's next start uses: the pending one if any.
    pub fn next_definition(&self, vm: &Vm) -> Result<VmDefinition, ApiError> {
        match store::read_json::<VmDefinition>(&pending_path(&vm.dir)) {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Ok(vm.def()),
            Err(e) => Err(ApiError::internal("cannot read the pending definition", e)),
        }
    }

    /// `PATCH /vms/{name}`: applies `patch` (RFC 7396) to the VM's next
    /// definition. 400 for a patch that does not give a valid definition
    /// (or renames the VM), 403 when a non-root caller changes the owner,
    /// 409 for a VM in state `unknown` or undefined meanwhile. Returns the
    /// top-level keys whose values changed, and the owner before and after
    /// (for the audit record).
    pub fn edit(
        &self,
        name: &str,
        patch: &serde_json::Value,
        peer: &Peer,
    ) -> Result<Change, ApiError> {
        let vm = self.get(name)?;
        let _op = vm.op();
        self.still_current(&vm, Some(peer))?;
        if vm.state() == VmState::Unknown {
            return Err(ApiError::conflict(format!(
                "VM '{name}' is in state unknown: vt repair {name} first"
            )));
        }
        if !patch.is_object() {
            return Err(ApiError::bad_request(
                "a merge patch (RFC 7396) of a VM definition is a JSON object",
            ));
        }
        let current = self.next_definition(&vm)?;
        let mut doc = serde_json::to_value(&current)
            .map_err(|e| ApiError::internal("encoding the definition", e))?;
        json_patch::merge(&mut doc, patch);
        let mut def: VmDefinition = serde_json::from_value(doc)
            .map_err(|e| ApiError::bad_request(format!("invalid VM definition: {e}")))?;
        if def.name != name {
            return Err(ApiError::bad_request(format!(
                "a VM cannot be renamed (name '{}' in the patch)",
                def.name
            )));
        }
        if peer.uid != 0 && def.owner != current.owner {
            return Err(ApiError::new(403, "only root may change a VM's owner"));
        }
        let vms = self.complete_and_check(&mut def)?;
        let change = Change::between(&current, &def);
        if def == current {
            return Ok(change);
        }
        let running = vm.state().is_active() || !vm.live_vmms().is_empty();
        if running {
            if def == vm.def() {
                // Changed back to what runs: nothing waits any more.
                store::remove(&pending_path(&vm.dir))
                    .map_err(|e| ApiError::internal("cannot remove the pending definition", e))?;
            } else {
                store::write_json(&pending_path(&vm.dir), &def)
                    .map_err(|e| ApiError::internal("cannot write the pending definition", e))?;
            }
            drop(vms);
            self.events.publish(
                name,
                "edited",
                vm.state(),
                Some("applies at next start".into()),
            );
            return Ok(change);
        }
        self.replace_definition(&vm, def, vms)?;
        self.events.publish(name, "edited", VmState::Stopped, None);
        Ok(change)
    }

    /// The checks of a new definition, and the NICs' MACs and addresses
    /// filled in, as `POST /vms` does; the VM map stays locked (returned)
    /// until the definition is written.
    fn complete_and_check(&self, def: &mut VmDefinition) -> Result<Vms<'_>, ApiError> {
        if def.kernel.is_none() {
            def.kernel = self.defaults.kernel.clone();
            if def.initrd.is_none() {
                def.initrd = self.defaults.initrd.clone();
            }
        }
        self.check(def)?;
        crate::admission::check(
            def,
            &self.policy,
            &self.options.storage_dirs,
            &self.defaults,
        )?;
        let vms = lock(&self.vms);
        let all: Vec<Arc<Vm>> = vms.values().cloned().collect();
        self.check_nics(def, &all)?;
        self.assign_nics(def, &vms)?;
        Ok(vms)
    }

    /// A stopped VM's definition becomes `def` (the caller holds its
    /// `op`): written, then set in the VM object in place.
    fn replace_definition(&self, vm: &Vm, def: VmDefinition, vms: Vms<'_>) -> Result<(), ApiError> {
        store::write_json(&vm.dir.definition(), &def)
            .map_err(|e| ApiError::internal("cannot write the definition", e))?;
        let old = vm.def();
        vm.set_def(def.clone());
        drop(vms);
        store::remove(&pending_path(&vm.dir))
            .map_err(|e| ApiError::internal("cannot remove the pending definition", e))?;
        self.update_hosts(&old);
        self.update_hosts(&def);
        self.watches.remove_images(vm.name());
        self.watches.add_images(&self.audit, &def);
        Ok(())
    }

    /// Before a start, with `vm.op()` held: a stopped VM's pending change
    /// becomes its definition, checked again in full (files, policy and
    /// other VMs' NICs may have changed since the edit; a change written
    /// by an older vtd or by hand was never checked). A change no longer
    /// valid is kept pending and the start refused with the reason.
    pub fn apply_pending(&self, vm: &Vm) -> Result<(), ApiError> {
        if !has_pending(&vm.dir) || vm.state().is_active() || !vm.live_vmms().is_empty() {
            return Ok(());
        }
        let name = vm.name();
        let stale = |e: ApiError| {
            ApiError::new(
                e.status,
                format!("the pending change of VM '{name}' no longer passes: {} (vt edit it, or vt define the old definition)", e.message),
            )
        };
        let mut def = self.next_definition(vm)?;
        if def.name != name {
            return Err(stale(ApiError::bad_request(format!(
                "it names VM '{}'",
                def.name
            ))));
        }
        let vms = self.complete_and_check(&mut def).map_err(stale)?;
        self.replace_definition(vm, def, vms)
    }
}

/// What a `PATCH` changed, for its audit record.
#[derive(Debug, Default)]
pub struct Change {
    /// The top-level keys of the definition whose values changed.
    pub keys: Vec<String>,
    /// The owner's uid before and after, when it changed (`None`: root's).
    pub owner: Option<(Option<u32>, Option<u32>)>,
}

impl Change {
    fn between(old: &VmDefinition, new: &VmDefinition) -> Change {
        let json = |d| match serde_json::to_value(d) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let (b, a) = (json(old), json(new));
        let keys = b
            .keys()
            .chain(a.keys())
            .filter(|k| b.get(*k) != a.get(*k))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let uid = |d: &VmDefinition| d.owner.map(|o| o.uid);
        Change {
            keys,
            owner: (uid(old) != uid(new)).then_some((uid(old), uid(new))),
        }
    }
}

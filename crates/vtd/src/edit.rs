//! Changing a defined VM: `PATCH /vms/{name}` with a JSON merge patch
//! (RFC 7396) of its definition.
//!
//! The patched definition is checked exactly as a new one is (`POST /vms`:
//! the definition's own rules, the files as the owner may open them, the
//! policy switches, NIC names, MACs and addresses). A stopped VM's
//! `definition.json` is rewritten at once; a running VM's change waits in
//! `definition.next.json` (`pending_changes` in its status) and becomes
//! its definition when it next starts (checked again then), or when vtd
//! finds it stopped at its own start (after a host reboot, say). Both are written like every
//! state file: temporary, fsync, rename.

use std::path::PathBuf;
use std::sync::Arc;

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

impl Daemon {
    /// The definition the VM's next start uses: the pending one if any.
    pub fn next_definition(&self, vm: &Vm) -> Result<VmDefinition, ApiError> {
        match store::read_json::<VmDefinition>(&pending_path(&vm.dir)) {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Ok(vm.def.clone()),
            Err(e) => Err(ApiError::internal("cannot read the pending definition", e)),
        }
    }

    /// `PATCH /vms/{name}`: applies `patch` (RFC 7396) to the VM's next
    /// definition. 400 for a patch that does not give a valid definition
    /// (or renames the VM), 403 when a non-root caller changes the owner,
    /// 409 for a VM in state `unknown`.
    pub fn edit(&self, name: &str, patch: &serde_json::Value, peer: &Peer) -> Result<(), ApiError> {
        let vm = self.get(name)?;
        let _op = vm.op();
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
        self.complete_and_check(&mut def)?;
        let running = vm.state().is_active() || !vm.live_vmms().is_empty();
        if def == current {
            return Ok(());
        }
        if running {
            if def == vm.def {
                // Changed back to what runs: nothing waits any more.
                store::remove(&pending_path(&vm.dir))
                    .map_err(|e| ApiError::internal("cannot remove the pending definition", e))?;
            } else {
                store::write_json(&pending_path(&vm.dir), &def)
                    .map_err(|e| ApiError::internal("cannot write the pending definition", e))?;
            }
            self.events.publish(
                name,
                "edited",
                vm.state(),
                Some("applies at next start".into()),
            );
            return Ok(());
        }
        self.replace_definition(&vm, &def)?;
        self.events.publish(name, "edited", VmState::Stopped, None);
        Ok(())
    }

    /// The checks of a new definition, and the NICs' MACs and addresses
    /// filled in, as `POST /vms` does.
    fn complete_and_check(&self, def: &mut VmDefinition) -> Result<(), ApiError> {
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
        self.assign_nics(def, &vms)
    }

    /// A stopped VM's definition becomes `def`: written, then the VM
    /// object is made again from its directory (its last exit kept).
    fn replace_definition(&self, vm: &Arc<Vm>, def: &VmDefinition) -> Result<(), ApiError> {
        store::write_json(&vm.dir.definition(), def)
            .map_err(|e| ApiError::internal("cannot write the definition", e))?;
        store::remove(&pending_path(&vm.dir))
            .map_err(|e| ApiError::internal("cannot remove the pending definition", e))?;
        let fresh = self.load(vm.name(), &[]);
        lock(&self.vms).insert(vm.name().to_string(), fresh);
        self.update_hosts(&vm.def);
        self.update_hosts(def);
        self.watches.remove_images(vm.name());
        self.watches.add_images(&self.audit, def);
        Ok(())
    }

    /// Before a start: a stopped VM with a pending change gets it; the VM
    /// to start is returned (a new object when the definition changed).
    pub fn apply_pending(&self, name: &str) -> Result<Arc<Vm>, ApiError> {
        let vm = self.get(name)?;
        if !has_pending(&vm.dir) {
            return Ok(vm);
        }
        {
            let _op = vm.op();
            if vm.state().is_active() || !vm.live_vmms().is_empty() {
                return Ok(vm.clone());
            }
            // Checked again: files, policy and other VMs' NICs may have
            // changed since the edit. A change no longer valid is kept
            // pending and the start refused with the reason.
            let mut def = self.next_definition(&vm)?;
            self.complete_and_check(&mut def).map_err(|e| {
                ApiError::new(
                    e.status,
                    format!("the pending change of VM '{name}' no longer passes: {} (vt edit it, or vt define the old definition)", e.message),
                )
            })?;
            self.replace_definition(&vm, &def)?;
        }
        self.get(name)
    }

    /// At vtd's start, before VM `name` is read: its pending change is
    /// applied when no VMM of it runs (`found`: every VMM found).
    pub fn apply_pending_at_load(&self, dir: &VmDir, found: &[crate::scan::Found]) {
        let pending = pending_path(dir);
        if !pending.is_file() || found.iter().any(|f| f.socket == dir.socket()) {
            return;
        }
        match store::read_json::<VmDefinition>(&pending) {
            Ok(Some(def)) => {
                if let Err(e) = store::write_json(&dir.definition(), &def)
                    .and_then(|()| store::remove(&pending))
                {
                    eprintln!("vtd: cannot apply {}: {e}", pending.display());
                }
            }
            other => eprintln!(
                "vtd: ignoring unreadable {}: {:?}",
                pending.display(),
                other.err()
            ),
        }
    }
}

//! Image-access watches: fanotify marks (`audit::fanotify`) on every VM's
//! disk images (key `image:NAME`, perms `rwa`, from its definition on) and
//! on the files an admin names (`vt audit watch add`, kept in
//! `STATE/watches.json`). One thread reads the events and records each
//! access, attributed: a pid that is a VM's VMM gets that VM's name.
//!
//! Who opens a VM's disk: `vtd` itself (as the owner, `access.rs`), which
//! passes the descriptor into the VMM's cell; so an open by pid = vtd is
//! recorded as `vtd` opening it, and the VM's own reads and writes (through
//! that descriptor) come from the VMM's pid.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use api::manager::VmDefinition;
use audit::fanotify::{Access, Perms, Watch, Watcher};
use audit::{Entry, Outcome};

use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::store;

/// The watches and their fanotify groups (`None` with why, when fanotify
/// cannot be used: not root, or an old kernel).
pub struct Watches {
    watcher: Result<Arc<Watcher>, String>,
    file: PathBuf,
    /// Paths never watched: the state directory (the trail, runtime.json
    /// files the watcher thread reads), the key, /proc and /sys.
    forbidden: Vec<PathBuf>,
    /// Serialises changes and their persistence.
    changes: Mutex<()>,
    /// The coalescing interval.
    coalesce: Duration,
    /// The VM each recently seen pid was attributed to, for the summaries
    /// of repeats (written when the VMM may have exited already).
    attributed: Mutex<HashMap<i32, Option<String>>>,
}

/// Pids remembered for attribution before the memory is cleared.
const ATTRIBUTED_MAX: usize = 4096;

/// A watch as the API takes it.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewWatch {
    pub path: PathBuf,
    #[serde(default = "default_perms")]
    pub perms: String,
    pub key: String,
}

fn default_perms() -> String {
    "rwa".into()
}

impl Watches {
    /// The fanotify groups; user watches are added by [`Watches::start`].
    pub fn new(state_dir: &Path, forbidden: Vec<PathBuf>, coalesce: Duration) -> Watches {
        Watches {
            watcher: Watcher::new().map(Arc::new).map_err(|e| e.to_string()),
            file: state_dir.join("watches.json"),
            forbidden,
            changes: Mutex::new(()),
            coalesce,
            attributed: Mutex::new(HashMap::new()),
        }
    }

    fn watcher(&self) -> Result<&Arc<Watcher>, ApiError> {
        self.watcher.as_ref().map_err(|e| {
            ApiError::new(
                503,
                format!("file watches are unavailable: fanotify_init: {e} (vtd needs root)"),
            )
        })
    }

    /// Puts back the saved watches and every VM's image watches, and
    /// starts the thread that records accesses.
    pub fn start(d: &Arc<Daemon>) {
        let w = &d.watches;
        let watcher = match &w.watcher {
            Ok(x) => x.clone(),
            Err(e) => {
                d.audit.log(Entry::new(
                    "watch.start",
                    Outcome::Failed,
                    format!("file watches are off: fanotify_init: {e}"),
                ));
                return;
            }
        };
        let saved: Vec<NewWatch> = store::read_json(&w.file).ok().flatten().unwrap_or_default();
        for n in saved {
            if let Err(e) = w.add_unsaved(&n) {
                d.audit.log(Entry::new(
                    "watch.add",
                    Outcome::Failed,
                    format!(
                        "saved watch on {} not restored: {}",
                        n.path.display(),
                        e.message
                    ),
                ));
            }
        }
        for vm in d.list() {
            w.add_images(&d.audit, &vm.def());
        }
        let weak = Arc::downgrade(d);
        let interval = w.coalesce;
        let runner = watcher.clone();
        let spawned = std::thread::Builder::new()
            .name("fanotify".into())
            .spawn(move || {
                // `run` closes the groups when it returns: no open waits.
                let e = runner.run(interval, |a| record(&weak, a));
                stopped(&weak, &format!("the file-watch thread stopped: {e}"));
            });
        if let Err(e) = spawned {
            // Nobody would answer the permission events: close the groups.
            watcher.close();
            stopped(
                &Arc::downgrade(d),
                &format!("cannot start the file-watch thread: {e}"),
            );
        }
    }

    fn check_path(&self, p: &Path) -> Result<PathBuf, ApiError> {
        let real = std::fs::canonicalize(p)
            .map_err(|e| ApiError::bad_request(format!("{}: {e}", p.display())))?;
        if real.is_dir() {
            return Err(ApiError::bad_request(format!(
                "{}: a directory: watch the files in it",
                p.display()
            )));
        }
        if self.forbidden.iter().any(|f| real.starts_with(f)) {
            return Err(ApiError::bad_request(format!(
                "{}: not watched: vtd's state directory, its audit key, /proc and /sys are read and written by the watcher itself",
                p.display()
            )));
        }
        Ok(real)
    }

    fn add_unsaved(&self, n: &NewWatch) -> Result<Watch, ApiError> {
        let perms: Perms = n.perms.parse().map_err(ApiError::bad_request)?;
        if n.key.is_empty() || n.key.len() > 128 || n.key.starts_with("image:") {
            return Err(ApiError::bad_request(
                "key: 1 to 128 characters, not starting with 'image:' (vtd's own)",
            ));
        }
        let path = self.check_path(&n.path)?;
        let w = Watch {
            id: 0,
            path,
            perms,
            key: n.key.clone(),
            image_of: None,
        };
        self.watcher()?
            .add(w)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }

    fn save(&self) -> Result<(), ApiError> {
        let user: Vec<NewWatch> = self
            .list()
            .into_iter()
            .filter(|w| w.image_of.is_none())
            .map(|w| NewWatch {
                path: w.path,
                perms: w.perms.to_string(),
                key: w.key,
            })
            .collect();
        store::write_json(&self.file, &user)
            .map_err(|e| ApiError::internal("cannot save watches.json", e))
    }

    /// Adds an admin's watch and saves it.
    pub fn add(&self, n: &NewWatch) -> Result<Watch, ApiError> {
        let _g = crate::vm::lock(&self.changes);
        let w = self.add_unsaved(n)?;
        if let Err(e) = self.save() {
            self.remove_unsaved(w.id);
            return Err(e);
        }
        Ok(w)
    }

    fn remove_unsaved(&self, id: u64) -> bool {
        self.watcher.as_ref().is_ok_and(|w| w.remove(id))
    }

    /// Removes an admin's watch (a VM's image watches go with the VM).
    pub fn remove(&self, id: u64) -> Result<(), ApiError> {
        let _g = crate::vm::lock(&self.changes);
        let w = self
            .list()
            .into_iter()
            .find(|w| w.id == id)
            .ok_or_else(|| ApiError::new(404, format!("no watch {id}")))?;
        if let Some(vm) = w.image_of {
            return Err(ApiError::conflict(format!(
                "watch {id} is VM '{vm}''s image watch: it goes when the VM is undefined"
            )));
        }
        self.remove_unsaved(id);
        self.save()
    }

    /// Every watch.
    pub fn list(&self) -> Vec<Watch> {
        self.watcher
            .as_ref()
            .map_or_else(|_| Vec::new(), |w| w.list())
    }

    /// Watches `def`'s disk images (and their qcow2 backing files are
    /// not included: only the images named). A disk that cannot be watched
    /// (among them: a path in vtd's state directory, its key, /proc or
    /// /sys, also through a symbolic link) is recorded as a failed
    /// `watch.add`. The watch is on the canonical path, with notification
    /// events only (no opener ever waits on the watcher for an image).
    pub fn add_images(&self, audit: &crate::audit::Audit, def: &VmDefinition) {
        let Ok(watcher) = &self.watcher else { return };
        let failed = |why: String| {
            audit.log(Entry {
                vm: Some(def.name.clone()),
                ..Entry::new("watch.add", Outcome::Failed, format!("image watch: {why}"))
            });
        };
        for d in &def.disks {
            let path = match self.check_path(&d.path) {
                Ok(p) => p,
                Err(e) => {
                    failed(e.message);
                    continue;
                }
            };
            let w = Watch {
                id: 0,
                path,
                perms: "rwa".parse().unwrap_or_default(),
                key: format!("image:{}", def.name),
                image_of: Some(def.name.clone()),
            };
            // Without FID support, no attribute changes.
            let added = watcher.add(w.clone()).or_else(|_| {
                watcher.add(Watch {
                    perms: "rw".parse().unwrap_or_default(),
                    ..w
                })
            });
            if let Err(e) = added {
                failed(e.to_string());
            }
        }
    }

    /// Removes VM `name`'s image watches.
    pub fn remove_images(&self, name: &str) {
        let Ok(watcher) = &self.watcher else { return };
        for w in watcher.list() {
            if w.image_of.as_deref() == Some(name) {
                watcher.remove(w.id);
            }
        }
    }
}

/// Reports on stderr and in the trail that watching has stopped.
fn stopped(d: &Weak<Daemon>, why: &str) {
    tracing::error!("{why}; file watches are off until vtd restarts");
    if let Some(d) = d.upgrade() {
        d.audit.log(Entry::new(
            "watch.stop",
            Outcome::Failed,
            format!("{why}; file watches are off until vtd restarts"),
        ));
    }
}

/// Records one access, attributed to a VM when the pid is its VMM's.
fn record(d: &Weak<Daemon>, a: Access) {
    let Some(d) = d.upgrade() else { return };
    let pid = a.pid as u32;
    let known = crate::vm::lock(&d.watches.attributed).get(&a.pid).cloned();
    let vm = match known.filter(|_| a.repeated) {
        Some(vm) => vm,
        None => {
            let vm = d
                .list()
                .into_iter()
                .find(|vm| vm.is_vmm_pid(pid))
                .map(|vm| vm.name().to_string());
            let mut seen = crate::vm::lock(&d.watches.attributed);
            if seen.len() >= ATTRIBUTED_MAX {
                seen.clear();
            }
            seen.insert(a.pid, vm.clone());
            vm
        }
    };
    let mut detail = a.watch.path.display().to_string();
    if let Some(of) = &a.watch.image_of {
        detail.push_str(&format!(" (image of VM '{of}')"));
    }
    if pid == std::process::id() {
        detail.push_str(": vtd itself (opening it to pass to a VMM, or checking it)");
    }
    if a.repeated {
        detail.push_str(&format!(
            ": {} more time(s) within {} s",
            a.count,
            d.watches.coalesce.as_secs()
        ));
    }
    d.audit.log(Entry {
        uid: a.uid,
        gid: a.gid,
        pid: Some(a.pid),
        exe: a.exe,
        vm,
        key: Some(a.watch.key),
        ..Entry::new(a.kind.action(), Outcome::Ok, detail)
    });
}

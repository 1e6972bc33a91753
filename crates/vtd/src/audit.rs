//! The audit trail (crate `audit`): every API action with the peer's
//! credentials and its result, every refusal, every lifecycle change and
//! every access to a watched file is one record of a hash-chained,
//! sealed, rotated log in `STATE/audit/`.
//!
//! Callers: [`Audit::record`] for an HTTP request (the old action-log
//! call, same signature), [`Audit::action`] for a named action with a
//! detail, [`Audit::log`] for any [`Entry`]. A record that cannot be
//! written is reported on stderr; the request still proceeds.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use audit::{Config, Entry, Filter, Key, Outcome, Record, Report, Trail};
use vt_http::Peer;

/// The trail's size management, from `vtd`'s flags.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub file_bytes: u64,
    pub files: usize,
}

pub struct Audit {
    trail: Mutex<Trail>,
    key_path: PathBuf,
}

/// The action name and VM of a request: `start` on `a` for
/// `POST /vms/a/start`, `define` for `POST /vms`, ...
pub fn describe(method: &str, path: &str) -> (String, Option<String>) {
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let vm = |i: usize| segs.get(i).map(|s| s.to_string());
    let name = match (method, segs.as_slice()) {
        ("POST", ["vms"]) => "define",
        ("GET", ["vms"]) => "list",
        ("GET", ["vms", _]) => "info",
        ("DELETE", ["vms", _]) => "undefine",
        ("GET", ["vms", _, "console"]) => "console.read",
        ("POST", ["vms", _, "console"]) => "console.write",
        ("POST", ["vms", _, action]) => action,
        ("GET", ["events"]) => "events",
        ("GET", ["openapi.json"]) => "openapi",
        ("GET", ["audit"]) => "audit.search",
        ("GET", ["audit", "verify"]) => "audit.verify",
        ("GET", ["audit", "watches"]) => "watch.list",
        ("POST", ["audit", "watches"]) => "watch.add",
        ("DELETE", ["audit", "watches", _]) => "watch.remove",
        ("GET", ["networks"]) => "net.list",
        ("POST", ["networks"]) => "net.define",
        ("GET", ["networks", _]) => "net.info",
        ("DELETE", ["networks", _]) => "net.undefine",
        ("POST", ["networks", _, "start"]) => "net.start",
        ("POST", ["networks", _, "stop"]) => "net.stop",
        ("GET", ["networks", _, "leases"]) => "net.leases",
        ("GET", ["policy"]) => "policy.list",
        ("PUT", ["policy", _]) => "policy.request",
        _ => "request",
    };
    let vm = if segs.first() == Some(&"vms") {
        vm(1)
    } else {
        None
    };
    (name.to_string(), vm)
}

impl Audit {
    /// Opens (or begins) the trail in `STATE/audit/`, sealed with the key
    /// at `key_path` (made, mode 0600, when missing).
    pub fn open(state_dir: &Path, key_path: &Path, limits: Limits) -> std::io::Result<Self> {
        let key = Key::load_or_create(key_path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("audit key {}: {e}", key_path.display()))
        })?;
        let cfg = Config {
            max_file_bytes: limits.file_bytes,
            max_files: limits.files,
            ..Config::new(state_dir.join("audit"), key)
        };
        Ok(Audit {
            trail: Mutex::new(Trail::open(cfg)?),
            key_path: key_path.to_path_buf(),
        })
    }

    fn trail(&self) -> std::sync::MutexGuard<'_, Trail> {
        self.trail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The trail directory and the key file.
    pub fn paths(&self) -> (PathBuf, PathBuf) {
        (self.trail().dir().to_path_buf(), self.key_path.clone())
    }

    /// Appends `entry`.
    pub fn log(&self, entry: Entry) {
        if let Err(e) = self.trail().append(entry) {
            eprintln!("vtd: error: cannot write the audit trail: {e}");
        }
    }

    /// Records a request from `peer`: `method path` answered `status`
    /// (the action and VM named from the path). The call of the old
    /// action log, kept for callers such as policy changes (the API's own
    /// requests are recorded by `routes::Api`).
    #[allow(dead_code)]
    pub fn record(&self, peer: &Peer, method: &str, path: &str, status: u16) {
        let (action, vm) = describe(method, path);
        let detail = format!("{method} {path}: {status}");
        self.action(
            peer,
            &action,
            vm.as_deref(),
            Outcome::of_status(status),
            detail,
        );
    }

    /// Records `action` by `peer` on `vm` (if any) with its outcome.
    pub fn action(
        &self,
        peer: &Peer,
        action: &str,
        vm: Option<&str>,
        result: Outcome,
        detail: String,
    ) {
        self.log(Entry {
            uid: Some(peer.uid),
            gid: Some(peer.gid),
            pid: Some(peer.pid),
            vm: vm.map(str::to_string),
            ..Entry::new(action, result, detail)
        });
    }

    /// Records a lifecycle change of `vm`: `lifecycle.started`, ...; the
    /// VMM's pid and uid when known.
    pub fn lifecycle(
        &self,
        vm: &str,
        event: &str,
        pid: Option<u32>,
        uid: Option<u32>,
        detail: String,
    ) {
        let result = if event == "crashed" {
            Outcome::Failed
        } else {
            Outcome::Ok
        };
        self.log(Entry {
            pid: pid.map(|p| p as i32),
            uid,
            vm: Some(vm.to_string()),
            ..Entry::new(format!("lifecycle.{event}"), result, detail)
        });
    }

    /// Verifies the whole trail (holding off writers meanwhile).
    pub fn verify(&self) -> std::io::Result<Report> {
        let t = self.trail();
        audit::verify(t.dir(), Some(t.key()))
    }

    /// The newest `limit` records that pass `filter`.
    pub fn search(&self, filter: &Filter, limit: usize) -> std::io::Result<Vec<Record>> {
        let t = self.trail();
        audit::search(t.dir(), filter, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named() {
        let d = |m, p| describe(m, p);
        assert_eq!(
            d("POST", "/vms/a/start"),
            ("start".into(), Some("a".into()))
        );
        assert_eq!(d("POST", "/vms"), ("define".into(), None));
        assert_eq!(d("DELETE", "/vms/b"), ("undefine".into(), Some("b".into())));
        assert_eq!(
            d("GET", "/vms/b/console?follow=1"),
            ("console.read".into(), Some("b".into()))
        );
        assert_eq!(
            d("DELETE", "/audit/watches/3"),
            ("watch.remove".into(), None)
        );
        assert_eq!(d("PUT", "/x"), ("request".into(), None));
    }
}

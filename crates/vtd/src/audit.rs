//! The audit trail (crate `audit`): every API action with the peer's
//! credentials and its result, every refusal, every lifecycle change and
//! every access to a watched file is one record of a hash-chained,
//! sealed, rotated log in `STATE/audit/`.
//!
//! Callers: [`Audit::record`] for an HTTP request (the old action-log
//! call, same signature), [`Audit::action`] for a named action with a
//! detail, [`Audit::log`] for any [`Entry`]. A record that cannot be
//! written is reported on stderr; the request still proceeds.
//!
//! Refusals are cheap to cause (a 404 or a malformed request on the 0666
//! read-only socket), and the trail keeps only `--audit-files` files: so
//! that a flood cannot rotate older evidence away, a non-root uid's
//! refusals are recorded one by one only up to [`REFUSALS_PER_SECOND`]
//! a second; the rest of that second are counted and recorded as one
//! `request.refusals` summary ("uid U: K more refusals ...") with the
//! next record written after the second ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// Per non-root uid: refusals in the current second.
    refusals: Mutex<HashMap<u32, Refusals>>,
}

/// Refusals of one uid recorded one by one per second; more are counted.
pub const REFUSALS_PER_SECOND: u32 = 20;

/// Uids whose refusals are counted at once (more: the oldest go, with
/// their summaries written).
const REFUSING_UIDS_MAX: usize = 1024;

/// One uid's refusals in the second that began at `since`.
#[derive(Debug, Clone, Copy)]
struct Refusals {
    since: Instant,
    recorded: u32,
    /// Not recorded one by one.
    more: u64,
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
        ("PATCH", ["vms", _]) => "edit",
        ("GET", ["vms", _, "definition"]) => "dumpdef",
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
            anchor: Some(audit::anchor::path_for(key_path)),
            ..Config::new(state_dir.join("audit"), key)
        };
        Ok(Audit {
            trail: Mutex::new(Trail::open(cfg)?),
            key_path: key_path.to_path_buf(),
            refusals: Mutex::new(HashMap::new()),
        })
    }

    fn trail(&self) -> std::sync::MutexGuard<'_, Trail> {
        self.trail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The trail directory and the key file.
    pub fn paths(&self) -> (PathBuf, PathBuf) {
        (self.trail().dir().to_path_buf(), self.key_path.clone())
    }

    /// Appends `entry` (after the summaries of refusals whose second
    /// has ended).
    pub fn log(&self, entry: Entry) {
        self.summarise(false);
        self.append(entry);
    }

    fn append(&self, entry: Entry) {
        if let Err(e) = self.trail().append(entry) {
            tracing::error!("cannot write the audit trail: {e}");
        }
    }

    /// Writes the summary of every uid whose second of refusals has ended
    /// (`all`: of every uid).
    fn summarise(&self, all: bool) {
        let ended: Vec<(u32, Refusals)> = {
            let mut r = crate::vm::lock(&self.refusals);
            let done: Vec<u32> = r
                .iter()
                .filter(|(_, c)| all || c.since.elapsed() >= Duration::from_secs(1))
                .map(|(u, _)| *u)
                .collect();
            done.into_iter()
                .filter_map(|u| r.remove(&u).map(|c| (u, c)))
                .filter(|(_, c)| c.more > 0)
                .collect()
        };
        for (uid, c) in ended {
            self.append(Entry {
                uid: Some(uid),
                ..Entry::new(
                    "request.refusals",
                    Outcome::Denied,
                    format!(
                        "uid {uid}: {} more refusals within {} ms, not recorded one by one (more than {REFUSALS_PER_SECOND} a second)",
                        c.more,
                        c.since.elapsed().as_millis().min(1000),
                    ),
                )
            });
        }
    }

    /// Whether a refusal of `uid` is recorded one by one (else counted).
    fn refusal_recorded(&self, uid: u32) -> bool {
        if uid == 0 {
            return true;
        }
        let mut r = crate::vm::lock(&self.refusals);
        if r.len() >= REFUSING_UIDS_MAX && !r.contains_key(&uid) {
            drop(r);
            self.summarise(true);
            r = crate::vm::lock(&self.refusals);
        }
        let c = r.entry(uid).or_insert(Refusals {
            since: Instant::now(),
            recorded: 0,
            more: 0,
        });
        if c.recorded < REFUSALS_PER_SECOND {
            c.recorded += 1;
            true
        } else {
            c.more += 1;
            false
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
        // Summaries of ended seconds first, so a new second starts anew.
        self.summarise(false);
        if result == Outcome::Denied && !self.refusal_recorded(peer.uid) {
            return;
        }
        self.append(Entry {
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
        self.summarise(false);
        let t = self.trail();
        let mut r = audit::verify(t.dir(), Some(t.key()))?;
        audit::anchor::check(&mut r, &audit::anchor::path_for(&self.key_path));
        Ok(r)
    }

    /// The newest `limit` records that pass `filter`.
    pub fn search(&self, filter: &Filter, limit: usize) -> std::io::Result<Vec<Record>> {
        self.summarise(false);
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

    #[test]
    fn a_flood_of_refusals_is_bounded_and_summarised() {
        let dir = std::env::temp_dir().join(format!("vtd-refusals-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let limits = Limits {
            file_bytes: 1 << 20,
            files: 4,
        };
        let a = Audit::open(&dir, &dir.join("key"), limits).unwrap();
        let user = Peer {
            pid: 1,
            uid: 1000,
            gid: 1000,
        };
        let root = Peer { uid: 0, ..user };
        let refuse = |p: &Peer, n: usize| {
            for _ in 0..n {
                a.action(p, "request", None, Outcome::Denied, "GET /nope: 404".into());
            }
        };
        refuse(&user, 5000);
        refuse(&root, 30);
        let count = |action: &str, uid: u32| {
            let f = Filter {
                action: Some(action.into()),
                uid: Some(uid),
                ..Filter::default()
            };
            let mut r = a.search(&f, 100_000).unwrap();
            r.retain(|r| r.entry.action == action);
            r
        };
        // Within the second: 20 records of the user, all of root's.
        assert_eq!(count("request", 1000).len(), REFUSALS_PER_SECOND as usize);
        assert_eq!(count("request", 0).len(), 30);
        std::thread::sleep(Duration::from_millis(1100));
        // The next record brings the summary of the 4980 others.
        let sums = count("request.refusals", 1000);
        assert_eq!(sums.len(), 1, "{sums:?}");
        assert!(
            sums[0]
                .entry
                .detail
                .contains("uid 1000: 4980 more refusals"),
            "{:?}",
            sums[0].entry.detail
        );
        // A new second: recorded one by one again; successes never counted.
        refuse(&user, 1);
        a.action(&user, "list", None, Outcome::Ok, "GET /vms: 200".into());
        assert_eq!(
            count("request", 1000).len(),
            REFUSALS_PER_SECOND as usize + 1
        );
        assert!(a.verify().unwrap().ok, "trail intact");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The REST API: one file per resource. [`ROUTES`] is the route table,
//! checked against the OpenAPI document (`openapi.json`) in tests.

mod actions;
mod audit;
mod balloon;
mod console;
mod edit;
mod events;
mod networks;
mod policy;
mod query;
mod stats;
mod vms;

use std::sync::Arc;

use serde::Serialize;
use vt_http::{Handler, Peer, Reply, Request, Response};

use crate::daemon::Daemon;
use crate::error::ApiError;

/// The OpenAPI 3 document, served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every route: method and path pattern (`{name}` is a VM name, `{id}` a
/// watch's number).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/openapi.json"),
    ("GET", "/vms"),
    ("POST", "/vms"),
    ("GET", "/vms/{name}"),
    ("DELETE", "/vms/{name}"),
    ("PATCH", "/vms/{name}"),
    ("GET", "/vms/{name}/definition"),
    ("POST", "/vms/{name}/start"),
    ("POST", "/vms/{name}/shutdown"),
    ("POST", "/vms/{name}/stop"),
    ("POST", "/vms/{name}/pause"),
    ("POST", "/vms/{name}/resume"),
    ("POST", "/vms/{name}/reboot"),
    ("POST", "/vms/{name}/reset"),
    ("POST", "/vms/{name}/repair"),
    ("GET", "/vms/{name}/console"),
    ("POST", "/vms/{name}/console"),
    ("GET", "/vms/{name}/balloon"),
    ("PUT", "/vms/{name}/balloon"),
    ("GET", "/vms/{name}/stats"),
    ("GET", "/metrics"),
    ("GET", "/events"),
    ("GET", "/networks"),
    ("POST", "/networks"),
    ("GET", "/networks/{name}"),
    ("DELETE", "/networks/{name}"),
    ("POST", "/networks/{name}/start"),
    ("POST", "/networks/{name}/stop"),
    ("GET", "/networks/{name}/leases"),
    ("GET", "/policy"),
    ("PUT", "/policy/{name}"),
    ("GET", "/audit"),
    ("GET", "/audit/verify"),
    ("GET", "/audit/watches"),
    ("POST", "/audit/watches"),
    ("DELETE", "/audit/watches/{id}"),
];

pub struct Api(pub Arc<Daemon>);

pub type Answer = Result<Reply, ApiError>;

/// A JSON answer.
pub fn json<T: Serialize>(status: u16, value: &T) -> Answer {
    let body = serde_json::to_vec(value).map_err(|e| ApiError::internal("encoding", e))?;
    Ok(Reply::Full(Response::json(status, body)))
}

/// Matches `path` against a pattern; returns the `{name}` (or `{id}`)
/// segment if any.
fn matches<'a>(pattern: &str, path: &'a str) -> Option<Option<&'a str>> {
    let mut name = None;
    let mut p = pattern.split('/');
    let mut s = path.split('/');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return Some(name),
            (Some(p), Some(seg)) if p.starts_with('{') && !seg.is_empty() => name = Some(seg),
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
}

impl Api {
    /// Serves `req`; `note` gets what the audit record should say beyond
    /// the request line (what a `PATCH` changed).
    fn route(&self, req: &Request, peer: &Peer, note: &mut Option<String>) -> Answer {
        let d = &*self.0;
        let path = req.path.strip_suffix('/').filter(|p| !p.is_empty());
        let path = path.unwrap_or(&req.path);
        let mut allowed = Vec::new();
        for (method, pattern) in ROUTES {
            let Some(name) = matches(pattern, path) else {
                continue;
            };
            if *method != req.method {
                allowed.push(*method);
                continue;
            }
            query::check(method, pattern, &req.query)?;
            let name = name.unwrap_or_default();
            if pattern.starts_with("/audit") && peer.uid != 0 {
                return Err(ApiError::new(
                    403,
                    "the audit trail and file watches are root's only",
                ));
            }
            // A VM is its owner's and root's: changing it, and reading its
            // console (logins, boot secrets), needs one of them.
            let console = pattern.ends_with("/console");
            let vm_route = pattern.starts_with("/vms/");
            if vm_route && (*method != "GET" || console) {
                authorize(d, name, peer)?;
            }
            return match (*method, *pattern) {
                ("GET", "/openapi.json") => Ok(Reply::Full(Response::json(200, OPENAPI))),
                ("GET", "/vms") => vms::list(d),
                ("POST", "/vms") => vms::create(d, &req.body, peer),
                ("GET", "/vms/{name}") => vms::get(d, name),
                ("DELETE", "/vms/{name}") => vms::undefine(d, name, peer),
                ("PATCH", "/vms/{name}") => edit::patch(d, name, &req.body, peer, note),
                ("GET", "/vms/{name}/definition") => edit::definition(d, name),
                ("GET", "/vms/{name}/console") => console::stream(d, name, req),
                ("POST", "/vms/{name}/console") => console::input(d, name, &req.body),
                ("GET", "/vms/{name}/balloon") => balloon::get(d, name),
                ("PUT", "/vms/{name}/balloon") => balloon::put(d, name, &req.body, peer),
                ("GET", "/vms/{name}/stats") => stats::get(d, name),
                ("GET", "/metrics") => stats::metrics(d),
                ("GET", "/events") => events::stream(d),
                ("GET", "/networks") => networks::list(d),
                ("POST", "/networks") => networks::define(d, &req.body, peer),
                ("GET", "/networks/{name}") => networks::get(d, name),
                ("DELETE", "/networks/{name}") => networks::undefine(d, name, peer),
                ("POST", "/networks/{name}/start") => networks::start(d, name, peer),
                ("POST", "/networks/{name}/stop") => networks::stop(d, name, peer),
                ("GET", "/networks/{name}/leases") => networks::leases(d, name),
                ("GET", "/policy") => policy::list(d),
                ("PUT", "/policy/{name}") => policy::set(d, name, &req.body, peer),
                ("GET", "/audit") => audit::search(d, req),
                ("GET", "/audit/verify") => audit::verify(d),
                ("GET", "/audit/watches") => audit::watches(d),
                ("POST", "/audit/watches") => audit::add_watch(d, &req.body),
                ("DELETE", "/audit/watches/{id}") => audit::remove_watch(d, name),
                (_, p) => actions::run(d, name, p.rsplit('/').next().unwrap_or(""), req, peer),
            };
        }
        if allowed.is_empty() {
            Err(ApiError::new(
                404,
                format!("no route for {} {}", req.method, req.path),
            ))
        } else {
            // HEAD is served as GET (vt_http), so it is allowed with it.
            if allowed.contains(&"GET") {
                allowed.push("HEAD");
            }
            let allowed = allowed.join(", ");
            let mut e = ApiError::new(
                405,
                format!(
                    "{} not allowed on {} (allowed: {allowed})",
                    req.method, req.path
                ),
            );
            e.allow = Some(allowed);
            Err(e)
        }
    }
}

/// Root, or the uid that defined VM `name` (see
/// [`crate::daemon::may_change`]).
fn authorize(d: &Daemon, name: &str, peer: &Peer) -> Result<(), ApiError> {
    if peer.uid == 0 {
        return Ok(());
    }
    crate::daemon::may_change(&*d.get(name)?, peer)
}

/// GETs recorded even when they succeed: they read what is not public
/// (a console's output, the trail, the watches). Every other GET is
/// recorded only when refused.
const AUDITED_GETS: &[&str] = &["console.read", "audit.search", "audit.verify", "watch.list"];

impl Api {
    /// Records a request in the audit trail: every change, every refusal
    /// and failure, and the reads in [`AUDITED_GETS`].
    fn audit(&self, peer: &Peer, req: &Request, status: u16, message: Option<&str>) {
        let (action, mut vm) = crate::audit::describe(&req.method, &req.path);
        let read = req.method == "GET" && !AUDITED_GETS.contains(&action.as_str());
        if read && status < 400 {
            return;
        }
        if action == "define" {
            // The VM's name is in the body.
            vm = serde_json::from_slice::<serde_json::Value>(&req.body)
                .ok()
                .and_then(|v| v.get("name")?.as_str().map(str::to_string));
        }
        let query = if req.query.is_empty() { "" } else { "?" };
        // A HEAD is served as GET but recorded as what it was.
        let method = if req.head {
            "HEAD"
        } else {
            req.method.as_str()
        };
        let mut detail = format!("{method} {}{query}{}: {status}", req.path, req.query);
        if let Some(m) = message {
            detail.push(' ');
            detail.push_str(m);
        }
        let result = ::audit::Outcome::of_status(status);
        self.0
            .audit
            .action(peer, &action, vm.as_deref(), result, detail);
    }
}

impl Handler for Api {
    fn handle(&self, req: Request, peer: &Peer) -> Reply {
        let mut note = None;
        let answer = self.route(&req, peer, &mut note);
        let (status, message) = match &answer {
            Ok(Reply::Full(r)) => (r.status, note.as_deref()),
            Ok(Reply::Stream { .. }) => (200, None),
            Err(e) => (e.status, Some(e.message.as_str())),
        };
        self.audit(peer, &req, status, message);
        if status >= 500 {
            tracing::error!(
                method = req.method.as_str(),
                path = req.path.as_str(),
                uid = peer.uid,
                status,
                "{}",
                message.unwrap_or("")
            );
        } else if status >= 400 {
            tracing::debug!(
                method = req.method.as_str(),
                path = req.path.as_str(),
                uid = peer.uid,
                status,
                "{}",
                message.unwrap_or("")
            );
        }
        answer.unwrap_or_else(|e| Reply::Full(e.response()))
    }

    fn error(&self, status: u16, message: &str) -> Response {
        ApiError::new(status, message).response()
    }

    fn refused(&self, peer: &Peer, status: u16, message: &str) -> Response {
        self.0.audit.action(
            peer,
            "request",
            None,
            ::audit::Outcome::of_status(status),
            format!("unreadable request: {status} {message}"),
        );
        self.error(status, message)
    }
}

/// The API on the read-only socket (mode 0666, as libvirt's
/// `libvirt-sock-ro`): lists, status, console output, events and the
/// OpenAPI document for anyone on the host; every change is refused with
/// 403 and recorded in the action log with the caller's credentials.
pub struct ReadOnly(pub Arc<Api>);

impl Handler for ReadOnly {
    fn handle(&self, req: Request, peer: &Peer) -> Reply {
        if req.method == "GET" {
            return self.0.handle(req, peer);
        }
        let e = ApiError::new(
            403,
            "the read-only socket allows GET only: changes go through the admin socket",
        );
        self.0.audit(peer, &req, e.status, Some(&e.message));
        Reply::Full(e.response())
    }

    fn error(&self, status: u16, message: &str) -> Response {
        self.0.error(status, message)
    }

    fn refused(&self, peer: &Peer, status: u16, message: &str) -> Response {
        self.0.refused(peer, status, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert_eq!(matches("/vms", "/vms"), Some(None));
        assert_eq!(matches("/vms/{name}", "/vms/a"), Some(Some("a")));
        assert_eq!(matches("/vms/{name}", "/vms/"), None);
        assert_eq!(
            matches("/vms/{name}/start", "/vms/a/start"),
            Some(Some("a"))
        );
        assert_eq!(matches("/vms/{name}/start", "/vms/a/stop"), None);
        assert_eq!(matches("/vms", "/vms/a"), None);
    }

    /// The document's disk schema has exactly the fields of
    /// `api::manager::DiskSpec`, and the formats it accepts.
    #[test]
    fn openapi_disk_schema_matches_disk_spec() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let props = &doc["components"]["schemas"]["VmDefinition"]["properties"]["disks"]["items"]
            ["properties"];
        let mut documented: Vec<&String> = props.as_object().unwrap().keys().collect();
        documented.sort();
        let full = api::manager::DiskSpec {
            path: "/d.qcow2".into(),
            readonly: true,
            shareable: true,
            format: Some(api::DiskFormat::Qcow2),
            cache: api::CacheMode::Direct,
        };
        let value = serde_json::to_value(&full).unwrap();
        let mut fields: Vec<&String> = value.as_object().unwrap().keys().collect();
        fields.sort();
        assert_eq!(documented, fields);
        for f in [api::DiskFormat::Raw, api::DiskFormat::Qcow2] {
            let name = serde_json::to_value(f).unwrap();
            assert!(props["format"]["enum"].as_array().unwrap().contains(&name));
        }
    }

    /// Every route is in the OpenAPI document, and the document has no
    /// route the server lacks.
    #[test]
    fn openapi_document_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let mut documented = Vec::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                if method != "parameters" {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }
}

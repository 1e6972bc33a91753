//! `/networks`: define, list, show, start, stop, undefine, leases
//! (`vt net ...`, libvirt's `net-*`). Changes are root's.

use api::network::NetworkDef;

use super::{json, Answer};
use crate::daemon::Daemon;
use crate::error::ApiError;

fn root(peer: &vt_http::Peer) -> Result<(), ApiError> {
    if peer.uid != 0 {
        return Err(ApiError::new(403, "only root may change networks"));
    }
    Ok(())
}

/// `GET /networks`.
pub fn list(d: &Daemon) -> Answer {
    let all: Vec<_> = d
        .nets
        .list()
        .iter()
        .map(|n| d.nets.status(&n.name, d.net_users(&n.name).1))
        .collect();
    json(200, &all)
}

/// `POST /networks` with a [`NetworkDef`].
pub fn define(d: &Daemon, body: &[u8], peer: &vt_http::Peer) -> Answer {
    root(peer)?;
    let def: NetworkDef = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid network definition: {e}")))?;
    json(201, &d.nets.define(def)?)
}

/// `GET /networks/{name}`.
pub fn get(d: &Daemon, name: &str) -> Answer {
    d.nets.get(name)?;
    json(200, &d.nets.status(name, d.net_users(name).1))
}

/// `DELETE /networks/{name}`.
pub fn undefine(d: &Daemon, name: &str, peer: &vt_http::Peer) -> Answer {
    root(peer)?;
    d.nets.undefine(name, &d.net_users(name).0)?;
    Ok(vt_http::Reply::Full(vt_http::Response::new(
        204,
        "application/json",
        "",
    )))
}

/// `POST /networks/{name}/start`: bridge, address, dnsmasq, rules.
pub fn start(d: &Daemon, name: &str, peer: &vt_http::Peer) -> Answer {
    root(peer)?;
    d.nets.start(name, &d.hosts_for(name))?;
    if let Err(e) = d.sync_rules() {
        // Not half-applied: without its rules the network goes again.
        let _ = d.nets.stop(name, &[]);
        let _ = d.sync_rules();
        return Err(e);
    }
    get(d, name)
}

/// `POST /networks/{name}/stop`: refused while VMs run on it.
pub fn stop(d: &Daemon, name: &str, peer: &vt_http::Peer) -> Answer {
    root(peer)?;
    d.nets.stop(name, &d.net_users(name).1)?;
    d.sync_rules()?;
    get(d, name)
}

/// `GET /networks/{name}/leases`: dnsmasq's leases, with the VM each MAC is.
pub fn leases(d: &Daemon, name: &str) -> Answer {
    let hosts = d.hosts_for(name);
    let mut leases = d.nets.leases(name)?;
    for l in &mut leases {
        l.vm = hosts
            .iter()
            .find(|h| h.mac.eq_ignore_ascii_case(&l.mac))
            .map(|h| h.name.clone());
    }
    json(200, &leases)
}

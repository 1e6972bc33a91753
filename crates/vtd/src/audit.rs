//! The action log: every request that changes something, with who sent it
//! (the peer's credentials from the socket) and how it ended.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;
use vt_http::Peer;

use crate::store::now_ms;

#[derive(Serialize)]
struct Line<'a> {
    time_ms: u64,
    uid: u32,
    gid: u32,
    pid: i32,
    method: &'a str,
    path: &'a str,
    status: u16,
}

pub struct Audit {
    file: Mutex<File>,
}

impl Audit {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Audit {
            file: Mutex::new(file),
        })
    }

    /// Appends one line (one write, so lines never interleave).
    pub fn record(&self, peer: &Peer, method: &str, path: &str, status: u16) {
        let line = Line {
            time_ms: now_ms(),
            uid: peer.uid,
            gid: peer.gid,
            pid: peer.pid,
            method,
            path,
            status,
        };
        if let Ok(mut text) = serde_json::to_string(&line) {
            text.push('\n');
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            let _ = f.write_all(text.as_bytes());
        }
    }
}

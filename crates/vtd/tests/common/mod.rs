//! Test support: a real `vtd` (and its `vt-vmm`s) in a temporary directory,
//! killed with everything it started when the test ends, pass or fail.

#![allow(dead_code, unused_macros, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use api::manager::{VmState, VmStatus};
use serde_json::Value;
use vt_http::Response;

pub fn have_kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

macro_rules! require_kvm {
    () => {
        if !common::have_kvm() {
            eprintln!("skipped: no usable /dev/kvm");
            return;
        }
    };
}
pub(crate) use require_kvm;

/// `vt-vmm` and `vt`, built beside `vtd` by `cargo test --workspace` (with
/// `cargo test -p vtd` alone they may be stale: add `-p vt -p vt-vmm -p vt-log`, whose `vt-logger` vtd runs per VM).
pub fn sibling(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_vtd")).with_file_name(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build -p vt-vmm -p vt` (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// A `vtd` with its own socket and state directory.
pub struct Vtd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub guest: PathBuf,
    child: Option<Child>,
    /// Run in a new network namespace with this bridge in it.
    bridge: Option<String>,
    /// More vtd flags.
    args: Vec<String>,
    /// The network namespace of a vtd started in one, held open: a
    /// restarted vtd goes back into it.
    netns: Option<std::fs::File>,
}

impl Vtd {
    /// A fresh directory (with a tiny guest kernel in it) and a running vtd.
    pub fn start(name: &str) -> Vtd {
        Self::start_with(name, None)
    }

    /// A vtd in its own network namespace, which has a bridge `bridge`.
    pub fn start_in_netns(name: &str, bridge: &str) -> Vtd {
        Self::start_with(name, Some(bridge.to_string()))
    }

    /// A vtd started with more flags.
    pub fn start_with_args(name: &str, args: &[&str]) -> Vtd {
        Self::start_full(name, None, args)
    }

    fn start_with(name: &str, bridge: Option<String>) -> Vtd {
        Self::start_full(name, bridge, &[])
    }

    fn start_full(name: &str, bridge: Option<String>, args: &[&str]) -> Vtd {
        let dir = std::env::temp_dir().join(format!("vtd-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let guest = dir.join("guest");
        std::fs::write(
            &guest,
            tinyguest::elf_with("tiny guest up\n", true, tinyguest::Ending::Halt),
        )
        .unwrap();
        let mut v = Vtd {
            socket: dir.join("vtd.sock"),
            state: dir.join("state"),
            guest,
            dir,
            child: None,
            bridge,
            args: args.iter().map(|a| a.to_string()).collect(),
            netns: None,
        };
        v.restart();
        v
    }

    /// Starts vtd (again) on the same socket and state.
    pub fn restart(&mut self) {
        self.restart_inheriting(None);
    }

    /// Starts vtd (again) with `file` open as its descriptor 77, not
    /// close-on-exec (a descriptor leaked to it by whoever started it).
    pub fn restart_inheriting(&mut self, file: Option<&std::fs::File>) {
        let mut cmd = match (&self.bridge, self.netns_path()) {
            (None, _) => Command::new(env!("CARGO_BIN_EXE_vtd")),
            (Some(_), Some(ns)) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={ns}"))
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_vtd"));
                c
            }
            (Some(br), None) => {
                let mut c = Command::new("unshare");
                c.args(["--net", "--", "sh", "-c"]).arg(format!(
                    "ip link add {br} type bridge && ip link set {br} up && exec \"$0\" \"$@\""
                ));
                c.arg(env!("CARGO_BIN_EXE_vtd"));
                c
            }
        };
        if let Some(f) = file {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = f.as_raw_fd();
            // SAFETY: dup2 is async-signal-safe; it runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::dup2(fd, 77) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--vmm")
            .arg(sibling("vt-vmm"))
            .arg("--default-kernel")
            .arg(&self.guest)
            .args(&self.args)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for(
            || vt_http::call(&self.socket, "GET", "/vms", None).is_ok(),
            "vtd's socket",
        );
        if self.bridge.is_some() && self.netns.is_none() {
            let pid = self.pid().unwrap();
            self.netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).ok();
        }
    }

    /// A path to vtd's network namespace (one started in its own), valid
    /// while this `Vtd` lives, vtd running or not.
    pub fn netns_path(&self) -> Option<String> {
        use std::os::fd::AsRawFd;
        let f = self.netns.as_ref()?;
        Some(format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd()))
    }

    /// Replaces the extra vtd flags (for the next [`Vtd::restart`]).
    pub fn set_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| a.to_string()).collect();
    }

    /// vtd's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9` of vtd.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        vt_http::call(
            &self.socket,
            method,
            path,
            body.map(|b| b.as_bytes().to_vec()),
        )
        .unwrap()
    }

    /// Calls and expects `status`; returns the JSON answer (Null if empty).
    pub fn expect(&self, method: &str, path: &str, body: Option<&str>, status: u16) -> Value {
        let r = self.call(method, path, body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap_or(Value::Null)
    }

    pub fn status(&self, name: &str) -> VmStatus {
        let r = self.call("GET", &format!("/vms/{name}"), None);
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }

    /// Defines a tiny-guest VM (the daemon's default kernel).
    pub fn define(&self, name: &str) {
        let body = format!(r#"{{"name":"{name}","memory_mib":16}}"#);
        self.expect("POST", "/vms", Some(&body), 201);
    }

    pub fn wait_state(&self, name: &str, state: VmState) -> VmStatus {
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let s = self.status(name);
            if s.state == state {
                return s;
            }
            last = Some(s);
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{name} never became {state:?}: {last:?}");
    }

    pub fn console_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.join("vms").join(name).join("console.log"))
            .unwrap_or_default()
    }

    /// `vt` pointed at this daemon.
    pub fn vt(&self, args: &[&str]) -> Output {
        Command::new(sibling("vt"))
            .args(args)
            .env("VT_SOCKET", &self.socket)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `vt` run as another user (uid = gid = `uid`) on `socket`.
    pub fn vt_as(&self, uid: u32, socket: &Path, args: &[&str]) -> Output {
        self.vt_as_ids(uid, uid, socket, args)
    }

    /// `vt` run as `uid` with primary group `gid` on `socket`.
    pub fn vt_as_ids(&self, uid: u32, gid: u32, socket: &Path, args: &[&str]) -> Output {
        use std::os::unix::process::CommandExt;
        Command::new(sibling("vt"))
            .args(args)
            .env("VT_SOCKET", socket)
            .current_dir(&self.dir)
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Records of the audit trail (`GET /audit?QUERY`, as root).
    pub fn audit(&self, query: &str) -> Vec<Value> {
        let r = self.call("GET", &format!("/audit?limit=100000&{query}"), None);
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }

    /// Every file under the state directory with its contents (the audit
    /// trail excepted), to show that a refused request changed nothing.
    pub fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(p: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            let Ok(rd) = std::fs::read_dir(p) else { return };
            for e in rd.flatten() {
                let path = e.path();
                if path.is_dir() {
                    out.push((path.clone(), Vec::new()));
                    walk(&path, out);
                } else if !path
                    .ancestors()
                    .any(|a| a.file_name().is_some_and(|n| n == "audit"))
                {
                    out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.state, &mut out);
        out.sort();
        out
    }
}

/// A live (not zombie) `vt-vmm` and the socket it serves.
pub struct LiveVmm {
    pub pid: u32,
    pub socket: PathBuf,
}

/// Every live `vt-vmm` serving a socket under `dir`, from `/proc`: a
/// process running the `vt-vmm` binary (a look-alike command line of
/// another program is no VMM).
pub fn live_vmms_under(dir: &Path) -> Vec<LiveVmm> {
    use std::os::unix::fs::MetadataExt;
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let vmm = std::fs::metadata(sibling("vt-vmm")).ok().map(id);
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if !args.first().is_some_and(|a| a.ends_with(b"vt-vmm")) {
            continue;
        }
        if std::fs::metadata(p.path().join("exe")).ok().map(id) != vmm {
            continue;
        }
        let value = |flag: &[u8]| args.windows(2).find(|w| w[0] == flag).map(|w| w[1]);
        let Some(sock) = value(b"--id").or_else(|| value(b"--api-socket")) else {
            continue;
        };
        let socket = PathBuf::from(String::from_utf8_lossy(sock).into_owned());
        if socket.starts_with(dir) && pid_alive(pid) {
            out.push(LiveVmm { pid, socket });
        }
    }
    out
}

impl Vtd {
    /// The invariant, checked against `/proc`: every live `vt-vmm` of
    /// this state directory serves a VM this vtd lists, no VM has two,
    /// and the VMs vtd reports running or paused are exactly those, with
    /// those pids.
    pub fn check_invariant(&self) -> Result<(), String> {
        let vms: Vec<VmStatus> = serde_json::from_slice(&self.call("GET", "/vms", None).body)
            .map_err(|e| format!("GET /vms: {e}"))?;
        let live = live_vmms_under(&self.state);
        let mut seen = std::collections::BTreeMap::new();
        for v in &live {
            let name = v
                .socket
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(other) = seen.insert(name.clone(), v.pid) {
                return Err(format!("VM {name} has two VMMs: {other} and {}", v.pid));
            }
            let Some(s) = vms.iter().find(|s| s.name == name) else {
                return Err(format!(
                    "vt-vmm {} serves {name}, which vtd does not list",
                    v.pid
                ));
            };
            let reported = s.state.is_active() || s.state == VmState::Unknown;
            if !reported || (s.state != VmState::Unknown && s.pid != Some(v.pid)) {
                return Err(format!(
                    "vt-vmm {} runs for {name}, vtd says {:?} pid {:?} ({:?})",
                    v.pid, s.state, s.pid, s.reason
                ));
            }
        }
        for s in vms.iter().filter(|s| s.state.is_active()) {
            if seen.get(&s.name) != s.pid.as_ref() {
                return Err(format!(
                    "vtd says {} runs as pid {:?}; /proc has {:?}",
                    s.name,
                    s.pid,
                    seen.get(&s.name)
                ));
            }
        }
        Ok(())
    }
}

impl Drop for Vtd {
    fn drop(&mut self) {
        self.kill9();
        kill_vmms_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGKILLs every vt-vmm (and dnsmasq) whose command line mentions `dir`.
pub fn kill_vmms_under(dir: &Path) {
    let needle = dir.as_os_str().as_encoded_bytes();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        // VMMs, and dnsmasq of the daemon's networks.
        let is_vmm = cmd
            .split(|b| *b == 0)
            .next()
            .is_some_and(|a| a.ends_with(b"vt-vmm") || a.ends_with(b"dnsmasq"));
        if is_vmm && cmd.windows(needle.len()).any(|w| w == needle) {
            // SAFETY: kill has no memory effects; the pid is a vt-vmm of this test.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

pub fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// The value of the lab script's `VT-HOST key=value` line in `out`.
pub fn host_value<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("VT-HOST {key}=");
    out.lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

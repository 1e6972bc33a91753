//! `vt-cell-probe`: a test helper that confines itself exactly as one kind
//! of `vt-vmm` thread is confined (the same functions: Landlock for the
//! VM's files, then the thread kind's whole seccomp stack), then makes one
//! attempt and prints its outcome. Used by `tests/confinement.rs` to prove
//! the barriers hold, not just that they are switched on.
//!
//! ```text
//! vt-cell-probe --thread main|vcpu|worker|api|console [--seccomp on|log|off]
//!     [--landlock on|off] --kernel P [--initrd P] [--disk SPEC]... [--net SPEC]...
//!     ATTEMPT [ARG]
//! ```
//!
//! Attempts: `open PATH` (read), `open-rw PATH`, `connect-unix PATH`,
//! `connect-abstract NAME`, `connect-tcp PORT` (127.0.0.1), `exec PATH`,
//! `ptrace PID`, `kill PID` (signal 0). Prints `outcome: ok` or
//! `outcome: errno N`; a call the seccomp filter kills ends the process
//! with SIGSYS before it prints.

use std::ffi::CString;
use std::process::ExitCode;

use vmm::sandbox::{self, Confinement, Policy, ThreadKind};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("vt-cell-probe: error: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut kind = ThreadKind::Main;
    let mut policy = Policy::default();
    let mut config = serde_json::json!({ "kernel": "/nonexistent" });
    let mut attempt = Vec::new();
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--thread" => {
                let v = value()?;
                kind = ThreadKind::from_name(&v).ok_or(format!("no thread kind {v}"))?;
            }
            "--seccomp" => {
                policy.seccomp =
                    serde_json::from_value(value()?.into()).map_err(|e| e.to_string())?
            }
            "--landlock" => {
                policy.landlock = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    v => return Err(format!("--landlock {v}: on or off")),
                }
            }
            "--kernel" => config["kernel"] = value()?.into(),
            "--initrd" => config["initrd"] = value()?.into(),
            "--disk" => {
                let d = api::parse_disk(&value()?).map_err(|e| e.to_string())?;
                push(
                    &mut config,
                    "disks",
                    serde_json::to_value(d).map_err(|e| e.to_string())?,
                );
            }
            "--net" => {
                let n = api::parse_net(&value()?).map_err(|e| e.to_string())?;
                push(
                    &mut config,
                    "nets",
                    serde_json::to_value(n).map_err(|e| e.to_string())?,
                );
            }
            _ => attempt.push(a),
        }
    }
    let config: api::VmConfig = serde_json::from_value(config).map_err(|e| e.to_string())?;
    Confinement::enter(&config, policy).map_err(|e| e.to_string())?;
    for k in kind.stack() {
        sandbox::enter_thread(*k);
    }
    let outcome = attempt_one(&attempt)?;
    println!("outcome: {outcome}");
    Ok(())
}

fn push(config: &mut serde_json::Value, key: &str, v: serde_json::Value) {
    match config[key].as_array_mut() {
        Some(list) => list.push(v),
        None => config[key] = serde_json::Value::Array(vec![v]),
    }
}

fn result(rc: libc::c_long) -> String {
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        format!("errno {}", e.raw_os_error().unwrap_or(0))
    } else {
        "ok".into()
    }
}

fn c(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|e| e.to_string())
}

fn attempt_one(attempt: &[String]) -> Result<String, String> {
    let arg = attempt.get(1).map(String::as_str).unwrap_or("");
    let num = || arg.parse::<i32>().map_err(|e| format!("{arg}: {e}"));
    Ok(match attempt.first().map(String::as_str) {
        Some(what @ ("open" | "open-rw")) => {
            let flags = if what == "open" {
                libc::O_RDONLY
            } else {
                libc::O_RDWR
            };
            let path = c(arg)?;
            // SAFETY: a NUL-terminated path; the fd, if any, is closed below.
            let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
            let r = result(fd.into());
            if fd >= 0 {
                // SAFETY: `fd` was just opened here.
                unsafe { libc::close(fd) };
            }
            r
        }
        Some("connect-unix") => connect_unix(arg.as_bytes(), false)?,
        Some("connect-abstract") => connect_unix(arg.as_bytes(), true)?,
        Some("connect-tcp") => {
            let port = num()? as u16;
            // SAFETY: plain socket(2); the fd is leaked into the exiting probe.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            if fd < 0 {
                return Ok(result(-1));
            }
            // SAFETY: sockaddr_in is plain data.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = port.to_be();
            sa.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
            // SAFETY: `sa` is a valid sockaddr_in of the size given.
            let rc = unsafe {
                libc::connect(
                    fd,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            result(rc.into())
        }
        Some("exec") => {
            let path = c(arg)?;
            let argv = [path.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            // SAFETY: NUL-terminated path and NULL-terminated argv/envp.
            let rc = unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            result(rc.into())
        }
        Some("ptrace") => {
            let pid = num()?;
            // SAFETY: PTRACE_ATTACH takes only the pid; no memory is passed.
            let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0usize, 0usize) };
            result(rc)
        }
        Some("kill") => {
            // SAFETY: signal 0 only checks whether the signal could be sent.
            let rc = unsafe { libc::kill(num()?, 0) };
            result(rc.into())
        }
        other => return Err(format!("unknown attempt {other:?}")),
    })
}

fn connect_unix(name: &[u8], abstract_ns: bool) -> Result<String, String> {
    // SAFETY: plain socket(2); the fd is leaked into the exiting probe.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return Ok(result(-1));
    }
    // SAFETY: sockaddr_un is plain data.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let start = usize::from(abstract_ns);
    if name.len() + start >= sa.sun_path.len() {
        return Err("socket name too long".into());
    }
    for (i, b) in name.iter().enumerate() {
        sa.sun_path[start + i] = *b as libc::c_char;
    }
    // Family, then the name and its NUL (a path) or the NUL and the name
    // (abstract): the same length either way.
    let len = std::mem::size_of::<libc::sa_family_t>() + name.len() + 1;
    // SAFETY: `sa` is a valid sockaddr_un and `len` is within it.
    let rc = unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_un).cast(), len as u32) };
    Ok(result(rc.into()))
}

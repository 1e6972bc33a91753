//! Bridges: made, addressed, brought up and removed with iproute2's `ip`
//! (the tool admins use and read; a few calls per network start).

use std::net::Ipv4Addr;

use crate::run;

/// Whether interface `name` exists in this network namespace (asked of
/// the kernel: `/sys` may show another namespace).
pub fn exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a NUL-terminated name; nothing is kept.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Makes bridge `name` (if missing) with `gateway/prefix` on it and brings
/// it up. Returns whether it made the bridge; on error a bridge it made is
/// removed again.
pub fn make_bridge(name: &str, gateway: Option<(Ipv4Addr, u8)>) -> Result<bool, String> {
    let made = if exists(name) {
        false
    } else {
        run("ip", &["link", "add", name, "type", "bridge"], None)?;
        true
    };
    let result = (|| {
        if let Some((gw, prefix)) = gateway {
            let addr = format!("{gw}/{prefix}");
            run("ip", &["addr", "replace", &addr, "dev", name], None)?;
        }
        run("ip", &["link", "set", name, "up"], None).map(|_| ())
    })();
    match result {
        Ok(()) => Ok(made),
        Err(e) => {
            if made {
                let _ = delete(name);
            }
            Err(e)
        }
    }
}

/// Removes interface `name` (a missing one is no error).
pub fn delete(name: &str) -> Result<(), String> {
    if !exists(name) {
        return Ok(());
    }
    run("ip", &["link", "del", name], None).map(|_| ())
}

/// Whether `name` is a bridge (`/sys/class/net/NAME/bridge` as this
/// namespace's sysfs shows it; a bridge in another namespace is not seen).
pub fn is_bridge(name: &str) -> bool {
    exists(name) && std::path::Path::new(&format!("/sys/class/net/{name}/bridge")).exists()
}

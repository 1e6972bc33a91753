//! `network`: VT System's virtual networks, as `vtd` runs them.
//!
//! - [`link`]: bridges and their gateway address (iproute2's `ip`);
//! - [`nft`]: the nftables ruleset `vtd` owns, two tables named `vtd`
//!   (`bridge` family: per-NIC anti-spoofing and VM-to-VM rules; `inet`
//!   family: what leaves the network, NAT), rebuilt whole from state in
//!   one transaction (`nft -j -f -`);
//! - [`dnsmasq`]: one DHCP/DNS server per network, a daemon of its own
//!   (it outlives `vtd`, which finds it again by its pid file);
//! - [`routes`]: the host's IPv4 routes, to refuse a subnet that collides.

pub mod dnsmasq;
pub mod link;
pub mod manager;
pub mod nft;
pub mod routes;

use std::path::PathBuf;

/// Finds `name` in `PATH`, then in `/usr/sbin` and `/sbin` (where Debian
/// puts `nft`, `ip` and `dnsmasq`, not always in a user's `PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `program args` (found with [`find_program`]) with `input` on its
/// stdin; its stderr's first lines on failure.
pub fn run(program: &str, args: &[&str], input: Option<&[u8]>) -> Result<String, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let exe = find_program(program).ok_or_else(|| {
        format!("{program} not found (install it: scripts/setup-host.sh lists the packages)")
    })?;
    let mut child = Command::new(&exe)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(data);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let err: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(4)
        .collect();
    Err(format!(
        "{program} {} failed ({}): {}",
        args.first().copied().unwrap_or_default(),
        out.status,
        err.join(" / ")
    ))
}

/// Writes `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

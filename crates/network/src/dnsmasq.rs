//! One dnsmasq per network with DHCP (as libvirt runs them): a daemon of
//! its own with a configuration file, a pid file, a hosts file of fixed
//! leases (one per NIC) and a lease file, all in the
//! network's directory. It outlives `vtd`; a restarted `vtd` finds it by
//! its pid file and command line.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use api::network::{Lease, NetMode, Subnet};

/// The files of one network's dnsmasq.
#[derive(Debug, Clone)]
pub struct Dnsmasq {
    /// The network's directory.
    pub dir: PathBuf,
}

/// One fixed lease: a NIC's MAC, address and the VM's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub mac: String,
    pub ip: Ipv4Addr,
    pub name: String,
}

impl Dnsmasq {
    pub fn conf(&self) -> PathBuf {
        self.dir.join("dnsmasq.conf")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("dnsmasq.pid")
    }
    pub fn leases(&self) -> PathBuf {
        self.dir.join("leases")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }

    /// The configuration: listen on the bridge's gateway address only,
    /// fixed leases only (`static`: a MAC without a `dhcp-host` line gets
    /// no address), no upstream DNS for an isolated network.
    pub fn config(&self, mode: NetMode, bridge: &str, subnet: &Subnet, hosts: &[Host]) -> String {
        let mask = Ipv4Addr::from(u32::MAX << (32 - u32::from(subnet.prefix)));
        let mut c = format!(
            "# written by vtd: do not edit\n\
             strict-order\n\
             pid-file={pid}\n\
             except-interface=lo\n\
             bind-dynamic\n\
             interface={bridge}\n\
             listen-address={gw}\n\
             dhcp-range={first},static,{mask}\n\
             dhcp-no-override\n\
             dhcp-authoritative\n\
             dhcp-leasefile={leases}\n\
             log-facility={log}\n\
             log-dhcp\n",
            pid = self.pid_file().display(),
            gw = subnet.gateway(),
            first = subnet.network(),
            leases = self.leases().display(),
            log = self.log().display(),
        );
        if mode == NetMode::Isolated {
            c.push_str("no-resolv\nno-poll\n");
        }
        for h in hosts {
            // A VM name that is no host name (`_x`, `a.b`, 64 bytes) is
            // left out: dnsmasq would refuse the whole file and take DHCP
            // and DNS down for every VM on the network.
            if is_hostname(&h.name) {
                c.push_str(&format!("dhcp-host={},{},{}\n", h.mac, h.ip, h.name));
            } else {
                c.push_str(&format!("dhcp-host={},{}\n", h.mac, h.ip));
            }
        }
        c
    }

    /// The running dnsmasq's pid: from the pid file, checked to be a
    /// dnsmasq with this configuration.
    pub fn pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let conf = format!("--conf-file={}", self.conf().display());
        let ours = cmd.split(|b| *b == 0).any(|a| a == conf.as_bytes());
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        (ours && !zombie).then_some(pid)
    }

    /// Starts dnsmasq (it forks, and its parent exits once the child has
    /// bound its sockets, so an error shows in the exit status). `exe` is
    /// the dnsmasq binary.
    pub fn start(
        &self,
        exe: &Path,
        mode: NetMode,
        bridge: &str,
        subnet: &Subnet,
        hosts: &[Host],
    ) -> Result<u32, String> {
        if let Some(pid) = self.pid() {
            return Ok(pid);
        }
        let conf = self.config(mode, bridge, subnet, hosts);
        crate::write_atomic(&self.conf(), conf.as_bytes())
            .map_err(|e| format!("{}: {e}", self.conf().display()))?;
        let out = std::process::Command::new(exe)
            .arg(format!("--conf-file={}", self.conf().display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        if !out.status.success() {
            return Err(format!(
                "dnsmasq failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // The pid file is written before the parent exits.
        self.pid()
            .ok_or_else(|| "dnsmasq started but wrote no pid file".to_string())
    }

    /// Stops dnsmasq (SIGTERM, then SIGKILL after 2 s).
    pub fn stop(&self) {
        let Some(pid) = self.pid() else {
            return;
        };
        // SAFETY: kill has no memory effects; pid is our dnsmasq.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        // Until it is gone (it removes its pid file before it has closed
        // its sockets, so the pid file does not tell).
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
        };
        while alive() {
            if std::time::Instant::now() > deadline {
                // SAFETY: kill has no memory effects; pid is our dnsmasq.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(self.pid_file());
    }

    /// The lease file, parsed (`EXPIRY MAC IP NAME CLIENT-ID` lines;
    /// malformed lines skipped).
    pub fn read_leases(&self) -> Vec<Lease> {
        parse_leases(&std::fs::read_to_string(self.leases()).unwrap_or_default())
    }
}

/// Whether `name` is a host name dnsmasq takes for `dhcp-host`: one
/// label of RFC 1123 (1-63 bytes of `A-Z a-z 0-9 -`, no '-' first or
/// last).
pub fn is_hostname(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Parses dnsmasq's lease file.
pub fn parse_leases(text: &str) -> Vec<Lease> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Lease {
                expiry: f.first()?.parse().ok()?,
                mac: f.get(1)?.to_string(),
                ip: f.get(2)?.parse().ok()?,
                hostname: f.get(3).filter(|h| **h != "*").map(|h| h.to_string()),
                vm: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_parse() {
        let l = parse_leases(
            "1700000000 52:54:00:aa:bb:cc 10.0.0.5 guest 01:52:54:00:aa:bb:cc\nbad\n0 x notanip *\n",
        );
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].ip, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(l[0].hostname.as_deref(), Some("guest"));
    }

    #[test]
    fn config_names_the_files() {
        let d = Dnsmasq { dir: "/s/n".into() };
        let s = Subnet::parse("10.1.0.0/16").unwrap();
        let h = Host {
            mac: "52:54:00:00:00:01".into(),
            ip: Ipv4Addr::new(10, 1, 0, 7),
            name: "vm1".into(),
        };
        let c = d.config(NetMode::Isolated, "vtbr-n", &s, &[h]);
        assert!(c.contains("dhcp-range=10.1.0.0,static,255.255.0.0"), "{c}");
        assert!(c.contains("listen-address=10.1.0.1"));
        assert!(c.contains("dhcp-host=52:54:00:00:00:01,10.1.0.7,vm1\n"));
        assert!(c.contains("no-resolv"));
        assert!(!d.config(NetMode::Nat, "b", &s, &[]).contains("no-resolv"));
    }

    #[test]
    fn vm_names_that_are_no_host_names_are_left_out() {
        let d = Dnsmasq { dir: "/s/n".into() };
        let s = Subnet::parse("10.1.0.0/24").unwrap();
        let names = ["_x", "a..b", "a.b", &"a".repeat(64), "-a", "ok-1"];
        let hosts: Vec<Host> = names
            .iter()
            .zip(2u8..)
            .map(|(n, i)| Host {
                mac: format!("52:54:00:00:00:{i:02x}"),
                ip: Ipv4Addr::new(10, 1, 0, i),
                name: n.to_string(),
            })
            .collect();
        let c = d.config(NetMode::Nat, "vtbr-n", &s, &hosts);
        assert!(c.contains("dhcp-host=52:54:00:00:00:02,10.1.0.2\n"), "{c}");
        assert!(c.contains("dhcp-host=52:54:00:00:00:07,10.1.0.7,ok-1\n"));
        assert!(!c.contains("_x") && !c.contains("a..b") && !c.contains(",-a"));
        // dnsmasq itself takes the file (its syntax check).
        let Some(exe) = crate::find_program("dnsmasq") else {
            eprintln!("skipped the dnsmasq check: dnsmasq is not installed");
            return;
        };
        let dir = std::env::temp_dir().join(format!("vt-dnsmasq-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("dnsmasq.conf");
        std::fs::write(&conf, &c).unwrap();
        let out = std::process::Command::new(exe)
            .arg("--test")
            .arg(format!("--conf-file={}", conf.display()))
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "dnsmasq refused the configuration: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

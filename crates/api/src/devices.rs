//! Device configuration: disks, NICs, rate limits, and the `key=value,...`
//! specs the command lines use for them (`--disk`, `--net`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Longest virtio-blk serial (the GET_ID reply is 20 bytes).
pub const MAX_SERIAL_LEN: usize = 20;

/// A token-bucket limit; each field unset means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(default)]
    pub bytes_per_sec: Option<u64>,
    #[serde(default)]
    pub ops_per_sec: Option<u64>,
}

impl RateLimit {
    pub fn is_unlimited(&self) -> bool {
        self.bytes_per_sec.is_none() && self.ops_per_sec.is_none()
    }
}

/// How a disk's I/O meets the host's page cache (QEMU's and libvirt's
/// `cache=` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CacheMode {
    /// Through the host's page cache; flushes reach the disk.
    #[default]
    #[serde(rename = "writeback")]
    Writeback,
    /// O_DIRECT: around the host's page cache, straight to the device.
    #[serde(rename = "none")]
    Direct,
}

/// An image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// The file's bytes are the disk's bytes.
    Raw,
    /// QEMU's copy-on-write format (v2 or v3).
    Qcow2,
}

impl DiskFormat {
    /// `"raw"` or `"qcow2"`, as in `format=`.
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }

    /// Parses `raw` or `qcow2`.
    pub fn parse(v: &str) -> Result<DiskFormat, SpecError> {
        match v {
            "raw" => Ok(DiskFormat::Raw),
            "qcow2" => Ok(DiskFormat::Qcow2),
            _ => Err(SpecError::Value(
                "format",
                format!("'{v}' is not raw or qcow2"),
            )),
        }
    }
}

/// A virtio-blk disk backed by an image file (raw or qcow2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The image file or block device.
    pub path: PathBuf,
    #[serde(default)]
    pub readonly: bool,
    /// The image format; unset probes, and refuses a writable image that
    /// is not raw (pass `raw` to use an image header as plain bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DiskFormat>,
    /// No image lock (the user shares the disk between VMs on purpose).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shareable: bool,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub rate: RateLimit,
    #[serde(default)]
    pub cache: CacheMode,
    /// With `cache=none`: the file to open with O_DIRECT when it is not
    /// `path` itself (a descriptor passed as `/dev/fd/M` by a manager,
    /// opened with O_DIRECT there: a jailed VMM cannot reopen files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_path: Option<PathBuf>,
    /// A qcow2's backing files already open, top-down (`/dev/fd/N`,
    /// passed by a manager that walked the chain); empty: the VMM opens
    /// the backing files the image names itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backing_paths: Vec<PathBuf>,
}

/// `/dev/fd/N`: how a configuration names a descriptor the VMM was given.
fn fd_path(key: &'static str, v: &str) -> Result<PathBuf, SpecError> {
    let n: u32 = v
        .parse()
        .map_err(|_| SpecError::Value(key, format!("'{v}' is not a descriptor number")))?;
    Ok(PathBuf::from(format!("/dev/fd/{n}")))
}

/// A virtio-net NIC on a tap device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The tap interface (opened if it exists, created if privileged).
    pub tap: String,
    /// `52:54:00:12:34:56`; generated from the tap name when unset.
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub rate: RateLimit,
    /// An already-open tap queue (`/dev/net/tun` after TUNSETIFF), passed
    /// by a manager that made the tap in the host's network namespace;
    /// `tap` is then only its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<u32>,
}

/// A device spec that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("'{0}' is not key=value")]
    NotKeyValue(String),
    #[error("unknown key '{0}' (expected one of: {1})")]
    UnknownKey(String, &'static str),
    #[error("'{0}' is given twice")]
    Duplicate(String),
    #[error("'{0}' is required")]
    Missing(&'static str),
    #[error("invalid value for '{0}': {1}")]
    Value(&'static str, String),
}

type Pairs<'a> = Vec<(&'a str, &'a str)>;

fn pairs<'a>(spec: &'a str, keys: &'static str) -> Result<Pairs<'a>, SpecError> {
    let mut out: Pairs<'a> = Vec::new();
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| SpecError::NotKeyValue(part.to_string()))?;
        if !keys.split(", ").any(|x| x == k) {
            return Err(SpecError::UnknownKey(k.to_string(), keys));
        }
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(SpecError::Duplicate(k.to_string()));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn on_off(key: &'static str, v: &str) -> Result<bool, SpecError> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(SpecError::Value(key, format!("'{v}' is not on/off"))),
    }
}

/// `10M` → 10 MiB; plain numbers, K, M, G (powers of 1024).
pub fn parse_size(key: &'static str, v: &str) -> Result<u64, SpecError> {
    let (num, mult) = match v.char_indices().last() {
        Some((i, 'K' | 'k')) => (&v[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&v[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&v[..i], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| SpecError::Value(key, format!("'{v}' is not a positive size")))
}

fn rate(key: &'static str, v: &str, r: &mut RateLimit) -> Result<(), SpecError> {
    let n = parse_size(key, v)?;
    match key {
        "bw" => r.bytes_per_sec = Some(n),
        _ => r.ops_per_sec = Some(n),
    }
    Ok(())
}

/// `path=P|fd=N[,direct_fd=M][,format=raw|qcow2][,readonly=on][,shareable=on][,serial=S][,bw=BYTES/s][,iops=N][,cache=none|writeback]`
/// (`fd=N` is a descriptor the VMM was given, as `/dev/fd/N`).
pub fn parse_disk(spec: &str) -> Result<DiskConfig, SpecError> {
    let mut disk = DiskConfig {
        path: PathBuf::new(),
        readonly: false,
        format: None,
        shareable: false,
        serial: None,
        rate: RateLimit::default(),
        cache: CacheMode::Writeback,
        direct_path: None,
        backing_paths: Vec::new(),
    };
    let keys =
        "path, fd, direct_fd, backing_fds, format, readonly, shareable, serial, bw, iops, cache";
    let pairs = pairs(spec, keys)?;
    if pairs.iter().any(|(k, _)| *k == "path") && pairs.iter().any(|(k, _)| *k == "fd") {
        return Err(SpecError::Value(
            "fd",
            "path= and fd= exclude each other".into(),
        ));
    }
    for (k, v) in pairs {
        match k {
            "fd" => disk.path = fd_path("fd", v)?,
            "direct_fd" => disk.direct_path = Some(fd_path("direct_fd", v)?),
            "backing_fds" => {
                disk.backing_paths = v
                    .split(':')
                    .map(|n| fd_path("backing_fds", n))
                    .collect::<Result<_, _>>()?
            }
            "format" => disk.format = Some(DiskFormat::parse(v)?),
            "shareable" => disk.shareable = on_off("shareable", v)?,
            "path" if !v.is_empty() => disk.path = v.into(),
            "path" => return Err(SpecError::Value("path", "empty".into())),
            "readonly" => disk.readonly = on_off("readonly", v)?,
            "serial" => disk.serial = Some(v.to_string()),
            "bw" => rate("bw", v, &mut disk.rate)?,
            "cache" => {
                disk.cache = match v {
                    "none" => CacheMode::Direct,
                    "writeback" => CacheMode::Writeback,
                    _ => return Err(SpecError::Value("cache", "not none or writeback".into())),
                }
            }
            _ => rate("iops", v, &mut disk.rate)?,
        }
    }
    if disk.path.as_os_str().is_empty() {
        return Err(SpecError::Missing("path"));
    }
    disk.validate()?;
    Ok(disk)
}

/// `tap=NAME[,fd=N][,mac=MAC][,bw=BYTES/s][,pps=N]` (`fd=N`: the tap
/// already open as descriptor N).
pub fn parse_net(spec: &str) -> Result<NetConfig, SpecError> {
    let mut net = NetConfig {
        tap: String::new(),
        mac: None,
        rate: RateLimit::default(),
        fd: None,
    };
    for (k, v) in pairs(spec, "tap, fd, mac, bw, pps")? {
        match k {
            "tap" => net.tap = v.to_string(),
            "fd" => {
                net.fd = Some(v.parse().map_err(|_| {
                    SpecError::Value("fd", format!("'{v}' is not a descriptor number"))
                })?)
            }
            "mac" => net.mac = Some(v.to_string()),
            "bw" => rate("bw", v, &mut net.rate)?,
            _ => rate("pps", v, &mut net.rate)?,
        }
    }
    net.validate()?;
    Ok(net)
}

/// Parses `aa:bb:cc:dd:ee:ff` (exactly two hex digits per octet, either
/// case; no sign, no space); refuses multicast addresses and the
/// all-zero address (no NIC may have it: a guest driver treats it as "no
/// address" and Linux picks a random one).
pub fn parse_mac(s: &str) -> Result<[u8; 6], SpecError> {
    let bad = || {
        SpecError::Value(
            "mac",
            format!("'{s}' is not a unicast MAC like 52:54:00:12:34:56"),
        )
    };
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        // from_str_radix alone takes "+a" (a sign) as an octet.
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() || mac[0] & 1 != 0 {
        return Err(bad());
    }
    if mac == [0; 6] {
        return Err(SpecError::Value(
            "mac",
            format!("'{s}' is the all-zero address, which no NIC may have"),
        ));
    }
    Ok(mac)
}

/// `mac` in its one written form: lowercase, two digits an octet
/// (`52:54:00:ab:cd:ef`), the form stored, compared and handed to
/// nftables and dnsmasq.
pub fn format_mac(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// [`parse_mac`] then [`format_mac`].
pub fn canonical_mac(s: &str) -> Result<String, SpecError> {
    parse_mac(s).map(format_mac)
}

impl DiskConfig {
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(s) = &self.serial {
            if s.len() > MAX_SERIAL_LEN || s.is_empty() {
                return Err(SpecError::Value(
                    "serial",
                    format!("must be 1 to {MAX_SERIAL_LEN} bytes, got {}", s.len()),
                ));
            }
        }
        Ok(())
    }
}

impl NetConfig {
    pub fn validate(&self) -> Result<(), SpecError> {
        // IFNAMSIZ is 16 with the NUL.
        if self.tap.is_empty() || self.tap.len() > 15 || self.tap.contains(['/', ' ', '\0']) {
            return Err(SpecError::Value(
                "tap",
                format!("'{}' is not an interface name (1-15 bytes)", self.tap),
            ));
        }
        if let Some(m) = &self.mac {
            parse_mac(m)?;
        }
        Ok(())
    }

    /// The MAC to use: the given one, else one derived from the tap name
    /// (stable across runs), in the locally administered 52:54:00 range.
    pub fn mac_bytes(&self) -> Result<[u8; 6], SpecError> {
        if let Some(m) = &self.mac {
            return parse_mac(m);
        }
        // FNV-1a of the name.
        let mut h: u32 = 0x811c_9dc5;
        for b in self.tap.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        let [_, a, b, c] = h.to_be_bytes();
        Ok([0x52, 0x54, 0x00, a, b, c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_specs() {
        let d = parse_disk("path=/x.img,readonly=on,serial=abc,bw=10M,iops=200").unwrap();
        assert_eq!(d.cache, CacheMode::Writeback);
        let direct = parse_disk("path=/x.img,cache=none").unwrap();
        assert_eq!(direct.cache, CacheMode::Direct);
        assert_eq!(d.path, PathBuf::from("/x.img"));
        assert!(d.readonly);
        assert_eq!(d.serial.as_deref(), Some("abc"));
        assert_eq!(d.rate.bytes_per_sec, Some(10 << 20));
        assert_eq!(d.rate.ops_per_sec, Some(200));
        assert_eq!(parse_disk("path=/y").unwrap().rate, RateLimit::default());
        let fd = parse_disk("fd=5,direct_fd=6,cache=none").unwrap();
        assert_eq!(fd.path, PathBuf::from("/dev/fd/5"));
        assert_eq!(fd.direct_path, Some(PathBuf::from("/dev/fd/6")));
        let chain = parse_disk("fd=5,backing_fds=7:8,format=qcow2").unwrap();
        assert_eq!(
            chain.backing_paths,
            [PathBuf::from("/dev/fd/7"), "/dev/fd/8".into()]
        );
        assert_eq!(parse_net("tap=vt0,fd=7").unwrap().fd, Some(7));
        let q = parse_disk("path=/q,format=qcow2,shareable=on").unwrap();
        assert_eq!((q.format, q.shareable), (Some(DiskFormat::Qcow2), true));
        assert_eq!(parse_disk("path=/q").unwrap().format, None);
        for (bad, want) in [
            ("readonly=on", "'path' is required"),
            ("path=", "empty"),
            ("path=/x,path=/y", "given twice"),
            ("path=/x,fd=3", "exclude each other"),
            ("fd=x", "not a descriptor number"),
            ("path=/x,format=vmdk", "'vmdk' is not raw or qcow2"),
            ("path=/x,bus=ide", "unknown key 'bus'"),
            ("path=/x,shareable=maybe", "not on/off"),
            ("/x", "not key=value"),
            ("path=/x,readonly=maybe", "not on/off"),
            ("path=/x,cache=unsafe", "not none or writeback"),
            ("path=/x,serial=123456789012345678901", "1 to 20 bytes"),
            ("path=/x,bw=0", "positive size"),
            ("path=/x,iops=-1", "positive size"),
            ("path=/x,bw=99999999999999999999G", "positive size"),
        ] {
            let e = parse_disk(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn macs_have_one_written_form() {
        assert_eq!(
            canonical_mac("52:54:00:AB:cd:0F").unwrap(),
            "52:54:00:ab:cd:0f"
        );
        // A sign is no hex digit (u8::from_str_radix("+a", 16) is 10).
        assert!(parse_mac("52:54:00:+a:00:01").is_err());
        assert!(canonical_mac("52:54:00:0a:00:1").is_err());
    }

    #[test]
    fn net_specs_and_macs() {
        let n = parse_net("tap=vt0,mac=52:54:00:ab:cd:ef").unwrap();
        assert_eq!(n.mac_bytes().unwrap(), [0x52, 0x54, 0, 0xab, 0xcd, 0xef]);
        let g = parse_net("tap=vt0").unwrap().mac_bytes().unwrap();
        assert_eq!(g, parse_net("tap=vt0").unwrap().mac_bytes().unwrap());
        assert_ne!(g, parse_net("tap=vt1").unwrap().mac_bytes().unwrap());
        assert_eq!(&g[..3], &[0x52, 0x54, 0]);
        for bad in [
            "tap=",
            "tap=a-very-long-interface-name",
            "tap=vt0,mac=01:00:00:00:00:01",
            "tap=vt0,mac=52:54:00:00:00",
            "tap=vt0,mac=52:54:00:00:00:zz",
            "tap=vt0,mac=52:54:00:+a:00:01",
            "tap=vt0,mac=52:54:00:-0:00:01",
            "tap=vt0,mac=52:54:00: a:00:01",
            "mac=52:54:00:00:00:01",
        ] {
            assert!(parse_net(bad).is_err(), "{bad}");
        }
    }
}

//! `vt create`: define a VM, with the options of virt-install.
//!
//! `vt create --name myvm --ram 1024 --disk path=myvm.img,size=10 --vcpus 2
//! --os-type linux --network bridge=vtbr0 --graphics none --console pty
//! [--boot kernel=PATH,initrd=PATH,kernel_args="console=ttyS0 ..."]`
//! or, for a disk image with a bootloader, `--import --disk path=IMAGE`
//! (see [`super::boot`]).
//!
//! Disks given with `size=` (GiB) or `backing=` are created here unless
//! they exist: sparse raw, or qcow2 with `format=qcow2` (a `backing=BASE`
//! makes a linked clone, qcow2 over BASE, BASE's format probed once and
//! stored in the new header). Every disk's format is decided here once
//! (given, or probed from the file) and stored in the definition, so the
//! VMM never has to guess. Disks become virtio-blk devices. Each
//! `--network bridge=` NIC is a virtio-net device on a tap that vtd adds to
//! the bridge at start.

use std::path::PathBuf;

use api::manager::{DiskSpec, NetworkSpec, VmDefinition, VmStatus, MAX_DISK_GIB};
use api::{CacheMode, DiskFormat};
use clap::Args;

use super::client::{CliError, CliResult, Client};
use super::options::{boolean, pairs};
use super::output::{print_json, Format};

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// VM name (A-Z a-z 0-9 . _ -).
    #[arg(long)]
    pub name: String,
    /// Memory in MiB, then guest RAM options:
    /// `MIB[,merge=on][,thp=off][,hugepages=2M|1G]` (merge: KSM page
    /// sharing, off by default; thp: transparent huge pages, on by default;
    /// hugepages: back RAM with the host's hugetlbfs pool).
    #[arg(
        long,
        visible_alias = "memory",
        value_name = "SPEC",
        default_value = "256"
    )]
    pub ram: String,
    /// A virtio-balloon device (`vt setmem` resizes the running guest):
    /// `on` or `[deflate_on_oom=on][,free_page_reporting=on]`.
    #[arg(long, value_name = "SPEC")]
    pub balloon: Option<String>,
    /// vCPU count.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub vcpus: u32,
    /// `path=FILE[,size=GIB][,format=raw|qcow2][,backing=BASE][,bus=virtio][,readonly=on][,shareable=on][,cache=none|writeback]`; repeatable.
    #[arg(long, value_name = "SPEC")]
    pub disk: Vec<String>,
    /// `network=NAME[,mac=MAC][,ip=A][,peers=VM,VM]` (a vtd network),
    /// `bridge=NAME[,mac=MAC][,model=virtio]` (a host bridge, unfiltered)
    /// or `none`; repeatable.
    #[arg(long, value_name = "SPEC")]
    pub network: Vec<String>,
    /// `kernel=PATH[,initrd=PATH][,kernel_args="..."]` (direct kernel
    /// boot), `hd` (BIOS firmware boots the first disk, as `--import`) or
    /// `uefi` (UEFI firmware).
    #[arg(long, value_name = "SPEC")]
    pub boot: Option<String>,
    /// Boot the existing image of the first `--disk` through firmware
    /// (its own bootloader, e.g. GRUB), BIOS unless `--boot uefi`.
    #[arg(long)]
    pub import: bool,
    /// Only `linux`.
    #[arg(long, value_name = "TYPE")]
    pub os_type: Option<String>,
    /// Accepted and ignored (no per-OS tuning yet).
    #[arg(long, value_name = "NAME")]
    pub os_variant: Option<String>,
    /// Only `none` (the VM has a serial console, no display).
    #[arg(long, value_name = "SPEC")]
    pub graphics: Option<String>,
    /// Only `pty`: the serial console, seen with `vt console NAME`.
    #[arg(long, value_name = "SPEC")]
    pub console: Option<String>,
    /// Start the VM when vtd starts after a host boot.
    #[arg(long)]
    pub autostart: bool,
    /// Start the VM once defined.
    #[arg(long)]
    pub start: bool,
    /// Run the VM's VMM without its cell (needs the `vm_unconfined`
    /// policy switch on).
    #[arg(long)]
    pub unconfined: bool,
}

pub(super) fn absolute(p: &str) -> CliResult<PathBuf> {
    std::path::absolute(p).map_err(|e| CliError::usage(format!("{p}: {e}")))
}

/// What to create for a disk that does not exist yet.
#[derive(Debug, Default)]
pub(super) struct NewDisk {
    /// Size in GiB.
    size: Option<u64>,
    /// A linked clone's base image (absolute).
    backing: Option<PathBuf>,
}

pub(super) fn parse_disk(spec: &str) -> CliResult<(DiskSpec, NewDisk)> {
    let keys = [
        "path",
        "size",
        "format",
        "backing",
        "bus",
        "readonly",
        "ro",
        "sparse",
        "cache",
        "shareable",
    ];
    let mut disk = DiskSpec {
        path: PathBuf::new(),
        readonly: false,
        format: None,
        cache: CacheMode::Writeback,
        shareable: false,
    };
    let mut new = NewDisk::default();
    for (k, v) in pairs(spec, &keys).map_err(|e| CliError::usage(format!("--disk: {e}")))? {
        let bad = |why: &str| CliError::usage(format!("--disk {k}={v}: {why}"));
        match k.as_str() {
            "path" | "" => disk.path = absolute(&v)?,
            "size" => {
                let gib: u64 = v
                    .parse()
                    .map_err(|_| bad("size is a whole number of GiB"))?;
                if gib == 0 || gib > MAX_DISK_GIB {
                    return Err(bad(&format!("size must be 1-{MAX_DISK_GIB} GiB")));
                }
                new.size = Some(gib);
            }
            "format" => disk.format = Some(DiskFormat::parse(&v).map_err(|e| bad(&e.to_string()))?),
            "backing" => new.backing = Some(absolute(&v)?),
            "bus" if v == "virtio" => {}
            "bus" => return Err(bad("only virtio")),
            "readonly" | "ro" => disk.readonly = boolean(&k, &v).map_err(CliError::usage)?,
            "shareable" => disk.shareable = boolean(&k, &v).map_err(CliError::usage)?,
            "sparse" if boolean(&k, &v) == Ok(true) => {}
            "cache" if v == "none" => disk.cache = CacheMode::Direct,
            "cache" if v == "writeback" => disk.cache = CacheMode::Writeback,
            "cache" => return Err(bad("cache is none or writeback")),
            _ => return Err(bad("not supported")),
        }
    }
    if disk.path.as_os_str().is_empty() {
        return Err(CliError::usage(format!("--disk {spec}: path= is required")));
    }
    if new.backing.is_some() {
        match disk.format {
            None => disk.format = Some(DiskFormat::Qcow2),
            Some(DiskFormat::Qcow2) => {}
            Some(DiskFormat::Raw) => {
                return Err(CliError::usage(format!(
                    "--disk {spec}: backing= needs format=qcow2"
                )))
            }
        }
    }
    Ok((disk, new))
}

pub(super) fn parse_network(spec: &str) -> CliResult<Option<NetworkSpec>> {
    let mut net = NetworkSpec::default();
    let keys = ["bridge", "mac", "model", "network", "ip", "peers"];
    for (k, v) in pairs(spec, &keys).map_err(|e| CliError::usage(format!("--network: {e}")))? {
        match (k.as_str(), v.as_str()) {
            ("", "none") => return Ok(None),
            ("bridge", _) => net.bridge = Some(v),
            ("network", _) => net.network = Some(v),
            ("mac", _) => net.mac = Some(v),
            ("ip", _) => {
                net.ip = Some(v.parse().map_err(|_| {
                    CliError::usage(format!("--network ip={v}: not an IPv4 address"))
                })?)
            }
            // `peers=vm2,vm3` (the commas stay with peers= up to the
            // next known key).
            ("peers", _) => {
                net.peers = v
                    .split([',', ':'])
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect()
            }
            ("model", "virtio") => {}
            _ => {
                return Err(CliError::usage(format!(
                    "--network {k}={v}: not supported (use bridge=NAME[,mac=MAC] or network=NAME[,mac=MAC][,ip=A][,peers=VM,VM])"
                )))
            }
        }
    }
    if net.bridge.is_none() && net.network.is_none() {
        return Err(CliError::usage(format!(
            "--network {spec}: bridge= or network= is required"
        )));
    }
    Ok(Some(net))
}

fn check_choice(flag: &str, value: &Option<String>, allowed: &str) -> CliResult {
    match value {
        Some(v) if v != allowed => Err(CliError::usage(format!(
            "{flag} {v}: not supported (only {allowed})"
        ))),
        _ => Ok(()),
    }
}

/// Creates `disk` as `new` says unless the file exists; true when made.
fn make_disk(disk: &DiskSpec, new: &NewDisk) -> CliResult<bool> {
    let path = &disk.path;
    if path.exists() {
        eprintln!("vt: note: {} exists; used as it is", path.display());
        return Ok(false);
    }
    let backing = match &new.backing {
        None => None,
        Some(b) => {
            let info = disk::info::info(b, None)
                .map_err(|e| CliError::usage(format!("--disk backing={}: {e}", b.display())))?;
            Some((b.display().to_string(), info.format))
        }
    };
    let o = disk::create::CreateOptions {
        format: disk.format,
        size: new.size.map(|g| g << 30),
        backing,
        ..Default::default()
    };
    disk::create::create(path, &o).map_err(|e| {
        let _ = std::fs::remove_file(path);
        CliError::usage(format!("{}: {e}", path.display()))
    })?;
    Ok(true)
}

/// The format of an existing image: the one given, checked, or the one
/// its first sector shows.
fn detect_format(disk: &DiskSpec) -> CliResult<DiskFormat> {
    let info = disk::info::info(&disk.path, disk.format)
        .map_err(|e| CliError::usage(format!("--disk {}: {e}", disk.path.display())))?;
    Ok(info.format)
}

/// Creates the disks that have a size or a backing file, and stores every
/// disk's format; on failure removes those it made.
pub(super) fn make_disks(disks: &mut [DiskSpec], new: &[NewDisk]) -> CliResult<Vec<PathBuf>> {
    let mut made = Vec::new();
    for (disk, new) in disks.iter_mut().zip(new) {
        let step = match new {
            NewDisk {
                size: None,
                backing: None,
            } if !disk.path.is_file() => Err(CliError::usage(format!(
                "--disk {}: no such file (add size=GIB to create it)",
                disk.path.display()
            ))),
            NewDisk {
                size: None,
                backing: None,
            } => Ok(false),
            _ => make_disk(disk, new),
        };
        let step = step.and_then(|made_now| match detect_format(disk) {
            Ok(f) => {
                disk.format = Some(f);
                Ok(made_now)
            }
            Err(e) => {
                if made_now {
                    let _ = std::fs::remove_file(&disk.path);
                }
                Err(e)
            }
        });
        match step {
            Ok(true) => made.push(disk.path.clone()),
            Ok(false) => {}
            Err(e) => {
                made.iter().for_each(|p| drop(std::fs::remove_file(p)));
                return Err(e);
            }
        }
    }
    Ok(made)
}

/// Parses `--memory MIB[,merge=on][,thp=off][,hugepages=2M|1G]`.
pub fn parse_memory(spec: &str) -> Result<(u64, api::MemoryOptions), String> {
    parse_memory_onto(spec, api::MemoryOptions::default())
}

/// [`parse_memory`] onto options `o` (a VM's current ones, for `vt
/// edit`): only the options `spec` names change.
pub fn parse_memory_onto(
    spec: &str,
    mut o: api::MemoryOptions,
) -> Result<(u64, api::MemoryOptions), String> {
    let (mib, rest) = spec.split_once(',').unwrap_or((spec, ""));
    let mib = mib.parse().map_err(|_| {
        format!("invalid value '{spec}' for --memory: expected MIB[,merge=on][,thp=off][,hugepages=2M|1G]")
    })?;
    if !rest.is_empty() {
        for (k, v) in pairs(rest, &["merge", "thp", "hugepages"])? {
            match k.as_str() {
                "merge" => o.merge = boolean(&k, &v)?,
                "thp" => o.thp = boolean(&k, &v)?,
                _ => {
                    o.hugepages = match v.as_str() {
                        "2M" => Some(api::HugePageSize::Size2M),
                        "1G" => Some(api::HugePageSize::Size1G),
                        "off" | "no" => None,
                        _ => return Err(format!("hugepages={v}: expected 2M, 1G or off")),
                    }
                }
            }
        }
    }
    Ok((mib, o))
}

pub fn run(c: &Client, a: CreateArgs, format: Format) -> CliResult {
    check_choice("--os-type", &a.os_type, "linux")?;
    check_choice("--graphics", &a.graphics, "none")?;
    check_choice("--console", &a.console, "pty")?;
    if let Some(v) = &a.os_variant {
        eprintln!("vt: note: --os-variant {v} is accepted and ignored");
    }
    let (memory_mib, memory) = parse_memory(&a.ram).map_err(CliError::usage)?;
    let mut def = VmDefinition {
        name: a.name.clone(),
        vcpus: a.vcpus,
        memory_mib,
        memory,
        balloon: a
            .balloon
            .as_deref()
            .map(|b| api::parse_balloon(b).map_err(|e| CliError::usage(format!("--balloon: {e}"))))
            .transpose()?,
        boot: api::BootMode::Kernel,
        kernel: None,
        initrd: None,
        cmdline: "console=ttyS0".into(),
        disks: Vec::new(),
        networks: Vec::new(),
        autostart: a.autostart,
        owner: None,
        cpu: Default::default(),
        unconfined: a.unconfined,
    };
    super::boot::apply(&mut def, a.boot.as_deref(), a.import)?;
    let mut new = Vec::new();
    for d in &a.disk {
        let (disk, n) = parse_disk(d)?;
        new.push(n);
        def.disks.push(disk);
    }
    for n in &a.network {
        def.networks.extend(parse_network(n)?);
    }
    super::boot::check_disks(&def)?;
    def.validate().map_err(|e| CliError::usage(e.to_string()))?;

    let made = make_disks(&mut def.disks, &new)?;
    let body = serde_json::to_vec(&def).map_err(|e| CliError::usage(e.to_string()))?;
    let status: VmStatus = match c.json("POST", "/vms", Some(body)) {
        Ok(s) => s,
        Err(e) => {
            // Leave nothing behind for a VM that was not defined.
            made.iter().for_each(|p| drop(std::fs::remove_file(p)));
            return Err(e);
        }
    };
    for b in def.networks.iter().filter_map(|n| n.bridge.as_ref()) {
        let br = std::path::Path::new("/sys/class/net")
            .join(b)
            .join("bridge");
        if !br.is_dir() {
            eprintln!(
                "vt: warning: bridge {b} does not exist here yet: the VM will not start until it does"
            );
        }
    }
    let status = if a.start {
        c.json("POST", &format!("/vms/{}/start", a.name), None)?
    } else {
        status
    };
    match format {
        Format::Json => print_json(&status),
        Format::Table => {
            let verb = if a.start {
                "defined and started"
            } else {
                "defined"
            };
            println!(
                "VM '{}' {verb} (console: vt console {})",
                status.name, status.name
            );
        }
    }
    Ok(())
}

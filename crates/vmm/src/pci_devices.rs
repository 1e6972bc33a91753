//! The PCI devices of a VM: virtio functions built from the configuration,
//! given a BAR in the 32-bit PCI window (vm-allocator) and MSI-X GSIs, and
//! wired to KVM (irqfd, ioeventfd, GSI routing) through [`KvmHooks`].

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use api::VmConfig;
use devices::pci::PciRoot;
use devices::rate_limiter::RateLimiter;
use devices::virtio::balloon::{Balloon, BalloonControl, BalloonOptions};
use devices::virtio::block::{Block, BlockOptions};
use devices::virtio::net::Net;
use devices::virtio::rng::Rng;
use devices::virtio::{pci::BAR_SIZE, VirtioDevice, VirtioPci, VmHooks};
use hv::MsiRoute;
use vm_allocator::{AddressAllocator, AllocPolicy};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::counters::VmStats;
use crate::Error;

/// The VM's interrupt routing and notification hooks on KVM.
pub struct KvmHooks {
    vm: Arc<hv::Vm>,
    routes: Mutex<BTreeMap<u32, MsiRoute>>,
}

impl KvmHooks {
    pub fn new(vm: Arc<hv::Vm>) -> Self {
        KvmHooks {
            vm,
            routes: Mutex::new(BTreeMap::new()),
        }
    }
}

fn io_err(e: hv::Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl VmHooks for KvmHooks {
    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> io::Result<()> {
        self.vm.register_irqfd(evt, gsi).map_err(io_err)
    }

    fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> io::Result<()> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.insert(gsi, MsiRoute { gsi, address, data });
        let all: Vec<MsiRoute> = routes.values().copied().collect();
        self.vm.set_msi_routes(&all).map_err(io_err)
    }

    fn register_ioevent(&self, evt: &EventFd, addr: u64) -> io::Result<()> {
        self.vm.register_ioevent(evt, addr).map_err(io_err)
    }

    fn unregister_ioevent(&self, evt: &EventFd, addr: u64) -> io::Result<()> {
        self.vm.unregister_ioevent(evt, addr).map_err(io_err)
    }
}

/// Opens disk `d`: its path, or the descriptors a manager passed in
/// (`/dev/fd/N` for the image, its O_DIRECT twin and its backing chain).
fn open_disk(d: &api::DiskConfig) -> Result<Box<dyn disk::DiskBackend>, Error> {
    let opts = disk::OpenOptions {
        readonly: d.readonly,
        cache: d.cache,
        format: d.format,
        shareable: d.shareable,
    };
    let name = d.path.display().to_string();
    let open = |p: &std::path::Path, write: bool, flags: i32| {
        devices::files::open(p, write, flags)
            .map_err(|e| Error::Disk(disk::OpenError::Open(p.display().to_string(), e)))
    };
    let file = open(&d.path, !d.readonly, 0)?;
    let direct = match (&d.cache, &d.direct_path) {
        (api::CacheMode::Direct, Some(p)) => Some(open(p, !d.readonly, libc::O_DIRECT)?),
        _ => None,
    };
    let dir = d
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let image = disk::ImageFile { file, name, dir };
    let r = if d.backing_paths.is_empty() {
        disk::open_file_twin(image, direct, &opts, &mut disk::PathOpener)
    } else {
        let files = d
            .backing_paths
            .iter()
            .map(|p| open(p, false, 0))
            .collect::<Result<Vec<_>, _>>()?;
        disk::open_file_twin(image, direct, &opts, &mut disk::PassedOpener::new(files))
    };
    r.map_err(Error::Disk)
}

/// The virtio devices `config` asks for, in slot order: disks, NICs, rng,
/// balloon (driven through `balloon`).
fn virtio_devices(
    config: &VmConfig,
    balloon: Option<&Arc<BalloonControl>>,
    stats: &VmStats,
) -> Result<Vec<Box<dyn VirtioDevice>>, Error> {
    let mut out: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for (i, d) in config.disks.iter().enumerate() {
        let disk = open_disk(d)?;
        let limiter = RateLimiter::new(d.rate.bytes_per_sec, d.rate.ops_per_sec)
            .map_err(|e| Error::Io("timerfd", e))?;
        out.push(Box::new(Block::new(
            disk,
            BlockOptions {
                readonly: d.readonly,
                serial: d.serial.clone(),
                limiter,
                stats: stats.disks.get(i).cloned().flatten(),
            },
        )));
    }
    for (i, n) in config.nets.iter().enumerate() {
        let counted = stats.nets.get(i).and_then(|n| n.1.clone());
        out.push(Box::new(
            Net::new(n)
                .map_err(|e| Error::Net(n.tap.clone(), e))?
                .with_stats(counted),
        ));
    }
    if config.rng {
        out.push(Box::new(Rng::new()));
    }
    if let (Some(b), Some(control)) = (config.balloon, balloon) {
        let options = BalloonOptions {
            deflate_on_oom: b.deflate_on_oom,
            free_page_reporting: b.free_page_reporting,
            stats: b.stats,
        };
        out.push(Box::new(Balloon::new(options, control.clone())));
    }
    Ok(out)
}

/// Builds the configured devices and puts them on `root`.
pub fn add_pci_devices(
    config: &VmConfig,
    mem: &GuestMemoryMmap,
    vm: &Arc<hv::Vm>,
    root: &mut PciRoot,
    balloon: Option<&Arc<BalloonControl>>,
    stats: &VmStats,
) -> Result<(), Error> {
    let devices = virtio_devices(config, balloon, stats)?;
    if devices.is_empty() {
        return Ok(());
    }
    let hooks: Arc<dyn VmHooks> = Arc::new(KvmHooks::new(vm.clone()));
    let window = arch::layout::PCI_MMIO32_START;
    let mut bars = AddressAllocator::new(window, arch::layout::PCI_MMIO32_END - window)
        .map_err(|e| Error::Pci(format!("BAR window: {e}")))?;
    let mut gsi = hv::IOAPIC_PINS;
    for dev in devices {
        let bar = bars
            .allocate(BAR_SIZE, BAR_SIZE, AllocPolicy::FirstMatch)
            .map_err(|e| Error::Pci(format!("no room for a BAR: {e}")))?;
        let nvec = dev.queue_max_sizes().len() as u32 + 1;
        if gsi + nvec > hv::MAX_GSI {
            return Err(Error::Pci("out of interrupt lines".into()));
        }
        let f = VirtioPci::new(dev, mem.clone(), hooks.clone(), gsi, bar.start())
            .map_err(|e| Error::Pci(e.to_string()))?;
        gsi += nvec;
        root.add(Arc::new(Mutex::new(f)))
            .ok_or_else(|| Error::Pci("no free PCI slot".into()))?;
    }
    Ok(())
}

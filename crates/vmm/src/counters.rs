//! The VMM's counters beyond the totals: per vCPU, guest memory, and the
//! devices' [`devices::stats`]. One [`VmStats`] lives as long as the VMM;
//! every boot's vCPUs and devices count into the same one, so the numbers
//! are cumulative over guest reboots.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use api::counters::{CounterDetail, ExitCounts, MemoryCounters, VcpuCounters};
use api::VmConfig;
use devices::bus::lock;
use devices::stats::{DiskStats, NetStats};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// No thread clock recorded.
const NO_CLOCK: i64 = i64::MIN;

/// Exit reasons counted per vCPU (the order of [`ExitCounts`]).
#[derive(Debug, Clone, Copy)]
pub enum Exit {
    /// KVM_EXIT_IO: a guest read of an I/O port.
    IoIn = 0,
    /// KVM_EXIT_IO: a guest write to an I/O port.
    IoOut,
    /// KVM_EXIT_MMIO: a guest read.
    MmioRead,
    /// KVM_EXIT_MMIO: a guest write.
    MmioWrite,
    /// KVM_RUN returned EINTR or EAGAIN (a signal: the VMM kicked the vCPU).
    Intr,
    /// KVM_EXIT_SYSTEM_EVENT (power-off, reset).
    SystemEvent,
    /// Any other exit.
    Other,
}

/// One vCPU's counters.
#[derive(Debug)]
pub struct VcpuStats {
    exits: [AtomicU64; 7],
    /// CPU time of the threads of finished boots, ns.
    cpu_before_ns: AtomicU64,
    /// The running thread's CPU-time clock id, or [`NO_CLOCK`].
    clock: AtomicI64,
}

impl Default for VcpuStats {
    fn default() -> Self {
        VcpuStats {
            exits: Default::default(),
            cpu_before_ns: AtomicU64::new(0),
            clock: AtomicI64::new(NO_CLOCK),
        }
    }
}

/// Reads clock `id`, ns; None when it is gone (its thread ended).
fn clock_ns(id: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    let r = unsafe { libc::clock_gettime(id, &mut ts) };
    (r == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

impl VcpuStats {
    /// Counts one exit.
    pub fn exit(&self, e: Exit) {
        self.exits[e as usize].fetch_add(1, Relaxed);
    }

    /// Called by the vCPU thread as it starts: its CPU time is read from
    /// its clock from now on.
    pub fn thread_started(&self) {
        let mut id: libc::clockid_t = 0;
        // SAFETY: pthread_self is this thread; the call writes one clockid_t.
        let r = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
        if r == 0 {
            self.clock.store(i64::from(id), Relaxed);
        }
    }

    /// Called by the vCPU thread as it ends: its CPU time is kept.
    pub fn thread_ending(&self) {
        let own = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or(0);
        self.cpu_before_ns.fetch_add(own, Relaxed);
        self.clock.store(NO_CLOCK, Relaxed);
    }

    fn cpu_time_ns(&self) -> u64 {
        // A thread that ends between the loads: read again.
        for _ in 0..3 {
            let before = self.cpu_before_ns.load(Relaxed);
            let clock = self.clock.load(Relaxed);
            let now = match clock {
                NO_CLOCK => Some(0),
                c => clock_ns(c as libc::clockid_t),
            };
            if let Some(now) = now {
                if self.cpu_before_ns.load(Relaxed) == before {
                    return before + now;
                }
            }
        }
        self.cpu_before_ns.load(Relaxed)
    }

    fn snapshot(&self, id: u32) -> VcpuCounters {
        let e = |x: Exit| self.exits[x as usize].load(Relaxed);
        VcpuCounters {
            id,
            cpu_time_ns: self.cpu_time_ns(),
            exits: ExitCounts {
                io_in: e(Exit::IoIn),
                io_out: e(Exit::IoOut),
                mmio_read: e(Exit::MmioRead),
                mmio_write: e(Exit::MmioWrite),
                intr: e(Exit::Intr),
                system_event: e(Exit::SystemEvent),
                other: e(Exit::Other),
            },
        }
    }
}

/// Every counter of one VMM.
pub struct VmStats {
    /// Per vCPU, by index (`config.cpus` of them).
    pub vcpus: Vec<Arc<VcpuStats>>,
    /// Per `--disk`; None when device counting is off.
    pub disks: Vec<Option<Arc<DiskStats>>>,
    /// Per `--net`: its tap and counters.
    pub nets: Vec<(String, Option<Arc<NetStats>>)>,
    guest_bytes: u64,
    /// The current boot's guest RAM mappings (host address, length).
    guest_ram: Mutex<Vec<(usize, usize)>>,
    devices_counted: bool,
}

impl VmStats {
    /// Counters for `config`'s vCPUs and devices; devices count unless
    /// [`devices::stats::enabled`] says no.
    pub fn new(config: &VmConfig) -> Self {
        let on = devices::stats::enabled();
        VmStats {
            vcpus: (0..config.cpus).map(|_| Arc::default()).collect(),
            disks: config.disks.iter().map(|_| on.then(Arc::default)).collect(),
            nets: config
                .nets
                .iter()
                .map(|n| (n.tap.clone(), on.then(Arc::default)))
                .collect(),
            guest_bytes: config.memory_mib << 20,
            guest_ram: Mutex::new(Vec::new()),
            devices_counted: on,
        }
    }

    /// vCPU `id`'s counters (a spare one past the configured count).
    pub fn vcpu(&self, id: u8) -> Arc<VcpuStats> {
        self.vcpus.get(usize::from(id)).cloned().unwrap_or_default()
    }

    /// The guest RAM of the boot now starting (None: between boots).
    pub fn set_guest_ram(&self, mem: Option<&GuestMemoryMmap>) {
        let regions = mem.map_or_else(Vec::new, |m| {
            m.iter()
                .map(|r| (r.as_ptr() as usize, r.len() as usize))
                .collect()
        });
        *lock(&self.guest_ram) = regions;
    }

    /// Resident bytes of the guest RAM mappings (mincore(2)).
    fn guest_resident_bytes(&self) -> u64 {
        // SAFETY: sysconf has no memory effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        // Chunks of 64 MiB: a bounded vector whatever the guest's size.
        let chunk = 64 << 20;
        let mut vec = vec![0u8; chunk / page];
        let mut resident = 0u64;
        let regions = lock(&self.guest_ram).clone();
        for (start, len) in regions {
            let mut at = 0;
            while at < len {
                let n = (len - at).min(chunk);
                // SAFETY: mincore only reads the page tables of the range
                // and writes one byte per page into `vec`, which has room
                // for a whole chunk; a range no longer mapped fails
                // (ENOMEM) and counts nothing.
                let r = unsafe {
                    libc::mincore((start + at) as *mut libc::c_void, n, vec.as_mut_ptr())
                };
                if r == 0 {
                    let pages = n.div_ceil(page);
                    resident += vec[..pages].iter().filter(|b| *b & 1 != 0).count() as u64;
                }
                at += n;
            }
        }
        resident * page as u64
    }

    /// The counters now.
    pub fn detail(&self) -> CounterDetail {
        CounterDetail {
            devices_counted: self.devices_counted,
            vcpus: (0u32..)
                .zip(&self.vcpus)
                .map(|(i, v)| v.snapshot(i))
                .collect(),
            memory: MemoryCounters {
                guest_bytes: self.guest_bytes,
                guest_resident_bytes: self.guest_resident_bytes(),
            },
            disks: (0u32..)
                .zip(&self.disks)
                .map(|(i, d)| {
                    d.as_ref().map(|d| d.snapshot(i)).unwrap_or_else(|| {
                        api::counters::DiskCounters {
                            index: i,
                            ..Default::default()
                        }
                    })
                })
                .collect(),
            nets: (0u32..)
                .zip(&self.nets)
                .map(|(i, (tap, n))| {
                    n.as_ref().map(|n| n.snapshot(i, tap)).unwrap_or_else(|| {
                        api::counters::NetCounters {
                            index: i,
                            tap: tap.clone(),
                            ..Default::default()
                        }
                    })
                })
                .collect(),
        }
    }
}

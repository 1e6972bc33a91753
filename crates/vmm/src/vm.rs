//! One VM: built from a config, run until it ends.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use api::VmConfig;
use arch::acpi;
use devices::firmware::{fw_cfg, DebugCon};
use devices::legacy::{AcpiPower, Cmos, CmosConfig, Serial, I8042};
use devices::pci::{PciConfigIo, PciConfigMmio, PciMmioWindow, PciRoot, ECAM_BUS_SIZE};
use devices::virtio::balloon::BalloonControl;
use devices::{PowerRequest, PowerSignal};
use hv::{Hypervisor, Vcpu};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::console::Console;
use crate::control::{Command, Control};
use crate::vcpu::{Buses, EventSink, VcpuEvent, VcpuExitReason, VcpuHandle, VcpuMessage};
use crate::{memory, setup, signals, Error};
use api::control::RunState;

const I8042_PORT: u64 = 0x60;
const I8042_PORTS: u64 = 5;
const COM1_PORTS: u64 = 8;
const ACPI_PORTS: u64 = 3;

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off (ACPI S5 or KVM shutdown event).
    PowerOff,
    /// The guest rebooted (ACPI reset register, i8042, KVM reset event).
    Reboot,
    /// SIGTERM or SIGINT (the number) stopped the VM; 0 when a stop came
    /// over the control socket.
    Stopped(i32),
    /// The guest or KVM failed: triple fault, internal error, failed entry.
    Crashed(String),
}

/// A built VM, ready to run.
pub struct Vm {
    vcpus: Vec<Vcpu>,
    bus: Arc<Buses>,
    power: Arc<PowerSignal>,
    /// Raises the ACPI GED interrupt: the power button.
    power_button: EventFd,
    stats: Arc<crate::counters::VmStats>,
    // Dropped in this order: the VM fd before the memory it maps.
    _vm: Arc<hv::Vm>,
    _mem: GuestMemoryMmap,
    /// The firmware image's own memory slot (firmware boot only).
    _rom: Option<GuestMemoryMmap>,
}

impl Drop for Vm {
    fn drop(&mut self) {
        // The guest RAM is unmapped next: stop counting its pages.
        self.stats.set_guest_ram(None);
    }
}

impl Vm {
    /// Builds the VM: memory, kernel, ACPI, devices, vCPUs; the balloon
    /// (when configured) is driven through `balloon`, which outlives it.
    pub fn build(
        config: &VmConfig,
        console: &Console,
        balloon: Option<&Arc<BalloonControl>>,
        stats: &Arc<crate::counters::VmStats>,
    ) -> Result<Self, Error> {
        let hv = Hypervisor::open()?;
        if config.cpus > hv.max_vcpus() {
            return Err(Error::TooManyVcpus(config.cpus, hv.max_vcpus()));
        }
        let mem = memory::create(config.memory_mib, &config.memory)?;
        let mut vm = hv.create_vm()?;
        memory::register(&mut vm, &mem)?;
        let rom = match &config.firmware {
            Some(path) => Some(crate::firmware::install(
                &mut vm,
                &mem,
                &crate::firmware::load(path)?,
            )?),
            None => None,
        };
        vm.create_irqchip()?;
        let vm = Arc::new(vm);
        let count = u8::try_from(config.cpus)
            .map_err(|_| Error::TooManyVcpus(config.cpus, api::MAX_VCPUS))?;
        let boot_cpu = match rom {
            Some(_) => None,
            None => Some(setup::load_guest(&mem, config, count)?),
        };

        let power = Arc::new(PowerSignal::new().map_err(|e| Error::Io("eventfd", e))?);
        let mut bus = Buses::default();
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Io("eventfd", e))?;
        vm.register_irqfd(&serial_irq, acpi::COM1_IRQ)?;
        let serial = Arc::new(Mutex::new(Serial::new(serial_irq, console.output()?)));
        let power_button = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Io("eventfd", e))?;
        vm.register_irqfd(&power_button, acpi::POWER_BUTTON_GSI)?;
        console.attach(serial.clone());
        bus.pio.insert(acpi::COM1_PORT.into(), COM1_PORTS, serial)?;
        bus.pio.insert(
            I8042_PORT,
            I8042_PORTS,
            Arc::new(Mutex::new(I8042::new(power.clone()))),
        )?;
        bus.pio.insert(
            acpi::SLEEP_CONTROL_PORT.into(),
            ACPI_PORTS,
            Arc::new(Mutex::new(AcpiPower::new(
                power.clone(),
                acpi::S5_SLEEP_TYPE,
                acpi::RESET_VALUE,
            ))),
        )?;

        let bytes = config.memory_bytes();
        let cmos = Cmos::new(CmosConfig {
            low_memory: arch::layout::low_ram_end(bytes),
            high_memory: bytes.saturating_sub(arch::layout::MMIO_HOLE_START),
            cpus: count,
        });
        bus.pio.insert(
            acpi::RTC_PORT.into(),
            acpi::RTC_PORTS.into(),
            Arc::new(Mutex::new(cmos)),
        )?;
        if rom.is_some() {
            bus.os_handoff = Some(crate::vcpu::OsHandoff::new(vm.clone()));
            let f = crate::firmware::fw_cfg(config, &mem, count)?;
            bus.pio.insert(
                fw_cfg::FW_CFG_PORT.into(),
                fw_cfg::FW_CFG_PORTS.into(),
                Arc::new(Mutex::new(f)),
            )?;
            bus.pio.insert(
                devices::firmware::debugcon::DEBUGCON_PORT.into(),
                1,
                Arc::new(Mutex::new(DebugCon::new(Box::new(std::io::stderr())))),
            )?;
        }

        let mut pci = PciRoot::new();
        crate::pci_devices::add_pci_devices(config, &mem, &vm, &mut pci, balloon, stats)?;
        let pci = Arc::new(pci);
        bus.pio.insert(
            acpi::PCI_CONFIG_PORT.into(),
            acpi::PCI_CONFIG_PORTS.into(),
            Arc::new(Mutex::new(
                PciConfigIo::new(pci.clone()).with_reset(power.clone()),
            )),
        )?;
        bus.mmio.insert(
            arch::layout::PCI_ECAM_START,
            ECAM_BUS_SIZE,
            Arc::new(Mutex::new(PciConfigMmio::new(pci.clone()))),
        )?;
        let window = arch::layout::PCI_MMIO32_START;
        bus.mmio.insert(
            window,
            arch::layout::PCI_MMIO32_END - window,
            Arc::new(Mutex::new(PciMmioWindow::new(pci.clone(), window))),
        )?;
        let high = arch::layout::PCI_MMIO32_HIGH_START;
        bus.mmio.insert(
            high,
            arch::layout::PCI_MMIO32_HIGH_END - high,
            Arc::new(Mutex::new(PciMmioWindow::new(pci, high))),
        )?;

        let vcpus = setup::create_vcpus(&hv, &vm, count, boot_cpu.as_ref())?;
        Ok(Vm {
            vcpus,
            bus: Arc::new(bus),
            power,
            power_button,
            stats: stats.clone(),
            _vm: vm,
            _mem: mem,
            _rom: rom,
        })
    }

    /// Runs the VM until it ends; all vCPU threads are joined on return.
    /// With a `control` socket, its commands are served too.
    pub fn run(mut self, control: Option<&Control>) -> Result<VmExit, Error> {
        let io = |what| move |e| Error::Io(what, e);
        let vcpu_evt = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?);
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = EventSink {
            tx,
            evt: vcpu_evt.clone(),
        };
        let term = signals::termination_fd()?;
        let epoll = Epoll::new().map_err(io("epoll"))?;
        const POWER: u64 = 0;
        const VCPU: u64 = 1;
        const SIGNAL: u64 = 2;
        const CONTROL: u64 = 3;
        let mut fds = vec![
            (self.power.event_fd().as_raw_fd(), POWER),
            (vcpu_evt.as_raw_fd(), VCPU),
            (term.as_raw_fd(), SIGNAL),
        ];
        if let Some(c) = control {
            fds.push((c.event_fd().as_raw_fd(), CONTROL));
            c.boot(self.bus.io_exits.clone());
            self.stats.set_guest_ram(Some(&self._mem));
            // Commands queued while this VM was built are answered now.
            c.recheck();
        }
        for (fd, token) in fds {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .map_err(io("epoll_ctl"))?;
        }

        let mut handles = Vec::with_capacity(self.vcpus.len());
        for vcpu in self.vcpus.drain(..) {
            match VcpuHandle::spawn(vcpu, self.bus.clone(), sink.clone(), &self.stats) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    handles.into_iter().for_each(VcpuHandle::stop);
                    return Err(Error::Thread(e));
                }
            }
        }

        let mut paused = false;
        let mut events = vec![EpollEvent::default(); 4];
        let exit = 'outer: loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(Error::Io("epoll_wait", e)),
            };
            for ev in &events[..n] {
                match ev.data() {
                    POWER => match self.power.take() {
                        Some(PowerRequest::PowerOff) => break 'outer Ok(VmExit::PowerOff),
                        Some(PowerRequest::Reset) => break 'outer Ok(VmExit::Reboot),
                        None => {}
                    },
                    VCPU => {
                        let _ = vcpu_evt.read();
                        while let Ok(e) = rx.try_recv() {
                            if let VcpuEvent::Exited(_, reason) = e {
                                match reason {
                                    VcpuExitReason::PowerOff => break 'outer Ok(VmExit::PowerOff),
                                    VcpuExitReason::Reset => break 'outer Ok(VmExit::Reboot),
                                    VcpuExitReason::Crashed(m) => {
                                        break 'outer Ok(VmExit::Crashed(m))
                                    }
                                    VcpuExitReason::Stopped => {}
                                }
                            }
                        }
                    }
                    CONTROL => {
                        let Some(c) = control else { continue };
                        c.clear_event();
                        while let Some((cmd, reply)) = c.next_command() {
                            let (result, exit) = match cmd {
                                Command::Pause | Command::Resume => {
                                    let pause = cmd == Command::Pause;
                                    if pause == paused {
                                        let now = if paused { "paused" } else { "running" };
                                        (Err((409, format!("the VM is already {now}"))), None)
                                    } else {
                                        paused = pause;
                                        let msg = if pause {
                                            VcpuMessage::Pause
                                        } else {
                                            VcpuMessage::Resume
                                        };
                                        handles.iter().for_each(|h| h.send(msg));
                                        c.set_state(if pause {
                                            RunState::Paused
                                        } else {
                                            RunState::Running
                                        });
                                        (Ok(()), None)
                                    }
                                }
                                // 0: stopped through the control socket, not by a signal.
                                Command::Stop => (Ok(()), Some(VmExit::Stopped(0))),
                                Command::Reboot => (Ok(()), Some(VmExit::Reboot)),
                                Command::PowerButton => match self.power_button.write(1) {
                                    Ok(()) => (Ok(()), None),
                                    Err(e) => (Err((500, format!("power button: {e}"))), None),
                                },
                            };
                            if exit == Some(VmExit::Reboot) {
                                // Said before the answer: whoever asks
                                // next sees the rebuild, not the old VM.
                                c.rebuilding();
                            }
                            let _ = reply.send(result);
                            if let Some(exit) = exit {
                                // What is still queued waits for the next VM.
                                break 'outer Ok(exit);
                            }
                        }
                    }
                    _ => {
                        if let Some(sig) = signals::read_signal(&term) {
                            break 'outer Ok(VmExit::Stopped(sig));
                        }
                    }
                }
            }
        };
        for h in handles {
            h.stop();
        }
        if let (Ok(VmExit::Reboot), Some(c)) = (&exit, control) {
            c.rebuilding();
        }
        exit
    }
}

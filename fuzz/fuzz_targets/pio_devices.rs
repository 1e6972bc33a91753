//! A guest's port I/O and MMIO, any sequence of addresses, sizes and values,
//! must never panic the buses or a device (UART, i8042, ACPI registers, PCI
//! configuration through 0xCF8 and ECAM).
#![no_main]

use std::sync::{Arc, Mutex};

use devices::legacy::{AcpiPower, Serial, I8042};
use devices::pci::{PciConfigIo, PciConfigMmio, PciRoot, ECAM_BUS_SIZE};
use devices::{MmioBus, PioBus, PowerSignal};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::EventFd;

fuzz_target!(|data: &[u8]| {
    let power = Arc::new(PowerSignal::new().unwrap());
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let serial = Arc::new(Mutex::new(Serial::new(irq, Box::new(std::io::sink()))));
    let mut bus = PioBus::new();
    bus.insert(0x3f8, 8, serial.clone()).unwrap();
    bus.insert(0x60, 5, Arc::new(Mutex::new(I8042::new(power.clone())))).unwrap();
    bus.insert(0x600, 3, Arc::new(Mutex::new(AcpiPower::new(power.clone(), 5, 1)))).unwrap();
    let pci = Arc::new(PciRoot::new());
    bus.insert(0xcf8, 8, Arc::new(Mutex::new(PciConfigIo::new(pci.clone())))).unwrap();
    let mut mmio = MmioBus::new();
    mmio.insert(0xe000_0000, ECAM_BUS_SIZE, Arc::new(Mutex::new(PciConfigMmio::new(pci)))).unwrap();
    // Each op: [kind, port lo, port hi, len, value...]
    let mut ops = data;
    while let [kind, lo, hi, len, rest @ ..] = ops {
        let port = u16::from_le_bytes([*lo, *hi]);
        // Bias ports towards the devices so the fuzzer reaches their state.
        let port = match kind & 0x7 {
            0 => 0x3f8 + (port & 0xf),
            1 => 0x60 + (port & 0x7),
            2 => 0x600 + (port & 0x7),
            3 => 0xcf8 + (port & 0xf),
            _ => port,
        };
        let mmio_addr = 0xe000_0000 + u64::from(port) * 61;
        let len = usize::from(*len % 9);
        let take = len.min(rest.len());
        let (value, tail) = rest.split_at(take);
        let mut buf = vec![0u8; len];
        match (kind & 0x80 == 0, kind & 0x20 == 0) {
            (true, true) => {
                bus.write(port.into(), value);
            }
            (false, true) => {
                bus.read(port.into(), &mut buf);
            }
            (true, false) => {
                mmio.write(mmio_addr, value);
            }
            (false, false) => {
                mmio.read(mmio_addr, &mut buf);
            }
        }
        if kind & 0x40 != 0 {
            serial.lock().unwrap().enqueue_input(value);
        }
        ops = tail;
    }
    let _ = power.take();
});

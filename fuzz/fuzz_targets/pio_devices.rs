//! A guest's port I/O, any sequence of ports, sizes and values, must never
//! panic the bus or a device.
#![no_main]

use std::sync::{Arc, Mutex};

use devices::legacy::{AcpiPower, Serial, I8042};
use devices::{PioBus, PowerSignal};
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
    // Each op: [kind, port lo, port hi, len, value...]
    let mut ops = data;
    while let [kind, lo, hi, len, rest @ ..] = ops {
        let port = u16::from_le_bytes([*lo, *hi]);
        // Bias ports towards the devices so the fuzzer reaches their state.
        let port = match kind & 0x3 {
            0 => 0x3f8 + (port & 0xf),
            1 => 0x60 + (port & 0x7),
            2 => 0x600 + (port & 0x7),
            _ => port,
        };
        let len = usize::from(*len % 9);
        let take = len.min(rest.len());
        let (value, tail) = rest.split_at(take);
        if kind & 0x80 == 0 {
            bus.write(port, value);
        } else {
            let mut buf = vec![0u8; len];
            bus.read(port, &mut buf);
        }
        if kind & 0x40 != 0 {
            serial.lock().unwrap().enqueue_input(value);
        }
        ops = tail;
    }
    let _ = power.take();
});

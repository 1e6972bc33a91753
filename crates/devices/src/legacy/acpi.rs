//! The FADT sleep-control, sleep-status and reset registers (hardware-reduced ACPI).
//!
//! Offsets from the device base: 0 sleep control, 1 sleep status, 2 reset.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::power::{PowerRequest, PowerSignal};

const SLEEP_CONTROL: u64 = 0;
const RESET: u64 = 2;
const SLP_EN: u8 = 1 << 5;

/// The three registers.
pub struct AcpiPower {
    power: Arc<PowerSignal>,
    s5_type: u8,
    reset_value: u8,
}

impl AcpiPower {
    /// `s5_type` is the SLP_TYP of `_S5` in the DSDT; `reset_value` is the FADT's.
    pub fn new(power: Arc<PowerSignal>, s5_type: u8, reset_value: u8) -> Self {
        AcpiPower {
            power,
            s5_type,
            reset_value,
        }
    }
}

impl BusDevice for AcpiPower {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            SLEEP_CONTROL if v & SLP_EN != 0 && (v >> 2) & 0x7 == self.s5_type => {
                self.power.request(PowerRequest::PowerOff)
            }
            RESET if v == self.reset_value => self.power.request(PowerRequest::Reset),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_with_slp_en_powers_off() {
        let p = Arc::new(PowerSignal::new().unwrap());
        let mut d = AcpiPower::new(p.clone(), 5, 1);
        d.write(0, &[5 << 2]);
        assert_eq!(p.take(), None, "SLP_EN missing");
        d.write(0, &[(3 << 2) | SLP_EN]);
        assert_eq!(p.take(), None, "S3 is not supported");
        d.write(0, &[(5 << 2) | SLP_EN]);
        assert_eq!(p.take(), Some(PowerRequest::PowerOff));
    }

    #[test]
    fn reset_value_resets() {
        let p = Arc::new(PowerSignal::new().unwrap());
        let mut d = AcpiPower::new(p.clone(), 5, 1);
        d.write(2, &[2]);
        assert_eq!(p.take(), None);
        d.write(2, &[1]);
        assert_eq!(p.take(), Some(PowerRequest::Reset));
        d.write(9, &[]);
    }
}

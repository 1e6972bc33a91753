//! The i8042 keyboard controller, only for its CPU-reset command (0xFE on port 0x64).

use std::sync::Arc;

use vm_superio::Trigger;

use crate::bus::BusDevice;
use crate::power::{PowerRequest, PowerSignal};

/// Turns the controller's reset line into a VM reset request.
pub struct ResetLine(Arc<PowerSignal>);

impl Trigger for ResetLine {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request(PowerRequest::Reset);
        Ok(())
    }
}

/// The controller, mapped at ports 0x60..=0x64.
pub struct I8042 {
    dev: vm_superio::I8042Device<ResetLine>,
}

impl I8042 {
    pub fn new(power: Arc<PowerSignal>) -> Self {
        I8042 {
            dev: vm_superio::I8042Device::new(ResetLine(power)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = u8::try_from(offset).map_or(0, |o| self.dev.read(o));
        data.fill(v);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(o), Some(&v)) = (u8::try_from(offset), data.first()) {
            let _ = self.dev.write(o, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_requests_reset() {
        let p = Arc::new(PowerSignal::new().unwrap());
        let mut d = I8042::new(p.clone());
        d.write(0, &[0xfe]);
        assert_eq!(p.take(), None, "0xfe on the data port is not a command");
        d.write(4, &[0xfe]);
        assert_eq!(p.take(), Some(PowerRequest::Reset));
    }
}

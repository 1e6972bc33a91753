//! The console input thread's allow-list, installed first thing in the
//! thread (`--serial stdio` only): it reads stdin and queues the bytes in
//! the UART (an irqfd write when the guest should be interrupted), sleeping
//! briefly while the guest's FIFO is full. Nothing else.

use super::{Result, Rules};

/// Adds the console input thread's calls to `r` (the common list covers
/// `read`, `write` and the sleep).
pub fn rules(_r: &mut Rules) -> Result<()> {
    Ok(())
}

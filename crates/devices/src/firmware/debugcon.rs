//! The firmware debug port (QEMU's `isa-debugcon`, port 0x402): SeaBIOS
//! writes its log there once reading the port gives 0xe9. Lines go to the
//! VMM's stderr (the VM's `vmm.log` under vtd) prefixed `firmware: `.

use std::io::Write;

use crate::bus::BusDevice;

/// SeaBIOS's debug port.
pub const DEBUGCON_PORT: u16 = 0x402;
/// What a read gives: the value SeaBIOS checks before it logs.
const READBACK: u8 = 0xe9;
/// Longest line kept; a longer one is cut.
const MAX_LINE: usize = 512;

/// The port, its output buffered by line.
pub struct DebugCon {
    line: Vec<u8>,
    out: Box<dyn Write + Send>,
}

impl DebugCon {
    /// A port whose lines go to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        DebugCon {
            line: Vec::new(),
            out,
        }
    }

    fn flush_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        // Losing a log line must not stop the guest.
        let _ = writeln!(self.out, "firmware: {}", text.trim_end());
        let _ = self.out.flush();
        self.line.clear();
    }
}

impl BusDevice for DebugCon {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(READBACK);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        for &b in data.iter().take(1) {
            match b {
                b'\n' => self.flush_line(),
                b'\r' => {}
                _ if self.line.len() >= MAX_LINE => self.flush_line(),
                _ => {}
            }
            if b != b'\n' && b != b'\r' {
                self.line.push(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_prefixed_and_long_lines_cut() {
        let sink = Sink::default();
        let mut d = DebugCon::new(Box::new(sink.clone()));
        let mut b = [0u8; 2];
        d.read(0, &mut b);
        assert_eq!(b, [READBACK; 2]);
        for c in b"SeaBIOS\r\nok\n" {
            d.write(0, &[*c]);
        }
        d.write(0, &[]);
        for _ in 0..MAX_LINE + 3 {
            d.write(0, b"x");
        }
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "firmware: SeaBIOS");
        assert_eq!(lines[1], "firmware: ok");
        assert_eq!(lines[2].len(), "firmware: ".len() + MAX_LINE);
    }
}

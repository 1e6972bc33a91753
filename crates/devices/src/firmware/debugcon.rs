//! The firmware debug port (QEMU's `isa-debugcon`, port 0x402): SeaBIOS
//! writes its log there once reading the port gives 0xe9. Lines go to the
//! VMM's stderr (the VM's `vmm.log` under vtd) prefixed `firmware: `.
//! The port stays there for the guest's whole life, so what it may write
//! is capped ([`MAX_TOTAL`]): a guest looping on it fills no host disk.

use std::io::Write;

use crate::bus::BusDevice;

/// SeaBIOS's debug port.
pub const DEBUGCON_PORT: u16 = 0x402;
/// What a read gives: the value SeaBIOS checks before it logs.
const READBACK: u8 = 0xe9;
/// Longest line kept; a longer one is cut.
const MAX_LINE: usize = 512;
/// Bytes of lines written in all; then one line says so and the rest is
/// dropped (SeaBIOS logs ~4 KiB a boot; reboots repeat it).
pub const MAX_TOTAL: usize = 256 << 10;

/// The port, its output buffered by line.
pub struct DebugCon {
    line: Vec<u8>,
    out: Box<dyn Write + Send>,
    /// Bytes written to `out` so far.
    written: usize,
}

impl DebugCon {
    /// A port whose lines go to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        DebugCon {
            line: Vec::new(),
            out,
            written: 0,
        }
    }

    fn flush_line(&mut self) {
        if self.written <= MAX_TOTAL {
            let text = String::from_utf8_lossy(&self.line);
            let line = format!("firmware: {}\n", text.trim_end());
            let over = self.written + line.len() > MAX_TOTAL;
            let line = if over {
                format!("firmware: (log over {MAX_TOTAL} bytes: the rest is dropped)\n")
            } else {
                line
            };
            // Losing a log line must not stop the guest.
            let _ = self.out.write_all(line.as_bytes());
            let _ = self.out.flush();
            self.written = if over {
                MAX_TOTAL + 1
            } else {
                self.written + line.len()
            };
        }
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

    #[test]
    fn a_guest_cannot_write_more_than_the_cap() {
        let sink = Sink::default();
        let mut d = DebugCon::new(Box::new(sink.clone()));
        for _ in 0..(MAX_TOTAL / 10) * 3 {
            for c in b"123456789\n" {
                d.write(0, &[*c]);
            }
        }
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(out.len() <= MAX_TOTAL + 80, "{} bytes", out.len());
        let last: Vec<&str> = out.lines().rev().take(2).collect();
        assert!(last[0].contains("the rest is dropped"), "{last:?}");
        assert_eq!(last[1], "firmware: 123456789");
        assert_eq!(out.matches("dropped").count(), 1);
    }
}

//! The serial console's host side: where COM1 output goes and where its input
//! comes from.
//!
//! With `stdio`, a thread copies stdin into whichever UART is attached (the
//! attachment survives a guest reboot with `--on-reboot restart`), and a
//! terminal on stdin is put in raw mode for the VM's lifetime.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::SerialConfig;
use devices::bus::lock;
use devices::legacy::Serial;

use crate::Error;

type Slot = Arc<Mutex<Option<Arc<Mutex<Serial>>>>>;

/// The console of one `vt-vmm` process.
pub struct Console {
    config: SerialConfig,
    file: Option<File>,
    slot: Slot,
    _raw: Option<RawTerminal>,
}

impl Console {
    /// Opens the console `config` describes (the serial file, or a raw
    /// terminal on stdin); [`Console::start_input`] starts reading stdin.
    pub fn new(config: &SerialConfig) -> Result<Self, Error> {
        let slot: Slot = Arc::new(Mutex::new(None));
        let mut file = None;
        let mut raw = None;
        match config {
            SerialConfig::File(path) => {
                let f = match devices::files::passed_fd(path) {
                    Some(_) => devices::files::open(path, true, libc::O_APPEND),
                    None => OpenOptions::new().create(true).append(true).open(path),
                }
                .map_err(|source| Error::Open {
                    what: "serial output file",
                    path: path.display().to_string(),
                    source,
                })?;
                file = Some(f);
            }
            SerialConfig::Stdio => raw = RawTerminal::enter(),
            SerialConfig::Null => {}
        }
        Ok(Console {
            config: config.clone(),
            file,
            slot,
            _raw: raw,
        })
    }

    /// With `stdio`, starts the thread copying stdin into the UART (its
    /// seccomp filter is the `console` kind).
    pub fn start_input(&self) -> Result<(), Error> {
        if self.config != SerialConfig::Stdio {
            return Ok(());
        }
        let slot = self.slot.clone();
        std::thread::Builder::new()
            .name("console-in".into())
            .spawn(move || {
                crate::sandbox::enter_thread(crate::sandbox::ThreadKind::Console);
                copy_input(std::io::stdin(), slot)
            })
            .map_err(Error::Thread)?;
        Ok(())
    }

    /// A writer for a new UART's output.
    pub fn output(&self) -> Result<Box<dyn Write + Send>, Error> {
        Ok(match (&self.config, &self.file) {
            (SerialConfig::File(_), Some(f)) => Box::new(
                f.try_clone()
                    .map_err(|e| Error::Io("cannot reopen the serial file", e))?,
            ),
            (SerialConfig::Stdio, _) => Box::new(std::io::stdout()),
            _ => Box::new(std::io::sink()),
        })
    }

    /// A handle that feeds serial input from elsewhere than stdin.
    pub fn input(&self) -> ConsoleInput {
        ConsoleInput(self.slot.clone())
    }

    /// Routes input to `serial` from now on.
    pub fn attach(&self, serial: Arc<Mutex<Serial>>) {
        *lock(&self.slot) = Some(serial);
    }
}

fn copy_input(mut input: impl Read, slot: Slot) {
    let sink = ConsoleInput(slot);
    let mut buf = [0u8; 256];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        sink.send(&buf[..n], None);
    }
}

/// Feeds bytes to whichever UART is attached (stdin, or the control socket).
#[derive(Clone)]
pub struct ConsoleInput(Slot);

impl ConsoleInput {
    /// Queues `bytes` as serial input, waiting (up to `timeout`, if given)
    /// for the guest to drain its FIFO; returns how many were queued. Bytes
    /// are dropped while no UART is attached.
    pub fn send(&self, bytes: &[u8], timeout: Option<Duration>) -> usize {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut pending = bytes;
        while !pending.is_empty() && deadline.is_none_or(|d| std::time::Instant::now() < d) {
            let serial = lock(&self.0).clone();
            let Some(serial) = serial else { break };
            let taken = lock(&serial).enqueue_input(pending);
            pending = &pending[taken..];
            if !pending.is_empty() {
                // The guest has not drained its FIFO yet.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        bytes.len() - pending.len()
    }
}

/// Raw mode on the terminal at stdin, restored on drop.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    fn enter() -> Option<Self> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data, filled by tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Keep output post-processing so host-side messages stay readable.
        raw.c_oflag |= libc::OPOST;
        // SAFETY: applying a termios derived from the current one.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restoring the settings read in `enter`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

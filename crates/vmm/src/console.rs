//! The serial console's host side: where COM1 output goes and where its input
//! comes from.
//!
//! With `stdio`, a thread copies stdin into whichever UART is attached (the
//! attachment survives a guest reboot with `--on-reboot restart`), and a
//! terminal on stdin is put in raw mode for the VM's lifetime.
//!
//! Output never blocks a vCPU thread: the UART's bytes go into a bounded
//! queue ([`OUTPUT_QUEUE_BYTES`]) that the `console-out` thread writes to
//! stdout or the serial file. When nobody reads (a full pipe), the queue
//! fills and further output is dropped and counted, as a real UART's
//! output is lost on a line nobody listens to; the guest keeps running and
//! the VMM stays stoppable.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use api::SerialConfig;
use devices::bus::lock;
use devices::legacy::Serial;

use crate::Error;

type Slot = Arc<Mutex<Option<Arc<Mutex<Serial>>>>>;

/// How much serial output may wait for the host side to take it.
pub const OUTPUT_QUEUE_BYTES: usize = 1 << 20;
/// How long the end of the VMM waits for queued output to be written.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Queued {
    bytes: VecDeque<u8>,
    /// Bytes dropped because the queue was full.
    dropped: u64,
    /// The writer thread holds bytes it took but has not written yet.
    writing: bool,
}

/// Serial output between the UART (vCPU threads) and the writer thread.
#[derive(Default)]
struct OutputQueue {
    q: Mutex<Queued>,
    /// Signalled when bytes arrive and when the queue becomes empty.
    changed: Condvar,
}

/// The UART's writer: queues, never blocks on the host side.
struct QueuedWriter(Arc<OutputQueue>);

impl Write for QueuedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut q = lock(&self.0.q);
        let was_empty = q.bytes.is_empty();
        let room = OUTPUT_QUEUE_BYTES.saturating_sub(q.bytes.len());
        let take = room.min(buf.len());
        q.bytes.extend(&buf[..take]);
        q.dropped += (buf.len() - take) as u64;
        drop(q);
        if was_empty && take > 0 {
            self.0.changed.notify_all();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The `console-out` thread: writes queued output to `sink`. A sink that
/// fails (a closed pipe) makes it discard the rest.
fn write_output(queue: Arc<OutputQueue>, mut sink: Box<dyn Write + Send>) {
    let mut broken = false;
    loop {
        let chunk: Vec<u8> = {
            let mut q = lock(&queue.q);
            q.writing = false;
            queue.changed.notify_all();
            while q.bytes.is_empty() {
                q = queue.changed.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            let n = q.bytes.len().min(64 << 10);
            q.writing = true;
            q.bytes.drain(..n).collect()
        };
        if !broken && (sink.write_all(&chunk).is_err() || sink.flush().is_err()) {
            broken = true;
        }
    }
}

/// The console of one `vt-vmm` process.
pub struct Console {
    config: SerialConfig,
    file: Option<File>,
    slot: Slot,
    queue: Arc<OutputQueue>,
    _raw: Option<RawTerminal>,
}

impl Console {
    /// Opens the console `config` describes (the serial file, or a raw
    /// terminal on stdin); [`Console::start_threads`] starts the console threads.
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
            queue: Arc::default(),
            _raw: raw,
        })
    }

    /// Starts the `console-out` thread writing the UART's output (not for
    /// `null`), and with `stdio`, the `console-in` thread copying stdin
    /// into the UART (both under the `console` seccomp filter).
    pub fn start_threads(&self) -> Result<(), Error> {
        let sink: Box<dyn Write + Send> = match (&self.config, &self.file) {
            (SerialConfig::File(_), Some(f)) => Box::new(
                f.try_clone()
                    .map_err(|e| Error::Io("cannot reopen the serial file", e))?,
            ),
            (SerialConfig::Stdio, _) => Box::new(std::io::stdout()),
            _ => return Ok(()),
        };
        let queue = self.queue.clone();
        std::thread::Builder::new()
            .name("console-out".into())
            .spawn(move || {
                crate::sandbox::enter_thread(crate::sandbox::ThreadKind::Console);
                write_output(queue, sink)
            })
            .map_err(Error::Thread)?;
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

    /// A writer for a new UART's output (the queue; it never blocks).
    pub fn output(&self) -> Result<Box<dyn Write + Send>, Error> {
        if self.config == SerialConfig::Null {
            return Ok(Box::new(std::io::sink()));
        }
        Ok(Box::new(QueuedWriter(self.queue.clone())))
    }

    /// Waits (at most [`OUTPUT_DRAIN_TIMEOUT`]) until the queued output is
    /// written; returns how many bytes were dropped or left unwritten.
    pub fn drain(&self) -> u64 {
        let deadline = Instant::now() + OUTPUT_DRAIN_TIMEOUT;
        let mut q = lock(&self.queue.q);
        while !q.bytes.is_empty() || q.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            q = self
                .queue
                .changed
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        q.dropped + q.bytes.len() as u64
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

//! `vt console NAME`: the serial console.
//!
//! On a terminal: interactive, the terminal in raw mode, keys go to the
//! guest, Ctrl-] detaches. Otherwise: the console output is streamed to
//! stdout until the VM stops (or, with `--no-follow`, what is there now).

use std::io::{Read, Write};

use super::client::{CliError, CliResult, Client};

/// Ctrl-]
const DETACH: u8 = 0x1d;

fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

pub fn run(c: &Client, name: &str, follow: bool) -> CliResult {
    let interactive = follow && is_tty(0) && is_tty(1);
    let query = if follow { "?follow=1" } else { "" };
    let mut reader = c.stream(&format!("/vms/{name}/console{query}"))?;
    if !interactive {
        let mut out = std::io::stdout();
        return std::io::copy(&mut reader, &mut out)
            .map(drop)
            .map_err(|e| CliError {
                code: 1,
                message: format!("console stream: {e}"),
            });
    }
    eprint!("Connected to {name} (detach with Ctrl-])\r\n");
    let raw = RawTerminal::enter();
    let saved = raw.as_ref().map(|r| r.0);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                break;
            }
        }
        if let Some(t) = saved {
            restore(&t);
        }
        eprintln!("\r\n[console closed: the VM stopped]");
        std::process::exit(0);
    });
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 256];
    loop {
        let n = stdin.read(&mut buf).unwrap_or(0);
        if n == 0 {
            return Ok(());
        }
        let keys = &buf[..n];
        let (keys, detach) = match keys.iter().position(|b| *b == DETACH) {
            Some(i) => (&keys[..i], true),
            None => (keys, false),
        };
        if !keys.is_empty() {
            c.call("POST", &format!("/vms/{name}/console"), Some(keys.to_vec()))?;
        }
        if detach {
            eprint!("\r\n");
            return Ok(());
        }
    }
}

/// Raw mode on stdin, restored on drop.
struct RawTerminal(libc::termios);

impl RawTerminal {
    fn enter() -> Option<Self> {
        // SAFETY: termios is plain data, filled by tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: applying a termios derived from the current one.
        (unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw) } == 0).then_some(RawTerminal(saved))
    }
}

fn restore(t: &libc::termios) {
    // SAFETY: restoring settings read by tcgetattr in `enter`.
    unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore(&self.0);
    }
}

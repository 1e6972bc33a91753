//! `vt top`: every VM, refreshed: CPU %, memory, disk and network rates,
//! from two `GET /vms/NAME/stats` a refresh apart. On a terminal it takes
//! the screen (crossterm: raw mode, alternate screen) and `q` (or Esc,
//! Ctrl-C) quits; elsewhere it prints a frame per refresh. Only GETs: it
//! works over `vtd`'s read-only socket.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use api::manager::VmStatus;
use api::stats::VmStats;
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use crossterm::{cursor, execute, queue, terminal};

use super::client::{CliError, CliResult, Client};

/// `vt top` options.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Seconds between refreshes.
    #[arg(short, long, default_value_t = 1.0)]
    delay: f64,
    /// Stop after this many refreshes (default: until `q`).
    #[arg(short = 'n', long)]
    iterations: Option<u64>,
}

/// The totals of one sample that rates are made of.
#[derive(Clone, Copy, Default)]
struct Totals {
    at_ms: u64,
    cpu_ns: u64,
    rd: u64,
    wr: u64,
    rx: u64,
    tx: u64,
}

fn totals(s: &VmStats) -> Totals {
    let mut t = Totals {
        at_ms: s.timestamp_ms,
        cpu_ns: s.cpu_time_ns.unwrap_or(0),
        ..Totals::default()
    };
    if let Some(c) = &s.counters {
        for d in &c.detail.disks {
            t.rd += d.read_bytes;
            t.wr += d.write_bytes;
        }
        for n in &c.detail.nets {
            t.rx += n.rx_bytes;
            t.tx += n.tx_bytes;
        }
    }
    t
}

/// A byte count for people (KiB, MiB, GiB).
fn size(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {}", units[i])
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// One screen: a header and a row per VM.
fn frame(stats: &[VmStats], before: &HashMap<String, Totals>) -> Vec<String> {
    let running = stats.iter().filter(|s| s.state.is_active()).count();
    let mut lines = vec![
        format!("vt top - {} VMs, {running} running - q quits", stats.len()),
        String::new(),
    ];
    let header = [
        "NAME",
        "STATE",
        "VCPUS",
        "CPU%",
        "MEMORY",
        "RSS",
        "DISK RD/s",
        "DISK WR/s",
        "NET RX/s",
        "NET TX/s",
    ];
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for s in stats {
        let now = totals(s);
        let rate = before
            .get(&s.name)
            .filter(|b| now.at_ms > b.at_ms)
            .map(|b| {
                let secs = (now.at_ms - b.at_ms) as f64 / 1e3;
                let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
                (
                    per(now.cpu_ns, b.cpu_ns) / 1e9 * 100.0,
                    per(now.rd, b.rd),
                    per(now.wr, b.wr),
                    per(now.rx, b.rx),
                    per(now.tx, b.tx),
                )
            });
        let active = s.state.is_active();
        let show = |f: &dyn Fn((f64, f64, f64, f64, f64)) -> String| match rate {
            Some(r) if active => f(r),
            _ => "-".to_string(),
        };
        rows.push(vec![
            s.name.clone(),
            s.state.as_str().to_string(),
            s.vcpus.to_string(),
            show(&|r| format!("{:.1}", r.0)),
            size((s.memory_mib << 20) as f64),
            s.memory
                .as_ref()
                .map_or("-".into(), |m| size((m.rss_kib << 10) as f64)),
            show(&|r| size(r.1)),
            show(&|r| size(r.2)),
            show(&|r| size(r.3)),
            show(&|r| size(r.4)),
        ]);
    }
    let mut widths = vec![0usize; header.len()];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i < 2 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        lines.push(cells.join("  ").trim_end().to_string());
    }
    lines
}

/// Every VM's statistics now (a VM undefined meanwhile is left out).
fn sample(c: &Client) -> CliResult<Vec<VmStats>> {
    let vms: Vec<VmStatus> = c.json("GET", "/vms", None)?;
    let mut out = Vec::with_capacity(vms.len());
    for v in vms {
        match c.json::<VmStats>("GET", &format!("/vms/{}/stats", v.name), None) {
            Ok(s) => out.push(s),
            Err(e) if e.code == 4 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Restores the terminal however `top` ends.
struct Screen;

impl Screen {
    fn take() -> std::io::Result<Screen> {
        terminal::enable_raw_mode()?;
        let mut out = std::io::stdout();
        if let Err(e) = execute!(out, terminal::EnterAlternateScreen, cursor::Hide) {
            let _ = terminal::disable_raw_mode();
            return Err(e);
        }
        Ok(Screen)
    }

    fn draw(&self, lines: &[String]) -> std::io::Result<()> {
        let mut out = std::io::stdout();
        queue!(
            out,
            cursor::MoveTo(0, 0),
            terminal::Clear(terminal::ClearType::All)
        )?;
        for (i, l) in lines.iter().enumerate() {
            queue!(out, cursor::MoveTo(0, i as u16))?;
            out.write_all(l.as_bytes())?;
        }
        out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

/// Waits up to `d` for a quitting key; true when one came.
fn quit_pressed(d: Duration) -> std::io::Result<bool> {
    let until = Instant::now() + d;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if !event::poll(left)? {
            return Ok(false);
        }
        if let Event::Key(KeyEvent {
            code, modifiers, ..
        }) = event::read()?
        {
            let ctrl_c = modifiers.contains(KeyModifiers::CONTROL) && code == KeyCode::Char('c');
            if ctrl_c || matches!(code, KeyCode::Char('q') | KeyCode::Esc) {
                return Ok(true);
            }
        }
    }
}

/// Samples every VM's statistics each `--delay` seconds and shows a frame
/// per sample, with rates since the previous one: full-screen (until `q`,
/// Esc or Ctrl-C) when stdin and stdout are terminals, else printed frames
/// each followed by a blank line; stops after `--iterations` frames if given.
/// Errors: a delay that is not a positive number of seconds, a terminal
/// that cannot be set up or drawn on, or a failed request.
pub fn run(c: &Client, args: TopArgs) -> CliResult {
    let delay = Duration::try_from_secs_f64(args.delay)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| CliError::usage("--delay: a positive number of seconds"))?;
    let io = |e: std::io::Error| CliError {
        code: 1,
        message: format!("terminal: {e}"),
    };
    let screen = if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
        Some(Screen::take().map_err(io)?)
    } else {
        None
    };
    let mut before: HashMap<String, Totals> = HashMap::new();
    let mut n = 0u64;
    loop {
        let stats = sample(c)?;
        let lines = frame(&stats, &before);
        before = stats.iter().map(|s| (s.name.clone(), totals(s))).collect();
        match &screen {
            Some(s) => s.draw(&lines).map_err(io)?,
            None => {
                for l in &lines {
                    println!("{l}");
                }
                println!();
            }
        }
        n += 1;
        if args.iterations.is_some_and(|max| n >= max) {
            return Ok(());
        }
        if screen.is_some() {
            if quit_pressed(delay).map_err(io)? {
                return Ok(());
            }
        } else {
            std::thread::sleep(delay);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::manager::VmState;

    fn stats(name: &str, at_ms: u64, cpu_ns: u64) -> VmStats {
        VmStats {
            name: name.into(),
            state: VmState::Running,
            timestamp_ms: at_ms,
            vcpus: 2,
            memory_mib: 512,
            disk_names: vec![],
            cpu_time_ns: Some(cpu_ns),
            cpu_source: None,
            memory: None,
            counters: None,
        }
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let first = stats("a", 1_000, 0);
        let before: HashMap<String, Totals> = [("a".to_string(), totals(&first))].into();
        // 1.5 s of CPU in 1 s: 150 % (two vCPUs).
        let lines = frame(&[stats("a", 2_000, 1_500_000_000)], &before);
        let row = lines.last().unwrap();
        assert!(row.contains("150.0"), "{lines:?}");
        assert!(row.contains("512.0 MiB"), "{lines:?}");
        // No earlier sample: no rates.
        let lines = frame(&[first], &HashMap::new());
        assert!(lines.last().unwrap().contains(" -"), "{lines:?}");
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(size(0.0), "0 B");
        assert_eq!(size(1536.0), "1.5 KiB");
        assert_eq!(size((3u64 << 30) as f64), "3.0 GiB");
    }
}

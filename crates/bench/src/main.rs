//! `vt-bench`: our VMM against QEMU, side by side and interleaved in one run.
//!
//! - `tiny`: the tiny guest on this host's /dev/kvm (start → first serial
//!   byte, → exit, peak RSS);
//! - `rss`: resident memory of a running VM split into guest RAM touched and
//!   VMM overhead (/proc/PID/smaps);
//! - `linux`: stock Linux to init in the lab (runs `linux-inner` there);
//! - `firmware`: a Debian disk image through SeaBIOS and GRUB to systemd,
//!   vt-vmm vs QEMU `-M pc`, in the lab (runs `firmware-inner` there);
//! - `io`: block and network throughput in the lab (also vs the lab host);
//! - `all`: tiny, rss and linux, written to BENCHMARKS.md;
//! - `confinement`: the tiny guest with the VMM's seccomp + Landlock on
//!   vs off (its own section of BENCHMARKS.md);
//! - `api`: the manager (`vtd`) under 50 concurrent clients, and `vt start`
//!   to first guest output (its own section of BENCHMARKS.md);
//! - `faults`: `vtd`'s fault-injection loop, longer than in CI (its own
//!   section of BENCHMARKS.md);
//! - `audit`: the audit trail's append, verify and search rates and a file
//!   watch's cost on reads (its own section of BENCHMARKS.md);
//! - `memory`: density of idle Linux guests with KSM and free page
//!   reporting, VMM overhead, THP / hugetlbfs under a guest's page faults,
//!   in the lab (its own section of BENCHMARKS.md).
//! - `hang`: the guest-hang stress loop (many short iperf3 transfers) and
//!   SMP boots, vt-vmm and QEMU, in the lab (its own section).

mod api;
mod audit;
mod confine;
mod faults;
mod firmware;
mod hang;
mod host;
mod io;
mod linux;
mod memory;
mod report;
mod rss;
mod run;
mod section;
mod stats;
mod tiny;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "vt-bench", version, about = "Benchmark vt-vmm against QEMU")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Tiny guest on the host /dev/kvm: start → first serial byte, → exit, peak RSS
    Tiny(tiny::TinyArgs),
    /// VMM RSS minus guest memory touched, with a spinning tiny guest
    Rss(rss::RssArgs),
    /// Stock Linux (bzImage and PVH vmlinux) to init, in the lab
    Linux(linux::LinuxArgs),
    /// The lab half of `linux` (run inside the lab)
    #[command(hide = true)]
    LinuxInner(linux::InnerArgs),
    /// A Debian disk image through SeaBIOS and GRUB to systemd, in the lab
    Firmware(firmware::FirmwareArgs),
    /// The lab half of `firmware` (run inside the lab)
    #[command(hide = true)]
    FirmwareInner(firmware::FirmwareInnerArgs),
    /// Block and network I/O in the lab: vt-vmm, QEMU and the lab host
    Io(io::IoArgs),
    /// Run tiny, rss and linux and write the Markdown report
    All(report::AllArgs),
    /// vtd API latency under concurrent clients; `vt start` to first output
    Api(api::ApiArgs),
    /// The audit trail: append, verify, search; a file watch's cost on reads
    Audit(audit::AuditArgs),
    /// Tiny guest with the VMM's seccomp + Landlock on vs off, interleaved
    Confinement(confine::ConfineArgs),
    /// vtd's fault-injection loop (kill -9, corrupt state), longer than CI
    Faults(faults::FaultsArgs),
    /// Memory in the lab: guest density with KSM and free page reporting,
    /// VMM overhead, THP and hugetlbfs under page faults
    Memory(memory::MemoryArgs),
    /// Guest-hang stress loop in the lab: iperf3 bursts and SMP boots, both VMMs
    Hang(hang::HangArgs),
    /// Write the tiny guest used here (PVH ELF) to a file, for runs by hand
    TinyElf {
        /// Output file
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
        /// The `rss` variant: spin after the message instead of powering off
        #[arg(long)]
        spin: bool,
    },
}

fn write_elf(out: &std::path::Path, spin: bool) -> anyhow::Result<()> {
    let image = match spin {
        true => tinyguest::elf_with(rss::MESSAGE, true, tinyguest::Ending::Spin),
        false => tinyguest::elf_with(
            tinyguest::DEFAULT_MESSAGE,
            true,
            tinyguest::Ending::PowerOff,
        ),
    };
    std::fs::write(out, image).with_context(|| format!("writing {}", out.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let done = match cli.command {
        Cmd::Tiny(a) => tiny::run(&a).map(|t| print!("{}", stats::markdown(&t))),
        Cmd::Rss(a) => rss::run(&a).map(|t| print!("{}", stats::markdown(&t))),
        Cmd::Linux(a) => linux::run(&a).map(|r| {
            for t in &r.tables {
                println!("{}", stats::markdown(t));
            }
        }),
        Cmd::LinuxInner(a) => linux::inner(&a),
        Cmd::Io(a) if a.counters_cost => io::run(&a).and_then(|t| {
            let md = section::wrap("io-counters", &io::counters_report(&t));
            section::emit(a.out.as_deref(), "io-counters", &md)
        }),
        Cmd::Firmware(a) => firmware::run(&a).map(|r| {
            for t in &r.tables {
                println!("{}", stats::markdown(t));
            }
        }),
        Cmd::FirmwareInner(a) => firmware::inner(&a),
        Cmd::Io(a) => io::run(&a).and_then(|t| {
            let md = section::wrap("io", &io::report(&t));
            section::emit(a.out.as_deref(), "io", &md)
        }),
        Cmd::All(a) => report::all(&a),
        Cmd::Api(a) if a.metrics => {
            api::metrics(&a).and_then(|md| section::emit(a.out.as_deref(), "api-metrics", &md))
        }
        Cmd::Api(a) => api::run(&a).and_then(|md| section::emit(a.out.as_deref(), "api", &md)),
        Cmd::Confinement(a) => confine::run(&a).and_then(|md| {
            let md = section::wrap("confinement", &md);
            section::emit(a.out.as_deref(), "confinement", &md)
        }),
        Cmd::Faults(a) => {
            faults::run(&a).and_then(|md| section::emit(a.out.as_deref(), "faults", &md))
        }
        Cmd::Audit(a) => audit::run(&a).and_then(|md| {
            let md = section::wrap("audit", &md);
            section::emit(a.out.as_deref(), "audit", &md)
        }),
        Cmd::Memory(a) => memory::run(&a).and_then(|md| {
            let md = section::wrap("memory", &md);
            section::emit(a.out.as_deref(), "memory", &md)
        }),
        Cmd::Hang(a) => hang::run(&a).and_then(|md| {
            let md = section::wrap("hang", &md);
            match &a.out {
                Some(out) => section::write(out, "hang", &md),
                None => {
                    print!("{md}");
                    Ok(())
                }
            }
        }),
        Cmd::TinyElf { out, spin } => write_elf(&out, spin),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vt-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

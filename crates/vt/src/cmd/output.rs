//! Tables for people, JSON for scripts (`--output json`).

use api::manager::VmStatus;
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[value(alias = "human")]
    Table,
    Json,
}

/// Prints rows as columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    );
}

/// One VM, as `vt info` shows it.
pub fn vm_details(s: &VmStatus) {
    let d = &s.definition;
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map_or_else(|| "-".to_string(), |p| p.display().to_string())
    };
    let mut rows = vec![
        ("Name", s.name.clone()),
        ("State", s.state.as_str().to_string()),
        ("PID", s.pid.map_or("-".into(), |p| p.to_string())),
        ("Reason", s.reason.clone().unwrap_or_else(|| "-".into())),
        ("vCPUs", d.vcpus.to_string()),
        (
            "Memory",
            format!("{} MiB{}", d.memory_mib, memory_options(&d.memory)),
        ),
        ("Boot", boot_mode(d.boot).into()),
        ("Kernel", path(&d.kernel)),
        ("Initrd", path(&d.initrd)),
        ("Cmdline", d.cmdline.clone()),
        ("Autostart", if d.autostart { "yes" } else { "no" }.into()),
    ];
    for disk in &d.disks {
        let ro = if disk.readonly { ", read-only" } else { "" };
        // Format and allocation as this host sees the file (vt usually
        // runs where vtd does); just the path when it cannot be read.
        let facts = disk::info::info(&disk.path, disk.format).map_or(String::new(), |i| {
            format!(
                " ({}, {} allocated of {}{ro})",
                i.format.name(),
                crate::image::human_size(i.actual_size),
                crate::image::human_size(i.virtual_size)
            )
        });
        rows.push(("Disk", format!("{}{facts}", disk.path.display())));
    }
    for n in &d.networks {
        let mut text = match (&n.network, &n.bridge) {
            (Some(net), _) => format!("network={net}"),
            (None, Some(b)) => format!("bridge={b}"),
            _ => String::new(),
        };
        if let Some(m) = &n.mac {
            text.push_str(&format!(" mac={m}"));
        }
        if let Some(ip) = &n.ip {
            text.push_str(&format!(" ip={ip}"));
        }
        if !n.peers.is_empty() {
            text.push_str(&format!(" peers={}", n.peers.join(":")));
        }
        rows.push(("Network", text));
    }
    for (i, n) in s.nics.iter().enumerate() {
        let bridge = n.bridge.as_deref().unwrap_or("-");
        let now = match (n.attached, s.state.is_active()) {
            (true, _) => format!("attached to {bridge}"),
            (false, true) => format!("NOT attached to {bridge}"),
            (false, false) => format!("not attached (VM {})", s.state.as_str()),
        };
        rows.push(("NIC", format!("{i}: tap {}, mac {}, {now}", n.tap, n.mac)));
    }
    if s.pending_changes {
        rows.push(("Changes", "pending changes apply at next start".into()));
    }
    if let Some(c) = &s.confinement {
        rows.push((
            "Cell",
            format!("uid {}, own namespaces, no capabilities", c.uid),
        ));
        let limits = if c.cgroup_limits.is_empty() {
            "none".to_string()
        } else {
            c.cgroup_limits.join(", ")
        };
        rows.push(("Limits", limits));
        if !c.cgroup_missing.is_empty() {
            let missing = c.cgroup_missing.join(", ");
            rows.push((
                "Unlimited",
                format!("{missing} (no such cgroup controller)"),
            ));
        }
    } else if s.state.is_active() {
        rows.push(("Cell", "none: runs unconfined (vtd --jail off)".into()));
    }
    if let Some(b) = &s.barriers {
        rows.push(("Seccomp", api_name(&b.seccomp)));
        let ll = match b.landlock {
            api::control::LandlockState::Unsupported => "unsupported by this kernel".to_string(),
            other => format!("{} (ABI {})", api_name(&other), b.landlock_abi),
        };
        rows.push(("Landlock", ll));
    }
    if let Some(m) = &s.memory {
        let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        rows.push((
            "Mem used",
            format!(
                "{} guest RAM resident, {} VMM's own",
                mib(m.guest_resident_kib),
                mib(m.overhead_kib)
            ),
        ));
        rows.push((
            "Huge pages",
            format!(
                "{} THP, {} hugetlbfs",
                mib(m.anon_huge_kib),
                mib(m.hugetlb_kib)
            ),
        ));
        if let Some(p) = m.ksm_merging_pages {
            rows.push(("KSM", format!("{p} pages merged ({})", mib(p * 4))));
        }
    }
    if let Some(b) = &s.balloon {
        rows.push((
            "Balloon",
            format!(
                "{} MiB asked, {} MiB held by the guest, {} MiB given back so far",
                b.size_mib, b.actual_mib, b.freed_mib
            ),
        ));
        if let Some(g) = &b.stats {
            let mib = |v: Option<u64>| v.map_or("-".into(), |v| format!("{} MiB", v >> 20));
            rows.push((
                "Guest mem",
                format!(
                    "{} free, {} available of {} (as the guest said last)",
                    mib(g.free_memory),
                    mib(g.available_memory),
                    mib(g.total_memory)
                ),
            ));
        }
    }
    if let Some(c) = &s.counters {
        rows.push(("Uptime", format!("{:.1} s", c.uptime_ms as f64 / 1000.0)));
        rows.push(("Boots", c.boots.to_string()));
        rows.push(("I/O exits", c.io_exits.to_string()));
    }
    for (k, v) in rows {
        println!("{:<10} {v}", format!("{k}:"));
    }
}

/// `, merge=on, thp=off, hugepages=2M` for what differs from the defaults.
fn memory_options(o: &api::MemoryOptions) -> String {
    let mut s = String::new();
    if o.merge {
        s.push_str(", merge=on");
    }
    if !o.thp {
        s.push_str(", thp=off");
    }
    if let Some(h) = o.hugepages {
        s.push_str(&format!(", hugepages={}", api_name(&h)));
    }
    s
}

/// A unit enum's name as the API spells it (serde's: `partially_enforced`).
fn api_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_str().map(String::from))
        .unwrap_or_default()
}

/// The boot mode as `vt info` shows it.
fn boot_mode(b: api::BootMode) -> &'static str {
    match b {
        api::BootMode::Kernel => "kernel (direct kernel boot)",
        api::BootMode::Bios => "bios (SeaBIOS boots the first disk)",
        api::BootMode::Uefi => "uefi (OVMF boots the first disk)",
    }
}

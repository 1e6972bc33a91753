//! A running VMM's memory as the host kernel counts it, from
//! `/proc/PID/status`, `/proc/PID/smaps` and `/proc/PID/ksm_stat`
//! (proc(5)): how much of it is guest RAM, how much the VMM's own, how
//! much huge pages back and KSM merged.

use serde::{Deserialize, Serialize};

/// The memory of one VMM process (all sizes in KiB, as /proc gives them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryUsage {
    /// Resident set of the process (`VmRSS`): guest RAM touched plus the
    /// VMM's own pages (hugetlbfs pages are not in it).
    pub rss_kib: u64,
    /// Resident guest RAM: the `Rss` of the guest RAM mappings plus their
    /// hugetlbfs pages.
    pub guest_resident_kib: u64,
    /// The VMM's own memory: `rss_kib` minus the guest RAM's part of it
    /// (its heap, stacks, device buffers, and its binary's and libraries'
    /// resident pages).
    pub overhead_kib: u64,
    /// The anonymous part of `overhead_kib` (`RssAnon` minus guest RAM):
    /// memory only this VMM holds; the rest is its binary's and libraries'
    /// pages, shared with every other VMM through the page cache.
    pub overhead_anon_kib: u64,
    /// Guest RAM on transparent huge pages (`AnonHugePages`).
    pub anon_huge_kib: u64,
    /// Guest RAM on hugetlbfs pages (`HugetlbPages`).
    pub hugetlb_kib: u64,
    /// Pages (4 KiB) of this process merged by KSM (`ksm_merging_pages`);
    /// `None` when the kernel does not say (no KSM, or older than 6.1).
    #[serde(default)]
    pub ksm_merging_pages: Option<u64>,
    /// What KSM saved this process, in bytes (`ksm_process_profit`: merged
    /// pages minus KSM's own bookkeeping; may be negative).
    #[serde(default)]
    pub ksm_process_profit: Option<i64>,
}

/// The guest RAM mappings' sizes in KiB for `memory_mib` of guest RAM:
/// one below the 32-bit MMIO hole (at 3 GiB), one above it for the rest.
pub fn guest_mapping_sizes_kib(memory_mib: u64) -> Vec<u64> {
    const LOW_MIB: u64 = 3 << 10;
    if memory_mib <= LOW_MIB {
        vec![memory_mib << 10]
    } else {
        vec![LOW_MIB << 10, (memory_mib - LOW_MIB) << 10]
    }
}

/// One mapping of `/proc/PID/smaps` (sizes in KiB).
#[derive(Default)]
struct Mapping {
    size: u64,
    rss: u64,
    anon_huge: u64,
    hugetlb: u64,
    /// `dd` in `VmFlags`: advised `MADV_DONTDUMP`.
    dontdump: bool,
}

/// The mappings of an smaps text: a header line (address range first),
/// then `Key: value kB` lines and a `VmFlags:` line.
fn mappings(smaps: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(key) = f.next() else {
            continue;
        };
        if !key.ends_with(':') {
            out.push(Mapping::default());
            continue;
        }
        let Some(m) = out.last_mut() else {
            continue;
        };
        if key == "VmFlags:" {
            m.dontdump = f.any(|flag| flag == "dd");
            continue;
        }
        let value: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match key {
            "Size:" => m.size = value,
            "Rss:" => m.rss = value,
            "AnonHugePages:" => m.anon_huge = value,
            "Private_Hugetlb:" | "Shared_Hugetlb:" => m.hugetlb += value,
            _ => {}
        }
    }
    out
}

/// The first number after `key` on a `key value [kB]` line of `text`.
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

impl MemoryUsage {
    /// Reads process `pid`'s usage; `memory_mib` is its guest RAM size
    /// (its mappings are found by their sizes). Errors: the process is
    /// gone or /proc is not readable.
    pub fn read(pid: u32, memory_mib: u64) -> std::io::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
        let ksm = std::fs::read_to_string(format!("/proc/{pid}/ksm_stat")).unwrap_or_default();
        Ok(Self::parse(&status, &smaps, &ksm, memory_mib))
    }

    /// [`MemoryUsage::read`] on texts already read (hostile-input safe:
    /// anything unparsable counts as zero).
    ///
    /// Guest RAM is told apart by its size (one mapping per region of
    /// [`guest_mapping_sizes_kib`]) and, from VMMs that mark it, by the
    /// `dd` (`MADV_DONTDUMP`) flag in `VmFlags`: a glibc malloc arena is
    /// also a 64 MiB anonymous mapping, so size alone can pick the wrong
    /// one for a 64 MiB guest.
    pub fn parse(status: &str, smaps: &str, ksm_stat: &str, memory_mib: u64) -> Self {
        let maps = mappings(smaps);
        let marked = maps.iter().any(|m| m.dontdump);
        let mut sizes = guest_mapping_sizes_kib(memory_mib);
        let (mut guest, mut anon_huge, mut hugetlb) = (0u64, 0u64, 0u64);
        for m in maps.iter().filter(|m| m.dontdump || !marked) {
            // Each guest region is counted once.
            let Some(i) = sizes.iter().position(|&s| s == m.size) else {
                continue;
            };
            sizes.swap_remove(i);
            guest += m.rss;
            anon_huge += m.anon_huge;
            hugetlb += m.hugetlb;
        }
        let rss = field(status, "VmRSS:").unwrap_or(0);
        MemoryUsage {
            rss_kib: rss,
            guest_resident_kib: guest + hugetlb,
            overhead_kib: rss.saturating_sub(guest),
            overhead_anon_kib: field(status, "RssAnon:").unwrap_or(0).saturating_sub(guest),
            anon_huge_kib: anon_huge,
            hugetlb_kib: hugetlb,
            ksm_merging_pages: field(ksm_stat, "ksm_merging_pages"),
            ksm_process_profit: ksm_stat
                .lines()
                .find_map(|l| l.strip_prefix("ksm_process_profit"))
                .and_then(|v| v.trim().parse().ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 123 /usr/bin/vt-vmm
Size:               1024 kB
Rss:                 800 kB
AnonHugePages:         0 kB
7f0000000000-7f0010000000 rw-p 00000000 00:00 0
Size:             262144 kB
Rss:              131072 kB
AnonHugePages:     65536 kB
Private_Hugetlb:       0 kB
7f1000000000-7f1000200000 rw-p 00000000 00:00 0
Size:               2048 kB
Rss:                1000 kB
AnonHugePages:         0 kB
";

    #[test]
    fn guest_ram_is_told_apart_from_the_vmm_own_memory() {
        let status = "Name:\tvt-vmm\nVmRSS:\t  133872 kB\nRssAnon:\t  132072 kB\n";
        let ksm = "ksm_rmap_items 10\nksm_merging_pages 300\nksm_process_profit -1234\n";
        let u = MemoryUsage::parse(status, SMAPS, ksm, 256);
        assert_eq!(u.rss_kib, 133_872);
        assert_eq!(u.guest_resident_kib, 131_072);
        assert_eq!(u.overhead_kib, 2800);
        assert_eq!(u.overhead_anon_kib, 1000);
        assert_eq!(u.anon_huge_kib, 65536);
        assert_eq!(u.ksm_merging_pages, Some(300));
        assert_eq!(u.ksm_process_profit, Some(-1234));
    }

    #[test]
    fn hugetlb_guest_ram_and_regions_above_the_hole() {
        assert_eq!(guest_mapping_sizes_kib(4096), vec![3 << 20, 1 << 20]);
        let smaps = "\
7f0000000000-7f00c0000000 rw-s 00000000 00:01 5 /memfd:vt-guest-ram (deleted)
Size:            3145728 kB
Rss:                   0 kB
Shared_Hugetlb:  3145728 kB
7f1000000000-7f1040000000 rw-s c0000000 00:01 5 /memfd:vt-guest-ram (deleted)
Size:            1048576 kB
Rss:                   0 kB
Shared_Hugetlb:  1048576 kB
";
        let u = MemoryUsage::parse("VmRSS: 2000 kB\n", smaps, "", 4096);
        assert_eq!(u.hugetlb_kib, 4 << 20);
        assert_eq!(u.guest_resident_kib, 4 << 20);
        assert_eq!(u.overhead_kib, 2000);
        assert_eq!(u.ksm_merging_pages, None);
    }

    #[test]
    fn a_malloc_arena_of_the_guest_size_is_not_taken_for_guest_ram() {
        let smaps = "\
7e0000000000-7e0004000000 rw-p 00000000 00:00 0
Size:              65536 kB
Rss:                 132 kB
VmFlags: rd wr mr mw me ac sd
7f0000000000-7f0004000000 rw-p 00000000 00:00 0
Size:              65536 kB
Rss:                2048 kB
AnonHugePages:         0 kB
VmFlags: rd wr mr mw me ac sd dd
";
        let u = MemoryUsage::parse("VmRSS: 9000 kB\nRssAnon: 3000 kB\n", smaps, "", 64);
        assert_eq!(u.guest_resident_kib, 2048);
        assert_eq!(u.overhead_kib, 9000 - 2048);
        assert_eq!(u.overhead_anon_kib, 3000 - 2048);
    }

    #[test]
    fn garbage_counts_as_zero() {
        let u = MemoryUsage::parse(
            "VmRSS: x\n",
            "Size: 9\nRss: \u{0}\n::\n",
            "ksm_merging_pages -",
            8,
        );
        assert_eq!(u, MemoryUsage::default());
    }
}

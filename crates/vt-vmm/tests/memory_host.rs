//! Guest RAM backing on the host's own `/dev/kvm` with the tiny in-repo
//! guest: hugetlbfs pages (`--memory-hugepages 2M`: all of guest RAM in
//! `HugetlbPages`, kept across guest reboots under the main thread's
//! seccomp filter; too few pages refused before boot) and the THP advice
//! (`--memory-thp`) seen in the guest mapping's `AnonHugePages`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{have_kvm, Vmm};
use tinyguest::Ending;

const POOL: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vt-memhost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn guest(name: &str, ending: Ending) -> PathBuf {
    let path = scratch(name);
    std::fs::write(&path, tinyguest::elf_with("up\n", true, ending)).unwrap();
    path
}

/// Starts `vt-vmm` on `kernel` with `args`, serial to `log`.
fn start(kernel: &Path, log: &Path, args: &[&str]) -> Vmm {
    let _ = std::fs::remove_file(log);
    Vmm(Command::new(env!("CARGO_BIN_EXE_vt-vmm"))
        .arg("--kernel")
        .arg(kernel)
        .arg("--serial")
        .arg(format!("file={}", log.display()))
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap())
}

/// Waits until the guest printed `up` `times` times.
fn wait_up(vmm: &mut Vmm, log: &Path, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("up\n")
        .count()
        < times
    {
        assert!(Instant::now() < deadline, "the guest did not come up");
        if let Some(status) = vmm.0.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            let _ = vmm.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the VMM exited ({status}): {err}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_num(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A field of /proc/PID/status in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in status:\n{text}"))
}

/// `AnonHugePages` (kB) of the process's mapping of `size_kb` kB.
fn anon_huge_kb(pid: u32, size_kb: u64) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut size = 0;
    for l in text.lines() {
        let mut f = l.split_whitespace();
        match (f.next(), f.next()) {
            (Some("Size:"), Some(v)) => size = v.parse().unwrap_or(0),
            (Some("AnonHugePages:"), Some(v)) if size == size_kb => {
                return v.parse().unwrap();
            }
            _ => {}
        }
    }
    panic!("no mapping of {size_kb} kB");
}

/// Grows the host's 2 MiB pool by `n` pages for the test and gives them
/// back at the end.
struct PoolGrant(u64);

impl PoolGrant {
    fn new(n: u64) -> Option<Self> {
        let old = read_num(&format!("{POOL}/nr_hugepages"));
        std::fs::write(format!("{POOL}/nr_hugepages"), (old + n).to_string()).ok()?;
        Some(PoolGrant(old))
    }
}

impl Drop for PoolGrant {
    fn drop(&mut self) {
        let _ = std::fs::write(format!("{POOL}/nr_hugepages"), self.0.to_string());
    }
}

#[test]
fn hugetlb_backs_all_guest_ram_across_reboots_or_refuses_before_boot() {
    if !have_kvm() || !Path::new(POOL).is_dir() {
        eprintln!("skipped: no usable /dev/kvm or no 2 MiB huge page pool");
        return;
    }
    let Some(_grant) = PoolGrant::new(16) else {
        eprintln!("skipped: cannot grow the huge page pool (not root?)");
        return;
    };
    let avail =
        read_num(&format!("{POOL}/free_hugepages")) - read_num(&format!("{POOL}/resv_hugepages"));
    assert!(avail >= 16, "the pool did not grow: {avail} free");

    // 32 MiB on huge pages, rebooting: each boot maps them again under the
    // main thread's seccomp filter (memfd_create, ftruncate).
    let k = guest("huge", Ending::Reboot);
    let log = scratch("huge.log");
    let mut vmm = start(
        &k,
        &log,
        &[
            "--memory",
            "32",
            "--memory-hugepages",
            "2M",
            "--on-reboot",
            "restart",
        ],
    );
    wait_up(&mut vmm, &log, 3);
    drop(vmm);
    // A guest that stays up: all of its RAM is on huge pages (read while
    // the rebooting one rebuilds, it may be half mapped).
    let k = guest("huge-halt", Ending::Halt);
    let log = scratch("huge-halt.log");
    let mut vmm = start(&k, &log, &["--memory", "32", "--memory-hugepages", "2M"]);
    wait_up(&mut vmm, &log, 1);
    assert_eq!(status_kb(vmm.0.id(), "HugetlbPages:"), 32 << 10);
    drop(vmm);

    // More than the pool holds: refused before the guest runs.
    let mib = ((avail + 1) * 2).to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_vt-vmm"))
        .args(["--kernel", k.to_str().unwrap(), "--memory", &mib])
        .args(["--memory-hugepages", "2M", "--serial", "null"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "guest memory needs {} free huge pages of 2 MiB, the host has {avail}",
            avail + 1
        )),
        "{err}"
    );
}

#[test]
fn thp_advice_gives_guest_ram_huge_pages() {
    let enabled =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !have_kvm() || !enabled.contains("[madvise]") {
        eprintln!("skipped: needs /dev/kvm and THP set to madvise (the advice decides)");
        return;
    }
    let k = guest("thp", Ending::Halt);
    for (thp, huge) in [("on", true), ("off", false)] {
        let log = scratch(&format!("thp-{thp}.log"));
        let mut vmm = start(&k, &log, &["--memory", "64", "--memory-thp", thp]);
        wait_up(&mut vmm, &log, 1);
        let kb = anon_huge_kb(vmm.0.id(), 64 << 10);
        assert_eq!(kb > 0, huge, "--memory-thp {thp}: AnonHugePages {kb} kB");
    }
}

/// The VMM's own memory (its RSS minus guest RAM's resident part) with a
/// running guest must stay within this budget. A debug build maps and
/// touches more of its (larger) binary than a release one.
const OVERHEAD_BUDGET_KIB: u64 = if cfg!(debug_assertions) {
    10 << 10
} else {
    6 << 10
};

/// The anonymous part of it (heap, stacks, device buffers: what no other
/// process shares) must stay within this one.
const OVERHEAD_ANON_BUDGET_KIB: u64 = 3 << 10;

#[test]
fn vmm_overhead_stays_within_its_budget() {
    if !have_kvm() {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    }
    let k = guest("overhead", Ending::Halt);
    let log = scratch("overhead.log");
    let mut vmm = start(
        &k,
        &log,
        &[
            "--memory",
            "64",
            "--cpus",
            "2",
            "--rng",
            "--memory-thp",
            "off",
        ],
    );
    wait_up(&mut vmm, &log, 1);
    let u = api::usage::MemoryUsage::read(vmm.0.id(), 64).unwrap();
    eprintln!("{u:?}");
    assert!(u.guest_resident_kib > 0, "the guest touched its RAM: {u:?}");
    assert!(
        u.overhead_kib <= OVERHEAD_BUDGET_KIB,
        "VMM overhead {} KiB over the budget of {OVERHEAD_BUDGET_KIB} KiB: {u:?}",
        u.overhead_kib
    );
    assert!(
        u.overhead_anon_kib <= OVERHEAD_ANON_BUDGET_KIB,
        "VMM anonymous overhead {} KiB over the budget of {OVERHEAD_ANON_BUDGET_KIB} KiB: {u:?}",
        u.overhead_anon_kib
    );
}

/// `GET`/`PUT /vm/balloon` with the tiny guest (no balloon driver: the
/// target is set and kept, the guest never answers): sizes past the
/// guest's memory and bodies that are not a request are refused, and a
/// VM without a balloon says so.
#[test]
fn balloon_api_sets_the_target_and_refuses_bad_requests() {
    if !have_kvm() {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    }
    let k = guest("balloon", Ending::Halt);
    let call = |sock: &Path, method: &str, body: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_vt-api-call"))
            .arg(sock)
            .args([method, "/vm/balloon", body])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let sock = scratch("balloon.sock");
    let log = scratch("balloon.log");
    let mut vmm = start(
        &k,
        &log,
        &[
            "--memory",
            "64",
            "--balloon",
            "free_page_reporting=on",
            "--api-socket",
            sock.to_str().unwrap(),
        ],
    );
    wait_up(&mut vmm, &log, 1);
    let zero = r#"{"size_mib":0,"actual_mib":0,"freed_mib":0,"refused_pages":0}"#;
    assert_eq!(call(&sock, "GET", ""), format!("200 {zero}"));
    assert_eq!(
        call(&sock, "PUT", r#"{"size_mib":48}"#),
        r#"200 {"size_mib":48,"actual_mib":0,"freed_mib":0,"refused_pages":0}"#
    );
    let too_big = call(&sock, "PUT", r#"{"size_mib":65}"#);
    assert!(
        too_big.starts_with("400 ") && too_big.contains("exceeds the guest's 64 MiB"),
        "{too_big}"
    );
    let bad = call(&sock, "PUT", r#"{"size":1}"#);
    assert!(
        bad.starts_with("400 ") && bad.contains("bad balloon request"),
        "{bad}"
    );
    assert!(call(&sock, "GET", "").starts_with(r#"200 {"size_mib":48,"#));
    assert!(call(&sock, "DELETE", "").starts_with("405 "));
    drop(vmm);

    let plain = scratch("plain.sock");
    let log = scratch("plain.log");
    let mut vmm = start(
        &k,
        &log,
        &["--memory", "16", "--api-socket", plain.to_str().unwrap()],
    );
    wait_up(&mut vmm, &log, 1);
    let none = call(&plain, "PUT", r#"{"size_mib":1}"#);
    assert!(
        none.starts_with("409 ") && none.contains("no balloon"),
        "{none}"
    );
}

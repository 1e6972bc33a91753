//! Guest RAM options through `vt` and `vtd` with the tiny guest on the
//! host's /dev/kvm: `vt create --memory MIB,merge=on,thp=off` reaches the
//! definition, the jailed VMM's flags and the kernel (the guest mapping's
//! `VmFlags` in smaps: `mg` = MADV_MERGEABLE, `hg` = MADV_HUGEPAGE), the
//! VM's memory use is in `GET /vms/{name}` and `vt info`, bad options are
//! refused, and `vt host memory` shows the host's KSM state.

mod common;

use common::{require_kvm, wait_for, Vtd};

/// The `VmFlags` of process `pid`'s mapping of `size_kb` kB.
fn vm_flags(pid: u32, size_kb: u64) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut size = 0;
    for l in smaps.lines() {
        if let Some(v) = l.strip_prefix("Size:") {
            size = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
        } else if let Some(f) = l.strip_prefix("VmFlags:") {
            if size == size_kb {
                return f.trim().to_string();
            }
        }
    }
    panic!("no mapping of {size_kb} kB in {pid}");
}

#[test]
fn memory_options_reach_the_vmm_and_its_usage_is_reported() {
    require_kvm!();
    let vtd = Vtd::start("memory");
    let guest = vtd.guest.display().to_string();
    let boot = format!("kernel={guest}");
    let bad = vtd.vt(&[
        "create",
        "--name",
        "b",
        "--memory",
        "17,hugepages=2M",
        "--boot",
        &boot,
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("not a multiple of the 2 MiB huge page size"),
        "{err}"
    );

    for (name, spec, merge, thp) in [
        ("ksm", "16,merge=on,thp=off", true, false),
        ("plain", "16", false, true),
    ] {
        let out = vtd.vt(&["create", "--name", name, "--memory", spec, "--boot", &boot]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let d = vtd.status(name).definition;
        assert_eq!(
            (d.memory_mib, d.memory.merge, d.memory.thp),
            (16, merge, thp)
        );
        vtd.expect("POST", &format!("/vms/{name}/start"), None, 200);
        wait_for(|| vtd.console_log(name).contains("up"), "the guest");
        let s = vtd.status(name);
        let pid = s.pid.expect("running");
        let flags = vm_flags(pid, 16 << 10);
        assert_eq!(
            flags.split(' ').any(|f| f == "mg"),
            merge,
            "{name}: {flags}"
        );
        assert_eq!(flags.split(' ').any(|f| f == "hg"), thp, "{name}: {flags}");
        let m = s.memory.expect("memory use of a running VM");
        assert!(
            m.guest_resident_kib > 0 && m.rss_kib > m.guest_resident_kib,
            "{m:?}"
        );
        let info = String::from_utf8_lossy(&vtd.vt(&["info", name]).stdout).to_string();
        assert!(info.contains("Mem used:"), "{info}");
        if merge {
            assert!(
                info.contains("Memory:    16 MiB, merge=on, thp=off"),
                "{info}"
            );
        }
        vtd.expect("POST", &format!("/vms/{name}/stop"), None, 200);
    }

    let out = vtd.vt(&["host", "memory"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("KSM:"), "{text}");
    let out = vtd.vt(&["--output", "json", "host", "memory"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = std::fs::read_to_string("/sys/kernel/mm/ksm/run").unwrap_or_default();
    let want = match run.trim() {
        "0" => "stopped",
        "1" => "running",
        "" => "",
        _ => "unmerging",
    };
    assert_eq!(v["ksm"].as_str().unwrap_or(""), want, "{v}");
}

//! Guest RAM options through `vt` and `vtd` with the tiny guest on the
//! host's /dev/kvm: `vt create --memory MIB,merge=on,thp=off` reaches the
//! definition, the jailed VMM's flags and the kernel (the guest mapping's
//! `VmFlags` in smaps: `mg` = MADV_MERGEABLE, `hg` = MADV_HUGEPAGE), the
//! VM's memory use is in `GET /vms/{name}` and `vt info`, bad options are
//! refused, and `vt host memory` shows the host's KSM state. The balloon
//! through `vt setmem` (the tiny guest has no driver: the target is set).

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

#[test]
fn vt_setmem_sets_the_balloon_of_a_running_vm() {
    require_kvm!();
    let vtd = Vtd::start("setmem");
    let boot = format!("kernel={}", vtd.guest.display());
    for (name, extra) in [
        ("bal", vec!["--balloon", "free_page_reporting=on"]),
        ("nobal", vec![]),
    ] {
        let mut args = vec!["create", "--name", name, "--memory", "16", "--boot", &boot];
        args.extend(extra);
        let out = vtd.vt(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        vtd.expect("POST", &format!("/vms/{name}/start"), None, 200);
        wait_for(|| vtd.console_log(name).contains("up"), "the guest");
    }
    let b = vtd.status("bal").definition.balloon.expect("a balloon");
    assert!(b.free_page_reporting && !b.deflate_on_oom);
    let out = vtd.vt(&["setmem", "bal", "10M"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("10 MiB asked of 16 MiB (balloon 6 MiB"),
        "{text}"
    );
    let s = vtd.status("bal");
    assert_eq!(s.balloon.expect("balloon info").size_mib, 6);
    let info = String::from_utf8_lossy(&vtd.vt(&["info", "bal"]).stdout).to_string();
    assert!(info.contains("Balloon:   6 MiB asked"), "{info}");
    let big = vtd.vt(&["setmem", "bal", "1G"]);
    assert!(!big.status.success());
    assert!(String::from_utf8_lossy(&big.stderr).contains("has 16 MiB of memory"));
    let e = vtd.expect("PUT", "/vms/bal/balloon", Some(r#"{"size_mib":17}"#), 400);
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("exceeds the guest's 16 MiB"),
        "{e}"
    );
    let e = vtd.expect("PUT", "/vms/nobal/balloon", Some(r#"{"size_mib":1}"#), 409);
    assert!(
        e["error"].as_str().unwrap_or("").contains("no balloon"),
        "{e}"
    );
    for name in ["bal", "nobal"] {
        vtd.expect("POST", &format!("/vms/{name}/stop"), None, 200);
    }
    let e = vtd.expect("PUT", "/vms/bal/balloon", Some(r#"{"size_mib":1}"#), 409);
    assert!(
        e["error"].as_str().unwrap_or("").contains("not running"),
        "{e}"
    );
}

//! A first session with stock Debian Linux, in the lab (or directly on a
//! VT-x/AMD-V host): `vtd` and `vt` create and start the VM, its console
//! shows the guest's boot, `vt list` shows it running, and `vt shutdown`
//! presses the ACPI power button — the guest's own `button` driver sees it
//! and the guest powers off well before the timeout. Before that, `vt
//! reboot` presses the button too and vtd starts the guest again once it
//! has powered off (a new VMM, the guest boots again). The guest's own reads
//! of its disk (Linux scanning it for partitions) are in the audit trail,
//! attributed to the VM.

use std::time::Duration;

use lab::Lab;

const SCRIPT: &str = r#"
R="$VTLAB_ROOT"; VT="$R/vt/vt"; export VT_SOCKET=/tmp/vtd.sock
"$R/vt/vtd" --socket $VT_SOCKET --state-dir /tmp/vt-state --vmm "$R/vt/vt-vmm" --watch-coalesce 2 >/tmp/vtd.log 2>&1 &
for i in $(seq 100); do [ -S $VT_SOCKET ] && break; sleep 0.1; done
$VT create --name lx --ram 256 --vcpus 2 --disk path=/tmp/lx.raw,size=1 \
    --boot kernel=$R/guest/vmlinux,initrd=$R/guest/initramfs.cpio.gz,kernel_args="console=ttyS0 quiet vt.action=wait"
echo "VT-HOST create_rc=$?"
$VT start lx
echo "VT-HOST start_rc=$?"
for i in $(seq 600); do
    $VT console lx --no-follow 2>/dev/null | grep -q 'power-button armed' && break
    sleep 0.2
done
echo "VT-HOST list=$($VT list --output json | tr -d '\n')"
pid1=$($VT info lx --output json | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' | head -1)
$VT reboot lx --timeout 120
echo "VT-HOST reboot_rc=$?"
for i in $(seq 600); do
    pid2=$($VT info lx --output json | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' | head -1)
    [ -n "$pid2" ] && [ "$pid2" != "$pid1" ] && break
    sleep 0.2
done
for i in $(seq 600); do
    $VT console lx --no-follow 2>/dev/null | grep -q 'power-button armed' && break
    sleep 0.2
done
echo "VT-HOST reboot_pids=$pid1 $pid2"
echo "VT-HOST after_reboot=$($VT list --output json | tr -d '\n')"
t0=$(cut -d' ' -f1 /proc/uptime)
$VT shutdown lx --timeout 60
echo "VT-HOST shutdown_rc=$?"
t1=$(cut -d' ' -f1 /proc/uptime)
echo "VT-HOST shutdown_secs=$(echo "$t0 $t1" | awk '{print $2 - $1}')"
echo "VT-HOST info=$($VT info lx --output json | tr -d '\n')"
sleep 3
echo "VT-HOST reads=$($VT audit search --vm lx --action watch.read --output json | tr -d '\n')"
$VT audit verify | sed 's/^/VT-HOST verify: /'
$VT console lx --no-follow | sed 's/^/CONSOLE /'
cat /tmp/vtd.log
sed 's/^/VMMLOG /' /tmp/vt-state/vms/lx/vmm.log
"#;

fn host<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("VT-HOST {key}=");
    out.lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn stock_linux_under_vtd_shuts_down_on_the_power_button() {
    if std::env::var("VT_LAB").is_ok_and(|v| v == "never") {
        eprintln!("VT_LAB=never: Linux guest test skipped");
        return;
    }
    let bin = |name: &str| std::path::PathBuf::from(env!("CARGO_BIN_EXE_vtd")).with_file_name(name);
    let out = Lab::new()
        .memory_mib(2048)
        .cpus(2)
        .timeout(Duration::from_secs(300))
        .with_guest_artifacts()
        .add_binary(env!("CARGO_BIN_EXE_vtd"), "/vt/vtd")
        .add_binary(bin("vt"), "/vt/vt")
        .add_binary(bin("vt-vmm"), "/vt/vt-vmm")
        .add_binary(bin("vt-logger"), "/vt/vt-logger")
        .run_auto(SCRIPT)
        .expect("lab run");
    let o = out.stdout.as_str();
    eprintln!("{o}");
    assert_eq!(out.exit_code, 0, "{o}");
    assert_eq!(host(o, "create_rc"), "0");
    assert_eq!(host(o, "start_rc"), "0");
    let list: serde_json::Value = serde_json::from_str(host(o, "list")).expect("list json");
    assert_eq!(list[0]["name"], "lx", "{list}");
    assert_eq!(list[0]["state"], "running", "{list}");
    // vt reboot: the guest powered off on the button and vtd started it
    // again (a new VMM), running again.
    assert_eq!(host(o, "reboot_rc"), "0");
    let pids: Vec<&str> = host(o, "reboot_pids").split(' ').collect();
    assert!(
        pids.len() == 2 && !pids[1].is_empty() && pids[0] != pids[1],
        "not started again after the reboot: {pids:?}\n{o}"
    );
    let after: serde_json::Value =
        serde_json::from_str(host(o, "after_reboot")).expect("list json");
    assert_eq!(after[0]["state"], "running", "{after}");
    // The lab's /dev/kvm is hardware (nested SVM): no PVM warning.
    assert!(!o.contains("/dev/kvm is PVM"), "{o}");
    assert_eq!(host(o, "shutdown_rc"), "0");
    let info: serde_json::Value = serde_json::from_str(host(o, "info")).expect("info json");
    assert_eq!(info["state"], "stopped", "{info}");
    assert_eq!(info["reason"], "guest powered off", "{info}");
    // The VMM reads a raw image once when it opens it (the format probe);
    // every other read attributed to the VM is the guest's (Linux reading
    // its partition table), through the pid of one of its two VMMs.
    let reads: Vec<serde_json::Value> = serde_json::from_str(host(o, "reads")).expect("reads json");
    let vmm_pids = [list[0]["pid"].clone(), after[0]["pid"].clone()];
    assert!(
        reads.iter().all(|r| vmm_pids.contains(&r["pid"])
            && r["key"] == "image:lx"
            && r["exe"].as_str().is_some_and(|e| e.ends_with("vt-vmm"))),
        "{reads:?}"
    );
    assert!(reads.len() >= 2, "the guest's reads are missing: {reads:?}");
    assert!(o.contains("VT-HOST verify: trail intact"), "{o}");
    let secs: f64 = host(o, "shutdown_secs").parse().unwrap_or(f64::MAX);
    assert!(
        secs < 30.0,
        "shutdown took {secs} s: the button was not honoured"
    );
    for want in [
        "VT-GUEST init-reached",
        "VT-GUEST nproc=2",
        "VT-GUEST power-button pressed",
        "reboot: Power down",
    ] {
        assert!(
            o.lines()
                .any(|l| l.starts_with("CONSOLE ") && l.contains(want)),
            "console lacks '{want}':\n{o}"
        );
    }
}

//! Boots the lab (QEMU TCG + kvm_amd in the L1) and proves its /dev/kvm runs
//! guest code. Skipped only with VT_LAB=never.

use lab::{HostKind, Lab, LabError};
use std::time::Duration;

fn lab_disabled() -> bool {
    if std::env::var("VT_LAB").is_ok_and(|v| v == "never") {
        eprintln!("VT_LAB=never: lab test skipped");
        return true;
    }
    false
}

#[test]
fn l1_has_hardware_kvm_and_returns_exit_code() -> Result<(), LabError> {
    if lab_disabled() {
        return Ok(());
    }
    let probe = env!("CARGO_BIN_EXE_lab-kvm-probe");
    let out = Lab::new()
        .cpus(2)
        .add_binary(probe, "/lab-bin/kvm-probe")
        .timeout(Duration::from_secs(300))
        .run("cat /proc/cpuinfo | grep -c svm; ls -l /dev/kvm; /lab-bin/kvm-probe; exit 3")?;
    eprintln!(
        "lab boot {:?}, whole run {:?}\n{}",
        out.boot, out.duration, out.stdout
    );
    assert_eq!(out.exit_code, 3, "{}", out.console);
    assert_eq!(out.host, HostKind::Lab);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"2"), "svm count: {}", out.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("crw") && l.ends_with("/dev/kvm")),
        "{}",
        out.stdout
    );
    assert!(
        lines.iter().any(|l| l.starts_with("KVM-PROBE ok api=12")),
        "{}",
        out.stdout
    );
    assert!(out.boot.is_some_and(|b| b < out.duration));
    Ok(())
}

/// Runs in the lab here; directly on hardware-KVM hosts or with VT_LAB=never.
#[test]
fn guest_command_sees_carried_files() -> Result<(), LabError> {
    let dir = std::env::temp_dir().join(format!("vtlab-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(LabError::TempDir)?;
    let file = dir.join("hello.txt");
    std::fs::write(&file, "carried in\n").map_err(LabError::TempDir)?;
    let lab = Lab::new().add_file(&file, "/data/hello.txt");
    let out = lab::run_guest_command(
        &lab,
        "cat data/hello.txt; cat \"$VTLAB_ROOT/data/hello.txt\"; echo to-stderr >&2; false",
    );
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    assert_eq!(out.stdout, "carried in\ncarried in\nto-stderr\n");
    assert_eq!(out.exit_code, 1);
    Ok(())
}

#[test]
fn timeout_kills_the_lab() {
    if lab_disabled() {
        return;
    }
    let err = Lab::new()
        .timeout(Duration::from_millis(300))
        .retries(0)
        .run("true")
        .expect_err("the lab cannot boot in 300 ms");
    assert!(matches!(err, LabError::Timeout { .. }), "{err}");
}

#[test]
fn direct_run_links_carried_files() -> Result<(), LabError> {
    let out = Lab::new()
        .add_binary("/bin/true", "/bin/mytrue")
        .add_file("/etc/hostname", "/etc/hn")
        .run_direct("test -L bin/mytrue && bin/mytrue && cmp etc/hn /etc/hostname && echo $VTLAB_HOST; exit 5")?;
    assert_eq!(out.stdout, "direct\n");
    assert_eq!(out.exit_code, 5);
    assert_eq!(out.host, HostKind::Direct);
    Ok(())
}

#[test]
fn refuses_to_replace_the_lab_init() {
    let err = Lab::new()
        .add_file("/etc/hostname", "/init")
        .timeout(Duration::from_secs(5))
        .run("true")
        .expect_err("/init is the lab's");
    assert!(err.to_string().contains("/init is taken"), "{err}");
}

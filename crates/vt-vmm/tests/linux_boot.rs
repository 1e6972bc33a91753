//! Stock Debian Linux under `vt-vmm`, on hardware virtualization: directly on
//! a VT-x/AMD-V host, else in the lab (QEMU TCG, AMD SVM+NPT, kvm_amd).
//!
//! One lab boot runs every case; each case is a full L2 boot whose guest
//! init reports `nproc`, `MemTotal` and `/proc/cmdline`, which are checked
//! against what was asked, then powers off or reboots, and the VMM's exit
//! status is checked.

use std::time::Duration;

use lab::Lab;

struct Case {
    name: &'static str,
    kernel: &'static str,
    cpus: u32,
    memory_mib: u64,
    action: &'static str,
}

const CASES: [Case; 4] = [
    Case {
        name: "bzimage-1cpu-256m-poweroff",
        kernel: "vmlinuz",
        cpus: 1,
        memory_mib: 256,
        action: "poweroff",
    },
    Case {
        name: "elf-pvh-2cpu-1g-poweroff",
        kernel: "vmlinux",
        cpus: 2,
        memory_mib: 1024,
        action: "poweroff",
    },
    Case {
        name: "bzimage-2cpu-1g-reboot",
        kernel: "vmlinuz",
        cpus: 2,
        memory_mib: 1024,
        action: "reboot",
    },
    Case {
        name: "elf-pvh-1cpu-256m-reboot",
        kernel: "vmlinux",
        cpus: 1,
        memory_mib: 256,
        action: "reboot",
    },
];

fn cmdline(c: &Case) -> String {
    format!(
        "console=ttyS0 quiet vt.case={} vt.action={}",
        c.name, c.action
    )
}

fn script() -> String {
    let mut s = String::from("R=\"$VTLAB_ROOT\"\n");
    for c in &CASES {
        s.push_str(&format!(
            "echo '=== CASE {name}'\n\
             timeout -s KILL 120 \"$R/vt/vt-vmm\" --kernel \"$R/guest/{kernel}\" \
             --initrd \"$R/guest/initramfs.cpio.gz\" --cpus {cpus} --memory {mem} \
             --cmdline '{cmdline}' </dev/null\n\
             echo \"=== RC $?\"\n",
            name = c.name,
            kernel = c.kernel,
            cpus = c.cpus,
            mem = c.memory_mib,
            cmdline = cmdline(c),
        ));
    }
    s
}

/// The lines between `=== CASE name` and the next `=== ` marker, and the RC.
fn case_output<'a>(all: &'a str, name: &str) -> (Vec<&'a str>, Option<i32>) {
    let mut lines = all
        .lines()
        .skip_while(|l| l.trim_end() != format!("=== CASE {name}"));
    lines.next();
    let mut body = Vec::new();
    for l in lines {
        if let Some(rc) = l.trim_end().strip_prefix("=== RC ") {
            return (body, rc.parse().ok());
        }
        body.push(l);
    }
    (body, None)
}

fn guest_value<'a>(body: &[&'a str], key: &str) -> Option<&'a str> {
    let prefix = format!("VT-GUEST {key}=");
    body.iter()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(prefix.as_str()))
}

#[test]
fn stock_linux_boots_as_bzimage_and_elf_with_1_and_2_vcpus() {
    if std::env::var("VT_LAB").is_ok_and(|v| v == "never") {
        eprintln!("VT_LAB=never: Linux guest test skipped");
        return;
    }
    let out = Lab::new()
        .memory_mib(3072)
        .cpus(2)
        .timeout(Duration::from_secs(900))
        .with_guest_artifacts()
        .add_binary(env!("CARGO_BIN_EXE_vt-vmm"), "/vt/vt-vmm")
        .run_auto(&script())
        .expect("lab run");
    eprintln!("{}", out.stdout);
    assert_eq!(out.exit_code, 0, "{}", out.stdout);
    for c in &CASES {
        let (body, rc) = case_output(&out.stdout, c.name);
        let ctx = || format!("case {}:\n{}", c.name, body.join("\n"));
        assert_eq!(rc, Some(0), "VMM exit status, {}", ctx());
        assert_eq!(
            guest_value(&body, "nproc"),
            Some(c.cpus.to_string().as_str()),
            "{}",
            ctx()
        );
        assert_eq!(
            guest_value(&body, "cmdline"),
            Some(cmdline(c).as_str()),
            "{}",
            ctx()
        );
        let mem_kb: u64 = guest_value(&body, "memtotal_kb")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no memtotal, {}", ctx()));
        let asked_kb = c.memory_mib * 1024;
        // The kernel keeps its own image and reserved areas out of MemTotal.
        assert!(
            mem_kb <= asked_kb && mem_kb >= asked_kb * 85 / 100,
            "MemTotal {mem_kb} kB for {asked_kb} kB asked, {}",
            ctx()
        );
        assert!(guest_value(&body, "init-reached").is_none());
        assert!(
            body.iter().any(|l| l.contains("VT-GUEST init-reached")),
            "{}",
            ctx()
        );
        let last = match c.action {
            "reboot" => "reboot: Restarting system",
            _ => "reboot: Power down",
        };
        assert!(
            body.iter().any(|l| l.contains(last)),
            "want '{last}', {}",
            ctx()
        );
    }
}

//! Stock Debian Linux under `vt-vmm`, on hardware virtualization: directly on
//! a VT-x/AMD-V host, else in the lab (QEMU TCG, AMD SVM+NPT, kvm_amd).
//!
//! One lab boot runs every case; each case is a full L2 boot whose guest
//! init reports `nproc`, `MemTotal` and `/proc/cmdline`, which are checked
//! against what was asked, then powers off or reboots, and the VMM's exit
//! status is checked.

mod common;

use std::time::Duration;

use common::{case_output, guest_value};

/// Run by the guest's init before its action: what the guest saw of the
/// platform (CPU topology, hypervisor, clock, ACPI tables).
const GUEST_CHECKS: &str = r#"
echo "VT-GUEST apicids=$(grep '^apicid' /proc/cpuinfo | awk '{print $3}' | tr '\n' ,)"
echo "VT-GUEST hypervisor_flag=$(grep -c '^flags.* hypervisor' /proc/cpuinfo)"
echo "VT-GUEST kvm_detected=$(dmesg | grep -c 'Hypervisor detected: KVM')"
echo "VT-GUEST clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
echo "VT-GUEST acpi_tables=$(ls /sys/firmware/acpi/tables | tr '\n' ,)"
d=/sys/bus/pci/devices/0000:00:00.0
echo "VT-GUEST pci_host_bridge=$(cat $d/vendor):$(cat $d/device):$(cat $d/class)"
echo "VT-GUEST pci_ecam=$(dmesg | grep -c 'MMCONFIG at \[mem 0xe0000000-0xe00fffff\] reserved')"
echo "VT-GUEST pci_fatal=$(dmesg | grep -c 'PCI: Fatal')"
echo "VT-GUEST rtc_date=$(cat /sys/class/rtc/rtc0/date 2>/dev/null || echo none)"
echo "VT-GUEST serial_line=$(grep ttyS0 /proc/interrupts | grep -o 'IO-APIC *[0-9]*-edge')"
echo "VT-GUEST serial_interrupts=$(awk '/ttyS0/ {s=0; for (i=2; i<=NF; i++) if ($i ~ /^[0-9]+$/) s+=$i; print s}' /proc/interrupts)"
"#;

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
             --initrd \"$R/vt/initramfs.cpio.gz\" --cpus {cpus} --memory {mem} \
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

#[test]
fn stock_linux_boots_as_bzimage_and_elf_with_1_and_2_vcpus() {
    if common::lab_disabled() {
        return;
    }
    let stdout = common::run_in_lab(
        "linux-boot",
        GUEST_CHECKS,
        &script(),
        Duration::from_secs(300),
    );
    for c in &CASES {
        let (body, rc) = case_output(&stdout, c.name);
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
        let apic_ids: String = (0..c.cpus).map(|i| format!("{i},")).collect();
        assert_eq!(
            guest_value(&body, "apicids"),
            Some(apic_ids.as_str()),
            "{}",
            ctx()
        );
        assert_eq!(
            guest_value(&body, "hypervisor_flag"),
            Some(c.cpus.to_string().as_str()),
            "{}",
            ctx()
        );
        assert_eq!(guest_value(&body, "kvm_detected"), Some("1"), "{}", ctx());
        assert_eq!(
            guest_value(&body, "clocksource"),
            Some("kvm-clock"),
            "{}",
            ctx()
        );
        let tables = guest_value(&body, "acpi_tables").unwrap_or_default();
        for t in ["APIC", "DSDT", "FACP"] {
            assert!(
                tables.split(',').any(|x| x == t),
                "ACPI {t} missing, {}",
                ctx()
            );
        }
        // COM1 is wired to IOAPIC pin 4, edge-triggered (DSDT _CRS, irqfd GSI 4).
        let line = guest_value(&body, "serial_line").unwrap_or_default();
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            ["IO-APIC", "4-edge"],
            "{}",
            ctx()
        );
        // PCI: the host bridge enumerated, ECAM accepted.
        let bridge = guest_value(&body, "pci_host_bridge");
        assert_eq!(bridge, Some("0x8086:0x0d57:0x060000"), "{}", ctx());
        assert_eq!(guest_value(&body, "pci_ecam"), Some("1"), "{}", ctx());
        assert_eq!(guest_value(&body, "pci_fatal"), Some("0"), "{}", ctx());
        // The CMOS RTC (PNP0B00 in the DSDT, rtc_cmos): today's UTC date.
        let rtc = guest_value(&body, "rtc_date").unwrap_or_default();
        assert!(
            rtc.len() == 10 && rtc.starts_with("20") && rtc.as_bytes()[4] == b'-',
            "rtc_date={rtc}, {}",
            ctx()
        );
        let irqs: u64 = guest_value(&body, "serial_interrupts")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(irqs > 0, "the UART interrupt never fired, {}", ctx());
        assert_eq!(guest_value(&body, "test-exit"), Some("0"), "{}", ctx());
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

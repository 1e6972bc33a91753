//! virtio-balloon under stock Linux (its virtio_balloon driver) in the
//! lab: two jailed 512 MiB VMMs at once, driven through their control
//! sockets (`vt-api-call`).
//!
//! - `a` (`--balloon stats=on`): the guest writes 400 MiB to tmpfs and frees it
//!   (host-resident, guest-free); `PUT /vm/balloon` 256 MiB → the guest's
//!   `MemTotal` drops by it, the driver reports 256 MiB held, the VMM's RSS
//!   drops by ≥ 200 MiB; back to 0 → `MemTotal` comes back. The guest's
//!   statistics (statistics queue) match its /proc/meminfo: `MemTotal`
//!   exactly, `MemFree` within 16 MiB (it was read at another moment).
//! - `b` (`--balloon free_page_reporting=on`): the guest writes 400 MiB to
//!   tmpfs, then frees it: the VMM's RSS falls by ≥ 256 MiB within 30 s.

mod common;

use std::time::Duration;

use common::{case_output, guest_value, host_value};

const GUEST: &str = r#"
v() { echo "VT-GUEST $1=$2"; }
m() { awk '/MemTotal/ {print $2}' /proc/meminfo; }
mkdir -p /mnt/big
mount -t tmpfs -o size=460m tmpfs /mnt/big
t0=$(m)
v memtotal_0 $t0
v driver "$(ls /sys/bus/virtio/drivers/virtio_balloon | grep -c virtio)"
dd if=/dev/zero of=/mnt/big/f bs=1M count=400 2>/dev/null
if grep -q vt.role=a /proc/cmdline; then
    rm /mnt/big/f
    v touched 1
    for i in $(seq 3000); do [ $(m) -le $((t0 - 262144)) ] && break; sleep 0.1; done
    v memtotal_inflated $(m)
    v inflated 1
    for i in $(seq 1200); do [ $(m) -gt $((t0 - 4096)) ] && break; sleep 0.1; done
    v memtotal_deflated $(m)
    v memfree_kb $(awk '/MemFree/ {print $2}' /proc/meminfo)
    v deflated 1
else
    v filled 1
    sleep 10
    rm /mnt/big/f
    v freed 1
fi
sleep 100000
"#;

const HOST: &str = r#"
R="$VTLAB_ROOT"; T=/tmp/vt-bal; mkdir -p $T
API="$R/vt/bin/vt-api-call"
start() {
    "$R/vt/vt-vmm" --kernel "$R/guest/vmlinux" --initrd "$R/vt/initramfs.cpio.gz" \
        --memory 512 --cmdline "console=ttyS0 quiet vt.role=$1" --serial file=$T/$1.log \
        --balloon $2 --api-socket $T/$1.sock </dev/null 2>$T/$1.err &
    echo $! > $T/$1.pid
}
vmm() { p=$(cat $T/$1.pid); cut -d' ' -f1 /proc/$p/task/$p/children; }
rss() { sed -n 's/^VmRSS:\s*\([0-9]*\) kB/\1/p' /proc/$(vmm $1)/status; }
waitg() { for i in $(seq 3000); do grep -q "VT-GUEST $2" $T/$1.log 2>/dev/null && return 0; sleep 0.1; done; echo "VT-HOST timeout $1 $2"; }
echo "=== CASE balloon"
start a stats=on
start b free_page_reporting=on
# b first: its guest frees its memory 10 s after it filled it.
waitg b filled=1
filled=$(rss b)
echo "VT-HOST b_rss_filled=$filled"
waitg b freed=1
for i in $(seq 150); do [ $(rss b) -lt $((filled - 262144)) ] && break; sleep 0.2; done
echo "VT-HOST b_rss_freed=$(rss b)"
echo "VT-HOST b_wait_ms=$((i * 200))"
echo "VT-HOST b_info=$($API $T/b.sock GET /vm/balloon)"
waitg a touched=1
echo "VT-HOST a_rss_touched=$(rss a)"
echo "VT-HOST a_put=$($API $T/a.sock PUT /vm/balloon '{"size_mib":256}')"
waitg a inflated=1
for i in $(seq 300); do $API $T/a.sock GET /vm/balloon | grep -q '"actual_mib":256' && break; sleep 0.2; done
echo "VT-HOST a_rss_inflated=$(rss a)"
echo "VT-HOST a_inflated=$($API $T/a.sock GET /vm/balloon)"
$API $T/a.sock PUT /vm/balloon '{"size_mib":0}' >/dev/null
waitg a deflated=1
echo "VT-HOST a_deflated=$($API $T/a.sock GET /vm/balloon)"
# Each GET asks the guest for fresh statistics: the next one has them.
sleep 2
echo "VT-HOST a_stats=$($API $T/a.sock GET /vm/balloon)"
for n in a b; do
    p=$(cat $T/$n.pid); kill -KILL $(vmm $n) $p; wait $p
    sed "s/^/VT-HOST $n stderr: /" $T/$n.err
    sed "s/^/$n: /" $T/$n.log
done
echo "=== RC 0"
"#;

#[test]
fn linux_balloon_inflates_deflates_and_reports_free_pages() {
    if common::lab_disabled() {
        return;
    }
    let stdout = common::run_in_lab_with(
        "balloon",
        GUEST,
        HOST,
        Duration::from_secs(600),
        &[(env!("CARGO_BIN_EXE_vt-api-call"), "/vt/bin/vt-api-call")],
    );
    assert!(
        !stdout.contains("VT-SECCOMP"),
        "a call was refused:\n{stdout}"
    );
    let (body, rc) = case_output(&stdout, "balloon");
    let all = body.join("\n");
    assert_eq!(rc, Some(0), "{all}");
    assert!(!all.contains("VT-HOST timeout"), "{all}");
    let h = |k: &str| host_value(&body, k).unwrap_or_else(|| panic!("no {k}:\n{all}"));
    let n = |k: &str| -> i64 {
        h(k).trim()
            .parse()
            .unwrap_or_else(|_| panic!("{k}:\n{all}"))
    };
    // Guest a's lines carry an `a: ` prefix in the dump: read them there.
    let guest = |role: &str, k: &str| -> i64 {
        let lines: Vec<&str> = body
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("{role}: ") as &str))
            .collect();
        guest_value(&lines, k)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("guest {role}: no {k}:\n{all}"))
    };
    assert_eq!(guest("a", "driver"), 1, "virtio_balloon bound");
    assert_eq!(guest("b", "driver"), 1, "virtio_balloon bound");
    assert!(h("a_put").starts_with("200 "), "{all}");
    let t0 = guest("a", "memtotal_0");
    assert_eq!(t0 - guest("a", "memtotal_inflated"), 256 << 10, "{all}");
    assert!(
        h("a_inflated").contains(r#""size_mib":256,"actual_mib":256"#),
        "{all}"
    );
    let dropped = n("a_rss_touched") - n("a_rss_inflated");
    assert!(
        dropped >= 200 << 10,
        "inflate gave back {dropped} KiB:\n{all}"
    );
    assert_eq!(guest("a", "memtotal_deflated"), t0, "{all}");
    assert!(
        h("a_deflated").contains(r#""size_mib":0,"actual_mib":0"#),
        "{all}"
    );
    let stats: serde_json::Value =
        serde_json::from_str(h("a_stats").trim_start_matches("200 ")).expect("balloon JSON");
    let total = stats["stats"]["total_memory"].as_i64().unwrap_or(-1);
    assert_eq!(total, t0 * 1024, "statistics MemTotal:\n{all}");
    let free = stats["stats"]["free_memory"].as_i64().unwrap_or(-1);
    let guest_free = guest("a", "memfree_kb") * 1024;
    assert!(
        (free - guest_free).abs() <= 16 << 20,
        "statistics MemFree {free} vs the guest's {guest_free}:\n{all}"
    );
    let freed = n("b_rss_filled") - n("b_rss_freed");
    assert!(
        freed >= 256 << 10,
        "reporting gave back {freed} KiB:\n{all}"
    );
    assert!(h("b_info").contains(r#""refused_pages":0"#), "{all}");
}

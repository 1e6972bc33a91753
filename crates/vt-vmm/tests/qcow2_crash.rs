//! Crash consistency of qcow2 under a real Linux guest, in one lab boot:
//! the guest writes sequence-numbered 4 KiB blocks, each into a cluster
//! not allocated yet (4 KiB clusters, blocks 64 KiB apart: every write
//! allocates a data cluster, every 32nd an L2 table, and refcount blocks
//! follow), each with `O_DIRECT` and a flush (`conv=fsync`), and prints
//! `flushed=N` on its serial console once the flush returned. The L1 kills
//! the VMM with SIGKILL at a random point while the guest writes, 22
//! times; after each kill `qemu-img check` (carried into the lab) finds no
//! corruption (leaks allowed), `vt image check -r leaks` repairs the
//! leaks and `qemu-img check` is then clean; the next boot's guest first
//! reads back every block printed as flushed before (`vt.last=N` on its
//! command line) and counts the ones that are not exactly what it wrote.
//! A last boot only verifies. Back on the host, `qemu-img check` is clean
//! and the blocks read through `qemu-img convert` are the flushed ones.
//! Every other round runs the disk with `cache=none` (O_DIRECT under the
//! qcow2 engine), the others with the page cache. A VMM that ends by
//! itself before the round's first write (a nested guest the lab's
//! emulated SVM triple-faulted; seen once) leaves the image as a kill
//! would: the round is booted again, at most twice in the run, reported.
//!
//! The VMM runs without `--jail` here: SIGKILL must hit the very process
//! doing the I/O (with the jail that is the cell's inner child).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{case_output, host_value, initramfs_with, lab_disabled, qemu_img};

/// Kills (each one a VMM killed mid-write).
const ROUNDS: u32 = 22;
/// Blocks are this far apart in the guest's disk.
const STRIDE: u64 = 64 << 10;
const BLOCK: usize = 4096;

const GUEST: &str = r#"
last=-1
for w in $(cat /proc/cmdline); do
    case "$w" in vt.last=*) last=${w#vt.last=} ;; vt.verify-only) only=1 ;; esac
done
# Every block up to the last one printed as flushed: 256 lines "VT-SEQ k",
# in order (blocks 64 KiB apart, the rest of each stride zeros). Compared
# as text: busybox awk reads 00000010 as octal.
bad=$(dd if=/dev/vda bs=65536 count=$((last + 1)) iflag=direct 2>/dev/null | tr -d '\0' |
    awk -v last="$last" '{ if ($0 != sprintf("VT-SEQ %08d", int((NR - 1) / 256))) b++ }
        END { if (NR != (last + 1) * 256) b++; print b + 0 }')
echo "VT-GUEST verify_bad=$bad verified=$((last + 1))"
[ -n "$only" ] && exit 0
echo "VT-GUEST writing"
k=$((last + 1))
while :; do
    yes "VT-SEQ $(printf %08d $k)" | head -c 4096 > /tmp/blk
    dd if=/tmp/blk of=/dev/vda bs=4096 count=1 seek=$((k * 16)) oflag=direct conv=fsync 2>/dev/null || exit 1
    echo "VT-GUEST flushed=$k"
    k=$((k + 1))
done
"#;

/// The L1's loop: boot, wait for the guest's first flushed write, sleep a
/// random 0–1.5 s, SIGKILL, check, repair, next round.
fn host_script(rounds: u32) -> String {
    format!(
        r#"R="$VTLAB_ROOT"
boot() {{
    # A fresh log first: the wait below must not see the last round's.
    rm -f /tmp/log
    : >/tmp/log
    "$R/vt/vt-vmm" --kernel "$R/guest/vmlinux" --initrd "$R/vt/initramfs.cpio.gz" \
        --memory 256 --cmdline "console=ttyS0 quiet $1" \
        --disk path=/dev/vda,format=qcow2,cache=$2 </dev/null >/tmp/log 2>&1 &
    pid=$!
}}
echo "=== CASE crash"
last=-1
i=0
retries=0
while [ $i -lt {rounds} ]; do
    cache=writeback
    [ $((i % 2)) = 1 ] && cache=none
    boot "vt.last=$last" $cache
    n=0
    until tr -d '\r' </tmp/log | grep -q '^VT-GUEST flushed='; do
        n=$((n + 1))
        # A VMM that ended by itself before the first write: the lab's
        # emulated SVM now and then triple-faults a nested guest. The
        # image is then as after a kill: boot the round again, twice at most.
        if ! kill -0 $pid 2>/dev/null && [ $retries -lt 2 ]; then
            retries=$((retries + 1))
            echo "VT-HOST retry$retries=round$i"
            tr -d '\r' </tmp/log | tail -n 20 | sed 's/^/VT-HOST retried console: /'
            wait $pid 2>/dev/null
            continue 2
        fi
        if [ $n -gt 600 ] || ! kill -0 $pid 2>/dev/null; then
            echo "VT-HOST round$i=no-write"; cat /tmp/log; kill -9 $pid; exit 1
        fi
        sleep 0.1
    done
    ms=$(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 1500 ))
    usleep $((ms * 1000))
    kill -9 $pid
    wait $pid 2>/dev/null
    tr -d '\r' </tmp/log >/tmp/log.txt
    vb=$(sed -n 's/^VT-GUEST verify_bad=\([0-9]*\).*/\1/p' /tmp/log.txt)
    vn=$(sed -n 's/^VT-GUEST verify_bad=.* verified=\([0-9]*\).*/\1/p' /tmp/log.txt)
    new=$(sed -n 's/^VT-GUEST flushed=\([0-9]*\)$/\1/p' /tmp/log.txt | tail -n 1)
    /usr/bin/qemu-img check -f qcow2 /dev/vda >/tmp/qc 2>&1; qc=$?
    "$R/vt/vt" image check -f qcow2 -r leaks /dev/vda >/tmp/vc 2>&1; vc=$?
    /usr/bin/qemu-img check -f qcow2 /dev/vda >/tmp/qc2 2>&1; qc2=$?
    echo "VT-HOST round$i=cache:$cache,sleep_ms:$ms,verify_bad:$vb,verified:$vn,flushed:$new,qemu_check:$qc,repair:$vc,qemu_check_after:$qc2"
    [ -n "$new" ] && [ -n "$vb" ] || tail -n 40 /tmp/log.txt
    [ "$qc" = 0 ] || [ "$qc" = 3 ] || cat /tmp/qc
    [ "$qc2" = 0 ] || cat /tmp/qc2 /tmp/vc
    [ -n "$new" ] || exit 1
    last=$new
    i=$((i + 1))
done
boot "vt.last=$last vt.verify-only vt.action=poweroff" none
wait $pid
echo "VT-HOST final_rc=$?"
tr -d '\r' </tmp/log | sed -n 's/^VT-GUEST verify_bad=\([0-9]*\) verified=\([0-9]*\)$/VT-HOST final=\1,\2/p'
echo "VT-HOST last=$last"
echo "=== RC 0"
"#
    )
}

/// `key:value` fields of a `VT-HOST roundN=` line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[test]
fn guest_flushes_survive_sigkill_of_the_vmm() {
    if lab_disabled() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vt-qcow2-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("crash.qcow2");
    let (rc, out) = qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
        img.to_str().unwrap(),
        "1G",
    ]);
    assert_eq!(rc, 0, "{out}");
    // The lab's /dev/vda is the file's bytes at a fixed size: room for the
    // clusters the guest allocates (sparse on the host).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let vt = Path::new(env!("CARGO_BIN_EXE_vt-vmm")).with_file_name("vt");
    assert!(
        vt.is_file(),
        "{} is missing: run `cargo build -p vt` (cargo test --workspace builds it)",
        vt.display()
    );
    let out = lab::Lab::new()
        .memory_mib(2048)
        .cpus(2)
        .timeout(Duration::from_secs(420))
        .with_guest_artifacts()
        .add_file(
            initramfs_with("qcow2-crash", GUEST),
            "/vt/initramfs.cpio.gz",
        )
        .add_binary(env!("CARGO_BIN_EXE_vt-vmm"), "/vt/vt-vmm")
        .add_binary(&vt, "/vt/vt")
        .add_binary("/usr/bin/qemu-img", "/usr/bin/qemu-img")
        .qemu_arg("-drive")
        .qemu_arg(format!(
            "file={},if=virtio,format=raw,cache=writeback",
            img.display()
        ))
        .run_auto(&host_script(ROUNDS))
        .expect("lab run");
    eprintln!("{}", out.stdout);
    let (body, rc) = case_output(&out.stdout, "crash");
    let all = body.join("\n");
    assert_eq!(rc, Some(0), "{all}");

    let mut expect_verified = 0u64;
    let mut leaky = 0;
    for i in 0..ROUNDS {
        let r = host_value(&body, &format!("round{i}")).unwrap_or_else(|| panic!("{all}"));
        let cache = if i % 2 == 1 { "none" } else { "writeback" };
        assert_eq!(field(r, "cache"), cache, "{r}");
        assert_eq!(
            field(r, "verify_bad"),
            "0",
            "round {i}: flushed blocks lost: {r}"
        );
        assert_eq!(
            field(r, "verified"),
            expect_verified.to_string(),
            "round {i}: {r}"
        );
        let flushed: u64 = field(r, "flushed")
            .parse()
            .unwrap_or_else(|_| panic!("round {i}: no flushed write: {r}"));
        assert!(flushed >= expect_verified, "round {i}: {r}");
        let qc = field(r, "qemu_check");
        assert!(qc == "0" || qc == "3", "round {i}: corruption: {r}\n{all}");
        leaky += usize::from(qc == "3");
        assert_eq!(field(r, "repair"), "0", "round {i}: {r}\n{all}");
        assert_eq!(field(r, "qemu_check_after"), "0", "round {i}: {r}\n{all}");
        expect_verified = flushed + 1;
    }
    eprintln!("{ROUNDS} kills, {leaky} left leaks (repaired), {expect_verified} blocks flushed");
    assert_eq!(host_value(&body, "final_rc"), Some("0"), "{all}");
    assert_eq!(
        host_value(&body, "final"),
        Some(format!("0,{expect_verified}").as_str()),
        "{all}"
    );

    // The referee on the host: clean, and the content is the guest's.
    let (rc, text) = qemu_img(&["check", img.to_str().unwrap()]);
    assert_eq!(rc, 0, "qemu-img check on the host:\n{text}");
    let raw = dir.join("crash.raw");
    let (rc, text) = qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        img.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{text}");
    let bytes = std::fs::read(&raw).unwrap();
    for k in 0..expect_verified {
        let at = (k * STRIDE) as usize;
        let want: Vec<u8> = format!("VT-SEQ {k:08}\n")
            .bytes()
            .cycle()
            .take(BLOCK)
            .collect();
        assert!(
            bytes.get(at..at + BLOCK) == Some(&want[..]),
            "block {k} is not the guest's flushed write"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

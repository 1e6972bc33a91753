#!/usr/bin/env bash
# Block and network benchmark in the lab: vt-vmm vs QEMU on the same image
# and tap set-up, and the lab host's own figures. Prints VT-BENCH lines;
# RUNS=N (default 3) runs of each VMM, interleaved.
#   scripts/bench-io.sh            (after cargo build --release)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
scripts/guest-artifacts.sh >/dev/null
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
# The guest initramfs plus /vt-test.sh (the guest half of the benchmark).
cp target/guest/initramfs.cpio.gz "$W/initramfs.cpio.gz"
size=$(stat -c %s "$W/initramfs.cpio.gz")
truncate -s $(( (size + 3) / 4 * 4 )) "$W/initramfs.cpio.gz"
mkdir "$W/add" && cp crates/bench/io/guest.sh "$W/add/vt-test.sh"
(cd "$W/add" && echo vt-test.sh | cpio -o -H newc --quiet | gzip) >>"$W/initramfs.cpio.gz"
VT=target/release/vt
exec "$VT" lab run --with-guest --with-qemu --timeout 1500 \
    --binary target/release/vt-vmm:/vt/vt-vmm \
    --file "$W/initramfs.cpio.gz:/vt/initramfs.cpio.gz" \
    --file /usr/share/qemu/bios-microvm.bin:/vt/bios-microvm.bin \
    --file crates/bench/io/l1.sh:/vt/l1.sh \
    -- env RUNS="${RUNS:-3}" sh "\$VTLAB_ROOT/vt/l1.sh"

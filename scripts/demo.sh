#!/usr/bin/env bash
# The main job: boot stock Debian Linux under vt-vmm and show its console.
# On a host with hardware virtualization the VM runs here; elsewhere (PVM or
# no /dev/kvm) it runs inside the lab. Extra arguments go to the kernel
# command line, e.g. `scripts/demo.sh vt.action=shell` for an interactive
# shell (on a hardware-virtualization host).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh
scripts/guest-artifacts.sh
cargo build --release -q -p vt-vmm -p vt
CMDLINE="console=ttyS0${*:+ $*}"
ARGS=(--cpus 2 --memory 512 --cmdline "$CMDLINE")
hw=no
if [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then hw=yes; fi
if [ "${VT_LAB:-}" = force ]; then hw=no; fi
if [ "$hw" = yes ]; then
    exec target/release/vt run --kernel target/guest/vmlinuz \
        --initrd target/guest/initramfs.cpio.gz "${ARGS[@]}"
fi
echo "demo: /dev/kvm here cannot boot Linux; booting it inside the lab" >&2
exec target/release/vt lab run --with-guest \
    --binary target/release/vt-vmm:/vt/vt-vmm -- \
    /vt/vt-vmm --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz \
    --cpus 2 --memory 512 --cmdline "'$CMDLINE'"

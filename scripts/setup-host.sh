#!/usr/bin/env bash
# Installs what VT System's build, tests and lab need on a fresh Debian host
# (run as root). Idempotent: packages already present are left alone.
#   qemu-system-x86   the lab (QEMU TCG) and the peer VMM in benchmarks
#   seabios           bios-256k.bin for vt-vmm --firmware and its tests
#   qemu-utils        qemu-img and qemu-io: the referee of the disk crate's qcow2 interop tests
#   busybox-static, cpio, lz4, zstd, xz-utils, file, binutils
#                     guest artifacts (scripts/guest-artifacts.sh)
#   iproute2, util-linux, bsdutils
#                     vtd tests: a bridge in a network namespace (ip, unshare,
#                     nsenter) and a pty for `vt console` (script)
#   iperf3            vt-bench io (TCP between guest and lab host)
#   curl              vtd tests: raw API calls as another user
#   nftables          vtd networks: the nft tool that loads vtd's tables
#   dnsmasq-base      vtd networks: DHCP and DNS, one dnsmasq per network
#   squashfuse, squashfs-tools
#                     vtd tests: a FUSE file system for the vm_use_fusefs switch
#   systemd           vtd tests: `systemd-analyze verify` of contrib/systemd/vtd.service
#   groff-base, man-db
#                     vt tests: the generated man pages rendered (groff, man -l)
#   python3-prometheus-client
#                     vtd tests: GET /metrics parsed by the Prometheus Python
#                     client's OpenMetrics parser
#   tmux              vtd tests: `vt top` on a terminal, its screen read back
#   mmdebstrap, grub-pc-bin, grub-efi-amd64-bin, grub-common, e2fsprogs, fdisk,
#   dosfstools, mtools, seabios, ovmf
#                     the Debian test disk images booted through firmware
#                     (scripts/guest-image.sh) and their firmware
set -euo pipefail
PKGS="qemu-system-x86 qemu-utils busybox-static cpio lz4 zstd xz-utils file binutils procps iproute2 util-linux bsdutils iperf3 curl nftables dnsmasq-base squashfuse squashfs-tools systemd groff-base man-db python3-prometheus-client tmux mmdebstrap grub-pc-bin grub-efi-amd64-bin grub-common e2fsprogs fdisk dosfstools mtools seabios ovmf"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup-host: installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
# guest-artifacts.sh uses `apt-get download`, which needs package lists.
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
    apt-get update -q >/dev/null
fi
command -v cargo >/dev/null || { echo "setup-host: cargo not found (install Rust with rustup)" >&2; exit 1; }

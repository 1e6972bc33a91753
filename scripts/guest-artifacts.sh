#!/usr/bin/env bash
# Build the guest artifacts used by the VMM tests and the lab, from Debian
# packages only (apt-get download + dpkg-deb -x). Cached: a second run with
# everything present and SHA256SUMS verifying does nothing.
#
# Usage: scripts/guest-artifacts.sh [OUT_DIR]
#   OUT_DIR defaults to $VT_GUEST_DIR, else <repo>/target/guest.
# Env:
#   VT_KERNEL_PKG        versioned kernel package to use instead of resolving
#                        linux-image-cloud-amd64 (e.g. linux-image-6.1.0-56-cloud-amd64)
#   VT_GUEST_REFRESH=1   rebuild everything even if the cache verifies
#
# Produces in OUT_DIR:
#   vmlinuz              the kernel bzImage
#   vmlinux              the ELF kernel extracted from it (has the PVH entry note)
#   initramfs.cpio.gz    the L2 guest initramfs (busybox + virtio modules + /init),
#                        zero-padded to 4 bytes: append archives with cat
#   busybox              busybox-static (used by the lab to build its L1 initramfs)
#   lab-modules/         kvm, bridge and nftables modules for the lab L1 (decompressed) + load-order
#   SHA256SUMS, .version
set -euo pipefail
export LC_ALL=C

die() { echo "guest-artifacts: error: $*" >&2; exit 1; }
log() { echo "guest-artifacts: $*" >&2; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
OUT=${1:-${VT_GUEST_DIR:-$REPO/target/guest}}

# Modules for the L2 guest initramfs (dependencies are added automatically;
# names missing from this kernel are skipped with a note).
GUEST_MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
virtio_mmio virtio_blk failover net_failover virtio_net virtio_rng virtio_console
virtio_balloon vmw_vsock_virtio_transport evdev button"
# Modules for the lab L1 (loaded in load-order by the lab's /init).
LAB_MODULES="irqbypass kvm kvm_amd tun virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
bridge nf_tables nft_meta_bridge nft_ct nft_chain_nat nft_masq"
ARTIFACTS="vmlinuz vmlinux initramfs.cpio.gz busybox lab-modules"

for tool in apt-get apt-cache dpkg-deb sha256sum cpio gzip file readelf od dd flock; do
    command -v "$tool" >/dev/null || die "'$tool' not found (apt-get install it)"
done
# The recipe stamp: anything that changes what we build must change this.
RECIPE=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.lock"
flock 9

# --- cache check -----------------------------------------------------------

# Files belonging to one artifact (relative to OUT).
artifact_files() {
    if [ "$1" = lab-modules ]; then
        [ -f "$OUT/lab-modules/load-order" ] || return 1
        echo lab-modules/load-order
        sed 's|.*|lab-modules/&.ko|' "$OUT/lab-modules/load-order"
    else
        echo "$1"
    fi
}

# True when every file of the artifact exists and verifies against SHA256SUMS.
artifact_ok() {
    local files f
    [ -f "$OUT/SHA256SUMS" ] || return 1
    files=$(artifact_files "$1") || return 1
    for f in $files; do
        [ -f "$OUT/$f" ] || return 1
        grep -q "  $f\$" "$OUT/SHA256SUMS" || return 1
        (cd "$OUT" && grep "  $f\$" SHA256SUMS | sha256sum -c --quiet --status -) || return 1
    done
}

stamp_field() { sed -n "s/^$1=//p" "$OUT/.version" 2>/dev/null || true; }

MISSING=""
if [ "${VT_GUEST_REFRESH:-0}" = 1 ] || [ "$(stamp_field recipe)" != "$RECIPE" ]; then
    MISSING=$ARTIFACTS
else
    for a in $ARTIFACTS; do artifact_ok "$a" || MISSING="$MISSING $a"; done
fi
if [ -z "${MISSING// /}" ]; then
    log "up to date in $OUT ($(stamp_field kernel_pkg) $(stamp_field kernel_version))"
    exit 0
fi

# --- resolve and download packages -------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vt-guest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

KPKG=${VT_KERNEL_PKG:-}
OLD_PKG=$(stamp_field kernel_pkg)
OLD_VER=$(stamp_field kernel_version)
if [ -z "$KPKG" ] && [ -n "$OLD_PKG" ] && [ "$MISSING" != "$ARTIFACTS" ]; then
    KPKG=$OLD_PKG   # partial rebuild: stay on the kernel the rest was built from
fi
if [ -z "$KPKG" ]; then
    deps=$(apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null \
        | sed -n 's/^Depends: //p' | head -n1) \
        || true
    [ -n "$deps" ] || die "apt does not know linux-image-cloud-amd64 (Debian bookworm; run 'apt-get update')"
    KPKG=$(echo "$deps" | tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -n1)
    [ -n "$KPKG" ] || die "cannot find the versioned kernel package in: $deps"
fi

if [ "$KPKG" != "$OLD_PKG" ]; then
    MISSING=$ARTIFACTS   # never mix artifacts of two kernels
fi

download() { # name[=version]
    (cd "$WORK" && apt-get -q -o APT::Sandbox::User=root download "$1" >/dev/null 2>"$WORK/apt.err") \
        || { cat "$WORK/apt.err" >&2; return 1; }
}
if [ -n "$OLD_VER" ] && [ "$KPKG" = "$OLD_PKG" ] && [ "$MISSING" != "$ARTIFACTS" ]; then
    if ! download "$KPKG=$OLD_VER"; then
        log "$KPKG=$OLD_VER is gone from apt; rebuilding everything"
        MISSING=$ARTIFACTS
        download "$KPKG" || die "apt-get download $KPKG failed"
    fi
else
    download "$KPKG" || die "apt-get download $KPKG failed"
fi
download busybox-static || die "apt-get download busybox-static failed"

first() { find "$1" -maxdepth 1 -name "$2" -print -quit; }
KDEB=$(first "$WORK" 'linux-image-*.deb')
BDEB=$(first "$WORK" 'busybox-static_*.deb')
[ -n "$KDEB" ] && [ -n "$BDEB" ] || die "apt-get download left no .deb in $WORK"
KVER=$(dpkg-deb -f "$KDEB" Version)
BVER=$(dpkg-deb -f "$BDEB" Version)
log "building [${MISSING# }] from $KPKG $KVER, busybox-static $BVER"
dpkg-deb -x "$KDEB" "$WORK/kernel"
dpkg-deb -x "$BDEB" "$WORK/bb"
BUSYBOX="$WORK/bb/bin/busybox"
[ -x "$BUSYBOX" ] || die "busybox-static package has no bin/busybox"
VMLINUZ=$(first "$WORK/kernel/boot" 'vmlinuz-*')
[ -n "$VMLINUZ" ] || die "$KPKG has no boot/vmlinuz-*"
MODDIR=$(find "$WORK/kernel/lib/modules" -mindepth 1 -maxdepth 1 -type d -print -quit)
[ -n "$MODDIR" ] || die "$KPKG has no lib/modules/<version>"
UNAME_R=$(basename "$MODDIR")

STAGE="$WORK/stage"
mkdir -p "$STAGE"
wants() { case " $MISSING " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# --- vmlinuz / vmlinux ---------------------------------------------------------

wants vmlinuz && cp "$VMLINUZ" "$STAGE/vmlinuz"

# Read an unsigned little-endian integer: u <offset> <bytes>
u() { od -An -t "u$2" -j "$1" -N "$2" "$VMLINUZ" | tr -d ' \n'; }

extract_vmlinux() {
    local ss po pl off magic tool
    [ "$(od -An -c -j 0x202 -N 4 "$VMLINUZ" | tr -d ' ')" = HdrS ] \
        || die "$VMLINUZ is not a bzImage (no HdrS)"
    ss=$(u 0x1f1 1); [ "$ss" -eq 0 ] && ss=4
    po=$(u 0x248 4); pl=$(u 0x24c 4)
    off=$(( (ss + 1) * 512 + po ))
    magic=$(od -An -t x1 -j "$off" -N 6 "$VMLINUZ" | tr -d ' \n')
    case "$magic" in
        1f8b*) tool="gzip -dc" ;;
        fd377a585a00) tool="xz -dc" ;;
        28b52ffd*) tool="zstd -dcq" ;;
        02214c18*) tool="lz4 -dc" ;;
        425a68*) tool="bzip2 -dc" ;;
        5d0000*) tool="xz -dc --format=lzma" ;;
        894c5a4f*) tool="lzop -dc" ;;
        *) die "unknown kernel payload compression (magic $magic at $off)" ;;
    esac
    command -v "${tool%% *}" >/dev/null || die "'${tool%% *}' needed to decompress the kernel"
    # The payload ends with the 4-byte decompressed size; leave it out.
    dd if="$VMLINUZ" bs=1M iflag=skip_bytes,count_bytes skip="$off" count=$((pl - 4)) status=none \
        | $tool >"$STAGE/vmlinux" || die "decompressing the kernel with '$tool' failed"
    local want got
    want=$(u $((off + pl - 4)) 4)
    got=$(stat -c %s "$STAGE/vmlinux")
    [ "$want" = "$got" ] || die "vmlinux is $got bytes, the bzImage says $want"
    file -b "$STAGE/vmlinux" | grep -q '^ELF 64-bit' || die "extracted vmlinux is not an ELF"
    readelf -n "$STAGE/vmlinux" | grep -q 'Xen.*(0x00000012)' \
        || die "vmlinux has no XEN_ELFNOTE_PHYS32_ENTRY (PVH) note"
    log "vmlinux: $got bytes (${tool%% *}), PVH note present"
}
wants vmlinux && extract_vmlinux

# --- modules -------------------------------------------------------------------

declare -A MODPATH=()
while IFS= read -r f; do
    n=$(basename "$f"); n=${n%%.ko*}; MODPATH[${n//-/_}]=$f
done < <(find "$MODDIR" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')

# Copy module $1 decompressed to $2/<name>.ko.
put_module() {
    local src=${MODPATH[$1]} dst="$2/$1.ko"
    case "$src" in
        *.ko) cp "$src" "$dst" ;;
        *.ko.xz) xz -dc "$src" >"$dst" ;;
        *.ko.zst) zstd -dcq "$src" >"$dst" ;;
        *.ko.gz) gzip -dc "$src" >"$dst" ;;
    esac
}

# Resolve modules and dependencies into $1 (dir); writes $1/load-order (deps first).
declare -A SEEN=()
visit() { # name dir
    local m=$1 d deps
    [ -n "${SEEN[$m]:-}" ] && return 0
    SEEN[$m]=1
    if [ -z "${MODPATH[$m]:-}" ]; then
        grep -q "/${m//_/[-_]}.ko\$" "$MODDIR/modules.builtin" 2>/dev/null \
            || log "note: module $m not in $UNAME_R, skipped"
        return 0
    fi
    put_module "$m" "$2"
    deps=$(tr '\0' '\n' <"$2/$m.ko" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' ')
    for d in $deps; do visit "${d//-/_}" "$2"; done
    echo "$m" >>"$2/load-order"
}
collect_modules() { # dir names...
    local dir=$1 m; shift
    SEEN=(); mkdir -p "$dir"; : >"$dir/load-order"
    for m in "$@"; do visit "$m" "$dir"; done
}

if wants lab-modules; then
    # shellcheck disable=SC2086
    collect_modules "$STAGE/lab-modules" $LAB_MODULES
    grep -qx kvm_amd "$STAGE/lab-modules/load-order" || die "kvm_amd missing from $KPKG"
fi
wants busybox && cp "$BUSYBOX" "$STAGE/busybox"

# --- L2 initramfs ----------------------------------------------------------------

write_init() {
    cat >"$1" <<'EOF'
#!/bin/sh
# VT System L2 test guest init.
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1
for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m.ko" || echo "vt-guest: insmod $m failed"
done
# The ACPI power button (GED + PNP0C0C, Linux's button driver) powers off,
# as logind or acpid would.
for ev in /sys/class/input/event*; do
    [ "$(cat "$ev/device/name" 2>/dev/null)" = "Power Button" ] || continue
    ( head -c 24 "/dev/input/${ev##*/}" >/dev/null
      echo "VT-GUEST power-button pressed"; poweroff -f ) &
    echo "VT-GUEST power-button armed"
done
echo "VT-GUEST nproc=$(nproc)"
echo "VT-GUEST memtotal_kb=$(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo)"
echo "VT-GUEST cmdline=$(cat /proc/cmdline)"
echo "VT-GUEST init-reached"
action=poweroff
for w in $(cat /proc/cmdline); do
    case "$w" in vt.action=*) action=${w#vt.action=} ;; esac
done
if [ -f /vt-test.sh ]; then
    sh /vt-test.sh
    echo "VT-GUEST test-exit=$?"
fi
case "$action" in
    reboot) reboot -f ;;
    shell) setsid cttyhack sh; poweroff -f ;;
    wait) while :; do sleep 3600; done ;;
    *) poweroff -f ;;
esac
sleep 5
echo "vt-guest: $action failed"
EOF
    chmod 755 "$1"
}

if wants initramfs.cpio.gz; then
    R="$WORK/initramfs"
    mkdir -p "$R/bin" "$R/dev" "$R/proc" "$R/sys" "$R/tmp" "$R/lib/modules"
    cp "$BUSYBOX" "$R/bin/busybox"
    ln -s busybox "$R/bin/sh"
    # shellcheck disable=SC2086
    collect_modules "$R/lib/modules" $GUEST_MODULES
    write_init "$R/init"
    find "$R" -exec touch -h -d @0 {} +
    (cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) \
        | gzip -9n >"$STAGE/initramfs.cpio.gz"
    # Zero-pad to 4 bytes (gzip ignores trailing zeros) so that tests can
    # append a second archive (e.g. with /vt-test.sh) with plain cat: the
    # kernel wants each appended archive 4-byte aligned.
    pad=$(( (4 - $(stat -c %s "$STAGE/initramfs.cpio.gz") % 4) % 4 ))
    head -c "$pad" /dev/zero >>"$STAGE/initramfs.cpio.gz"
    log "initramfs: modules $(tr '\n' ' ' <"$R/lib/modules/load-order")"
fi

# --- install -----------------------------------------------------------------------

for a in $MISSING; do
    rm -rf "${OUT:?}/$a"
    mv "$STAGE/$a" "$OUT/$a"
done
{
    echo "kernel_pkg=$KPKG"
    echo "kernel_version=$KVER"
    echo "kernel_release=$UNAME_R"
    echo "busybox_version=$BVER"
    echo "recipe=$RECIPE"
} >"$OUT/.version.new"
mv "$OUT/.version.new" "$OUT/.version"
# shellcheck disable=SC2046
(cd "$OUT" && sha256sum $(for a in $ARTIFACTS; do artifact_files "$a"; done) >SHA256SUMS.new \
    && mv SHA256SUMS.new SHA256SUMS)
log "done: $OUT"

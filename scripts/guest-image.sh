#!/usr/bin/env bash
# Build the Debian 12 (bookworm) test disk images booted through firmware,
# from Debian packages only: mmdebstrap with this host's apt sources, the
# cloud kernel, systemd, an ext4 root, GRUB from grub-pc-bin / grub-efi-amd64-bin.
# No loop device and no mount: the ext4 file system is made from a directory
# (mke2fs -d) at the partition's offset, the FAT ESP with mtools, and GRUB's
# boot sector and core image are written with dd (what grub-install would do
# for a disk whose first partition starts at 1 MiB).
# Cached like scripts/guest-artifacts.sh: a second run with the images present,
# the recipe unchanged and SHA256SUMS verifying does nothing.
#
# Usage: scripts/guest-image.sh [OUT_DIR]
#   OUT_DIR defaults to $VT_GUEST_DIR, else <repo>/target/guest.
# Env:
#   VT_GUEST_REFRESH=1   rebuild even if the cache verifies
#
# Produces in OUT_DIR (raw, sparse, 1 GiB virtual each):
#   debian-test-bios.img  MBR disk, partition 1 = ext4 root, GRUB for BIOS (i386-pc)
#   debian-test-efi.img   GPT disk, partition 1 = ESP (FAT32, \EFI\BOOT\BOOTX64.EFI),
#                         partition 2 = ext4 root, GRUB for EFI (x86_64-efi)
#   IMAGE-SHA256SUMS, .image-version
#
# The guest: GRUB prints "VT-IMAGE grub" on the serial line and boots the
# kernel with console=ttyS0; the one-shot unit vt-image-marker.service prints
#   VT-IMAGE-BOOTED vcpus=N mem_kb=N root=DEV rtc=DATE boot=bios|efi
# to the console and then powers off, unless the kernel command line has
# vt.stay=1 (the GRUB menu's second entry), in which case it prints the marker
# and stays up (the power button powers off through systemd-logind).
# Root's password is locked (no login); the images are test payloads.
set -euo pipefail
export LC_ALL=C

die() { echo "guest-image: error: $*" >&2; exit 1; }
log() { echo "guest-image: $*" >&2; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
OUT=${1:-${VT_GUEST_DIR:-$REPO/target/guest}}

IMAGES="debian-test-bios.img debian-test-efi.img"
SIZE_MIB=1024                                   # virtual size of each image
ROOT_UUID=5e1f7a3c-0b7e-4d2a-9c51-7ee1da9e0001  # fixed: GRUB and fstab name it
SUITE=bookworm
PACKAGES="systemd-sysv,udev,dbus,linux-image-cloud-amd64,initramfs-tools,zstd"
GRUB_PC=/usr/lib/grub/i386-pc
GRUB_EFI=/usr/lib/grub/x86_64-efi

for tool in mmdebstrap mke2fs sfdisk mkfs.vfat mcopy mmd grub-mkimage sha256sum flock truncate; do
    command -v "$tool" >/dev/null || die "'$tool' not found (run scripts/setup-host.sh)"
done
[ -f "$GRUB_PC/boot.img" ] || die "$GRUB_PC/boot.img missing (apt-get install grub-pc-bin)"
[ -d "$GRUB_EFI" ] || die "$GRUB_EFI missing (apt-get install grub-efi-amd64-bin)"
[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root)"
RECIPE=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.image-lock"
flock 9

stamp_field() { sed -n "s/^$1=//p" "$OUT/.image-version" 2>/dev/null || true; }
cache_ok() {
    local i
    [ "${VT_GUEST_REFRESH:-0}" != 1 ] || return 1
    [ "$(stamp_field recipe)" = "$RECIPE" ] || return 1
    for i in $IMAGES; do [ -f "$OUT/$i" ] || return 1; done
    (cd "$OUT" && sha256sum -c --quiet --status IMAGE-SHA256SUMS) 2>/dev/null
}
if cache_ok; then
    log "up to date in $OUT ($(stamp_field kernel))"
    exit 0
fi

START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vt-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/root"

# --- the root file system ------------------------------------------------------

# This host's apt sources (deb822 or one-line), so that the image comes from the
# same registry the host uses; no mirror name is written here.
SOURCES="$WORK/sources"
: >"$SOURCES.list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && grep -hv '^\s*#' "$f" | grep -E "^deb .* $SUITE( |$)" >>"$SOURCES.list" || true
done
if [ -s "$SOURCES.list" ]; then
    SOURCES="$SOURCES.list"
else
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && grep -q "^Suites:.*\b$SUITE\b" "$f" && { SOURCES=$f; break; }
    done
    [ -f "$SOURCES" ] || die "no apt source for $SUITE in /etc/apt (this script builds Debian $SUITE)"
fi

# The marker unit and its script, the GRUB configuration (written per boot
# mode below) and the rest of the guest's configuration.
cat >"$WORK/vt-image-marker" <<'EOF'
#!/bin/sh
# Prints the VT System test image's marker, then powers off unless vt.stay=1.
boot=bios; [ -d /sys/firmware/efi ] && boot=efi
mem=$(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo)
rtc=$(cat /sys/class/rtc/rtc0/date 2>/dev/null || echo none)
line="VT-IMAGE-BOOTED vcpus=$(nproc) mem_kb=$mem root=$(findmnt -no SOURCE /) rtc=$rtc boot=$boot"
echo "$line"
[ -w /dev/ttyS0 ] && echo "$line" >/dev/ttyS0
case " $(cat /proc/cmdline) " in
    *" vt.stay=1 "*) echo "VT-IMAGE staying up (vt.stay=1)" ;;
    *) systemctl --no-block poweroff ;;
esac
EOF
chmod 755 "$WORK/vt-image-marker"
cat >"$WORK/vt-image-marker.service" <<'EOF'
[Unit]
Description=VT System test image marker (prints VT-IMAGE-BOOTED, then powers off)
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vt-image-marker
StandardOutput=journal+console
[Install]
WantedBy=multi-user.target
EOF

log "mmdebstrap $SUITE ($PACKAGES)"
mmdebstrap --mode=root --variant=minbase --format=directory --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo COMPRESS=zstd >"$1/etc/initramfs-tools/conf.d/vt.conf"' \
    --customize-hook="copy-in $WORK/vt-image-marker /usr/local/sbin" \
    --customize-hook="copy-in $WORK/vt-image-marker.service /etc/systemd/system" \
    --customize-hook='chroot "$1" systemctl enable vt-image-marker.service' \
    --customize-hook='echo vt-test >"$1/etc/hostname"' \
    --customize-hook="echo 'UUID=$ROOT_UUID / ext4 defaults,errors=remount-ro 0 0' >\"\$1/etc/fstab\"" \
    --customize-hook='rm -f "$1"/etc/machine-id "$1"/var/lib/dbus/machine-id && touch "$1/etc/machine-id"' \
    "$SUITE" "$ROOT" "$SOURCES" >"$WORK/mmdebstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/mmdebstrap.log" >&2; die "mmdebstrap failed"; }

KERNEL=$(cd "$ROOT/boot" && ls vmlinuz-* | head -n1)
INITRD=initrd.img-${KERNEL#vmlinuz-}
[ -f "$ROOT/boot/$KERNEL" ] && [ -f "$ROOT/boot/$INITRD" ] || die "no kernel/initramfs in the image's /boot"
KPKG_VER=$(chroot "$ROOT" dpkg-query -W -f='${Package} ${Version}' "linux-image-${KERNEL#vmlinuz-}")
log "kernel $KPKG_VER"

# GRUB's configuration: finds the root file system by its UUID, so that the
# disk's position (hd0, hd1) does not matter.
grub_cfg() {
    cat <<EOF
# VT System test image (scripts/guest-image.sh)
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
set default=0
search --no-floppy --fs-uuid --set=root $ROOT_UUID
echo "VT-IMAGE grub: loading /boot/$KERNEL"
menuentry "Debian $SUITE (VT test: marker, then power off)" {
    linux /boot/$KERNEL root=UUID=$ROOT_UUID rw console=tty0 console=ttyS0,115200n8 earlyprintk=serial,ttyS0,115200
    initrd /boot/$INITRD
    echo "VT-IMAGE grub: loaded, starting the kernel"
}
menuentry "Debian $SUITE (VT test: marker, then stay up)" {
    linux /boot/$KERNEL root=UUID=$ROOT_UUID rw console=tty0 console=ttyS0,115200n8 earlyprintk=serial,ttyS0,115200 vt.stay=1
    initrd /boot/$INITRD
    echo "VT-IMAGE grub: loaded, starting the kernel"
}
EOF
}

# Make the ext4 root from the directory into image $1 at MiB offset $2, $3 MiB long.
put_root() {
    mke2fs -q -t ext4 -F -L vt-root -U "$ROOT_UUID" -d "$ROOT" \
        -E "offset=$(($2 * 1024 * 1024))" "$1" "$(($3 * 1024))k" \
        || die "mke2fs of the root file system failed"
}

# --- BIOS image: MBR, ext4 root at 1 MiB, GRUB's boot.img + core.img before it --

make_bios() {
    local img="$WORK/debian-test-bios.img"
    mkdir -p "$ROOT/boot/grub/i386-pc"
    cp "$GRUB_PC"/*.mod "$GRUB_PC"/*.lst "$ROOT/boot/grub/i386-pc/"
    grub_cfg >"$ROOT/boot/grub/grub.cfg"
    truncate -s "${SIZE_MIB}M" "$img"
    echo 'start=2048, type=83, bootable' | sfdisk -q --label dos "$img" >/dev/null
    put_root "$img" 1 $((SIZE_MIB - 1))
    # core.img: the modules that read the prefix (biosdisk, msdos, ext4);
    # the rest are loaded from /boot/grub/i386-pc.
    grub-mkimage -O i386-pc -o "$WORK/core.img" -p '(hd0,msdos1)/boot/grub' \
        biosdisk part_msdos ext2 || die "grub-mkimage i386-pc failed"
    [ "$(stat -c %s "$WORK/core.img")" -lt $((2047 * 512)) ] || die "core.img does not fit before 1 MiB"
    # boot.img's code only (440 bytes): the partition table stays. It loads
    # sector 1 (its default), where core.img's diskboot loads the rest.
    dd if="$GRUB_PC/boot.img" of="$img" bs=440 count=1 conv=notrunc status=none
    dd if="$WORK/core.img" of="$img" bs=512 seek=1 conv=notrunc status=none
    rm -rf "$ROOT/boot/grub"
}

# --- EFI image: GPT, ESP (FAT32) at 1 MiB, ext4 root after it --------------------

ESP_MIB=64
make_efi() {
    local img="$WORK/debian-test-efi.img" esp="$WORK/esp.img"
    mkdir -p "$ROOT/boot/grub/x86_64-efi"
    cp "$GRUB_EFI"/*.mod "$GRUB_EFI"/*.lst "$ROOT/boot/grub/x86_64-efi/"
    grub_cfg >"$ROOT/boot/grub/grub.cfg"
    truncate -s "${SIZE_MIB}M" "$img"
    printf '%s\n' 'label: gpt' \
        "start=2048, size=$((ESP_MIB * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=ESP" \
        "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root" | sfdisk -q "$img" >/dev/null
    # The GPT backup header takes the last 33 sectors: leave the last MiB out.
    put_root "$img" $((1 + ESP_MIB)) $((SIZE_MIB - ESP_MIB - 2))
    grub-mkimage -O x86_64-efi -o "$WORK/BOOTX64.EFI" -p '(hd0,gpt2)/boot/grub' \
        part_gpt ext2 fat || die "grub-mkimage x86_64-efi failed"
    mkfs.vfat -F 32 -n VT-ESP -C "$esp" $((ESP_MIB * 1024)) >/dev/null || die "mkfs.vfat failed"
    mmd -i "$esp" ::/EFI ::/EFI/BOOT
    mcopy -i "$esp" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
    dd if="$esp" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
    rm -rf "$ROOT/boot/grub"
}

make_bios
make_efi

# --- install -----------------------------------------------------------------------

for i in $IMAGES; do mv "$WORK/$i" "$OUT/$i"; done
(cd "$OUT" && sha256sum $IMAGES >IMAGE-SHA256SUMS)
{
    echo "recipe=$RECIPE"
    echo "kernel=$KPKG_VER"
    echo "root_uuid=$ROOT_UUID"
    echo "build_seconds=$(($(date +%s) - START))"
} >"$OUT/.image-version"
log "done in $(($(date +%s) - START)) s: $(cd "$OUT" && du -h --apparent-size $IMAGES | tr '\n\t' '  ')"
log "allocated: $(cd "$OUT" && du -h $IMAGES | tr '\n\t' '  ')"

#!/bin/sh
# The lab L1's /init (written by crates/lab). Loads the kvm modules, checks
# /dev/kvm, runs /lab/command with stdout+stderr on the console between the
# VTLAB-START and VTLAB-EXIT=<code> markers, and powers off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin /root
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1
for m in $(cat /lab/modules/load-order); do
    p=
    [ "$m" = kvm_amd ] && p="nested=0"
    # shellcheck disable=SC2086
    insmod "/lab/modules/$m.ko" $p || echo "VTLAB: insmod $m failed"
done
if [ ! -c /dev/kvm ]; then
    echo "VTLAB-ERROR=no /dev/kvm"
    poweroff -f
fi
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root VTLAB_HOST=lab VTLAB_ROOT=
[ -f /lab/env ] && . /lab/env
cd /
echo VTLAB-START
sh -c "$(cat /lab/command)" </dev/null 2>&1
echo "VTLAB-EXIT=$?"
poweroff -f

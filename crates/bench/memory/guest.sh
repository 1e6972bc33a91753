# The guest half of `vt-bench memory` (/vt-test.sh in the initramfs).
# Density guests (no vt.fill on the command line) announce they are up
# and idle. Fault guests (vt.fill=MIB) write MIB MiB of zeros to a tmpfs
# twice: the first pass touches guest pages the host has never backed
# (one host fault per page, or per huge page), the second rewrites the
# same pages (no host fault: memory bandwidth under nested paging).
v() { echo "VT-GUEST $1=$2"; }
up() { cut -d' ' -f1 /proc/uptime; }
ms() { awk "BEGIN { printf \"%d\", ($2 - $1) * 1000 }"; }
n=$(sed -n 's/.*vt\.fill=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$n" ]; then
    mkdir -p /mnt/fill
    mount -t tmpfs -o size=90% tmpfs /mnt/fill
    a=$(up); dd if=/dev/zero of=/mnt/fill/z bs=1M count=$n 2>/dev/null; b=$(up)
    v fill_kb "$(du -k /mnt/fill/z | cut -f1)"
    # Same file, same pages: rewritten in place.
    dd if=/dev/zero of=/mnt/fill/z bs=1M count=$n conv=notrunc 2>/dev/null; c=$(up)
    v fill1_ms "$(ms $a $b)"
    v fill2_ms "$(ms $b $c)"
fi
v ready 1
sleep 100000

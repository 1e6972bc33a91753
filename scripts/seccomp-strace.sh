#!/usr/bin/env bash
# Which system calls each vt-vmm thread kind makes, measured: a stock Linux
# guest in the lab under `strace -f` (vt-vmm with --seccomp log), disk,
# NIC and rng in use, a reboot with --on-reboot restart, then power-off.
# Prints "SYS <thread> <call>[(arg)]" lines, one per distinct call, and
# any call a filter would have refused (VT-SECCOMP, from the L1's audit log).
#
#   cargo build -p vt-vmm -p vt
#   cargo test -p vt-vmm --test confined_lab   # leaves its initramfs in /tmp/vt-confined-*/
#   scripts/seccomp-strace.sh [INITRAMFS]      # default: that one, else the stock one (boots once)
set -euo pipefail
cd "$(dirname "$0")/.."
initramfs=${1:-$(ls -t /tmp/vt-confined-*/initramfs-test.cpio.gz 2>/dev/null | head -1 || true)}
initramfs=${initramfs:-target/guest/initramfs.cpio.gz}
command -v strace >/dev/null || apt-get install -y strace >/dev/null
inner=$(mktemp)
trap 'rm -f "$inner"' EXIT
cat > "$inner" <<'INNER'
T=/tmp/vt-cell; mkdir -p $T; truncate -s 16M $T/d.img
/vt/strace -f -qq -o $T/s.txt /vt/vt-vmm --kernel /guest/vmlinux --initrd /vt/initramfs.cpio.gz \
    --memory 256 --cpus 2 --cmdline "console=ttyS0 quiet" \
    --disk path=$T/d.img --net tap=vtc0 --rng --on-reboot restart \
    --seccomp log --api-socket $T/api.sock --serial file=$T/con.log </dev/null
echo "vt-vmm status $?"
grep -a "VT-GUEST" $T/con.log
awk '
  NR==FNR { if ($0 ~ /prctl\(PR_SET_NAME, "/) { match($0, /"[^"]*"/); name[$1]=substr($0, RSTART+1, RLENGTH-2) } next }
  { call=$2; sub(/\(.*/, "", call); if (call !~ /^[a-z_0-9]+$/) next
    n = ($1 in name) ? name[$1] : "main"; key = n " " call
    a=$0; sub(/^[0-9]+ +[a-z_0-9]+\(/, "", a); split(a, p, ", ")
    if (call=="ioctl" || call=="fcntl") key = key "(" p[2] ")"
    if (call=="prctl" || call=="socket" || call=="getsockopt" || call=="setsockopt") key = key "(" p[1] ")"
    seen[key]++ }
  END { for (k in seen) print "SYS " k }
' $T/s.txt $T/s.txt | sort
dmesg | grep -a 'type=1326' | sed 's/^/VT-SECCOMP /' || true
INNER
exec target/debug/vt lab run --with-guest --timeout 400 \
    --binary target/debug/vt-vmm:/vt/vt-vmm --binary "$(command -v strace)":/vt/strace \
    --file "$initramfs":/vt/initramfs.cpio.gz --file "$inner":/vt/strace.sh -- sh /vt/strace.sh

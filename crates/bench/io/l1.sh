# Runs in the lab L1: the same guest and the same files under vt-vmm and
# QEMU (microvm + PCIe, virtio-blk-pci and virtio-net-pci on a tap,
# vhost off, cache=writeback like ours), RUNS times interleaved, plus the
# lab host's own figures on the same image file.
R="$VTLAB_ROOT"; T=/tmp/vt-bench; mkdir -p $T/www
RUNS=${RUNS:-3}
now() { cut -d' ' -f1 /proc/uptime; }
rate() { echo "$1 $2 $3" | awk '{ if ($3 > $2) printf "%.1f", $1 / ($3 - $2); else print "inf" }'; }
head -c 134217728 /dev/urandom > $T/www/blob
truncate -s 300M $T/disk.img
ip link set lo up
# The lab host's own figures (the image lives in the L1's RAM: tmpfs has no
# O_DIRECT, so these are buffered dd with fsync for writes).
t0=$(now); dd if=/dev/zero of=$T/disk.img bs=1M count=256 conv=notrunc,fsync 2>/dev/null; t1=$(now)
echo "VT-BENCH host seq_write_mbs=$(rate 256 $t0 $t1)"
t0=$(now); dd if=$T/disk.img of=/dev/null bs=1M count=256 2>/dev/null; t1=$(now)
echo "VT-BENCH host seq_read_mbs=$(rate 256 $t0 $t1)"
t0=$(now); dd if=$T/disk.img of=/dev/null bs=4k count=20000 2>/dev/null; t1=$(now)
echo "VT-BENCH host read_4k_iops=$(rate 20000 $t0 $t1)"
CMD="console=ttyS0 quiet"
run_one() {
    who=$1; tap=$2
    ( for i in $(seq 100); do [ -e /sys/class/net/$tap ] && break; sleep 0.1; done
      ip addr add 169.254.20.1/24 dev $tap; ip link set $tap up ) &
    if [ $who = vt ]; then
        timeout -s KILL 150 "$R/vt/vt-vmm" --kernel "$R/guest/vmlinux" --initrd "$R/vt/initramfs.cpio.gz" \
            --memory 512 --cmdline "$CMD" --disk path=$T/disk.img --net tap=$tap --serial file=$T/out </dev/null
    else
        timeout -s KILL 150 qemu-system-x86_64 -M microvm,accel=kvm,pcie=on,rtc=on -cpu host -m 512 -smp 1 \
            -nodefaults -no-user-config -nographic -bios "$R/vt/bios-microvm.bin" \
            -kernel "$R/guest/vmlinux" -initrd "$R/vt/initramfs.cpio.gz" -append "$CMD" \
            -drive id=d0,file=$T/disk.img,format=raw,if=none,cache=writeback \
            -device virtio-blk-pci,drive=d0 \
            -netdev tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off \
            -device virtio-net-pci,netdev=n0,romfile= \
            -serial file:$T/out </dev/null
    fi
    wait
    sed -n "s/^VT-BENCH /VT-BENCH $who /p" $T/out | tr -d "\r"
    grep -q net_rx $T/out || { echo "VT-BENCH $who incomplete; guest output tail:"; tail -15 $T/out; }
}
httpd -p 8080 -h $T/www
i=0
while [ $i -lt $RUNS ]; do
    run_one vt vtb$i
    run_one qemu qtb$i
    i=$((i + 1))
done

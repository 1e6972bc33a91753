# The lab half of `vt-bench io`: the lab host's own figures on its disk
# (/dev/vda, a virtio disk QEMU-TCG gives the lab), then the same guest
# under vt-vmm and QEMU (microvm + PCIe, virtio-blk-pci on the same
# /dev/vda, virtio-net-pci on a tap with vhost off), RUNS times each,
# interleaved. Prints `VT-BENCH who key=value`.
R="$VTLAB_ROOT"; T=/tmp/vt-bench; mkdir -p $T
RUNS=${RUNS:-3}; SECS=${SECS:-5}; DEV=/dev/vda
[ -b $DEV ] || { echo "vt-bench: no $DEV in the lab"; exit 1; }
ip link set lo up
"$R/vt/vt-iobench" $DEV "$SECS" 256 | sed 's/^/VT-BENCH host /'
"$R/vt/iperf3" -s -D
CMD="console=ttyS0 quiet vt.secs=$SECS"
run_one() {
    who=$1; tap=$2
    rm -f $T/out
    ( for i in $(seq 100); do [ -e /sys/class/net/$tap ] && break; sleep 0.1; done
      ip addr add 169.254.20.1/24 dev $tap; ip link set $tap up ) &
    if [ $who = vt ]; then
        timeout -s KILL 300 "$R/vt/vt-vmm" --kernel "$R/guest/vmlinux" \
            --initrd "$R/vt/initramfs.cpio.gz" --memory 512 --cmdline "$CMD" \
            --disk path=$DEV --net tap=$tap --serial file=$T/out </dev/null
    else
        timeout -s KILL 300 qemu-system-x86_64 -M microvm,accel=kvm,pcie=on,rtc=on \
            -cpu host -m 512 -smp 1 -nodefaults -no-user-config -nographic \
            -bios "$R/vt/bios-microvm.bin" -kernel "$R/guest/vmlinux" \
            -initrd "$R/vt/initramfs.cpio.gz" -append "$CMD" \
            -drive id=d0,file=$DEV,format=raw,if=none,cache=writeback \
            -device virtio-blk-pci,drive=d0 \
            -netdev tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off \
            -device virtio-net-pci,netdev=n0,romfile= \
            -serial file:$T/out </dev/null
    fi
    wait
    sed -n "s/^VT-BENCH /VT-BENCH $who /p" $T/out | tr -d '\r'
    sed -n "s/^VT-DIAG /VT-DIAG $who /p" $T/out | tr -d '\r'
    grep -q 'net_rx_mbits\|net_rx failed' $T/out || { echo "vt-bench: $who run incomplete:"; tail -20 $T/out; }
}
i=0
while [ $i -lt $RUNS ]; do
    run_one vt vtb$i
    run_one qemu qtb$i
    i=$((i + 1))
done

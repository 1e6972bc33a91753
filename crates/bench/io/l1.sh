# The lab half of `vt-bench io`: the lab host's own figures on its disk
# (/dev/vda, a virtio disk QEMU-TCG gives the lab), then the same guest
# under vt-vmm and QEMU (microvm + PCIe, virtio-blk-pci on the same
# /dev/vda with cache=none — O_DIRECT end to end, as the host's figures
# are — and virtio-net-pci on a tap with vhost off), RUNS times each,
# interleaved (PEER=vtoff: the same vt-vmm with VT_VMM_COUNTERS=off instead
# of QEMU). Prints `VT-BENCH who key=value`.
R="$VTLAB_ROOT"; T=/tmp/vt-bench; mkdir -p $T
RUNS=${RUNS:-3}; SECS=${SECS:-5}; DEV=/dev/vda
[ -b $DEV ] || { echo "vt-bench: no $DEV in the lab"; exit 1; }
ip link set lo up
CMD="console=ttyS0 quiet vt.secs=$SECS"
FMT=${DISKFMT:-raw}; CACHE=${DISKCACHE:-none}
[ -n "$BLOCKONLY" ] && CMD="$CMD vt.blockonly"
if [ -n "$NETONLY" ]; then CMD="$CMD vt.netonly"
# The lab host's own figures only on a raw disk (they would write over a qcow2).
elif [ "$FMT" = raw ]; then "$R/vt/vt-iobench" $DEV "$SECS" 256 | sed 's/^/VT-BENCH host /'; fi
"$R/vt/iperf3" -s -D
# The VMM's pid given the pid `timeout` started with: busybox's timeout
# execs the command itself (same pid), coreutils' runs it as a child.
vmm_pid() {
    [ "$(cat /proc/$1/comm 2>/dev/null)" = timeout ] || { echo $1; return; }
    for p in /proc/[0-9]*; do
        [ "$(cut -d' ' -f4 $p/stat 2>/dev/null)" = "$1" ] && { echo ${p#/proc/}; return; }
    done
}
# A run that takes far longer than it should: what each VMM thread is
# doing (state, CPU ticks, kernel wait channel), twice, 5 s apart.
watchdog() {
    sleep 150
    for n in 1 2; do
        for t in /proc/$1/task/*; do
            [ -d "$t" ] || continue
            echo "VT-HANG $(tr ' ' '_' <$t/comm) $(sed 's/.*) //' $t/stat | cut -d' ' -f1,12,13,41) $(cat $t/wchan 2>/dev/null)"
        done
        sleep 5
    done
    dmesg | tail -5 | sed 's/^/VT-HANG dmesg /'
    # What the guest makes KVM do: a fraction of a second of KVM events.
    tr=/sys/kernel/tracing
    [ -d $tr/events ] || mount -t tracefs none $tr 2>/dev/null
    [ -d $tr/events/kvm ] || return
    echo > $tr/trace
    echo 1 > $tr/events/kvm/enable; sleep 0.3; echo 0 > $tr/events/kvm/enable
    grep -v '^#' $tr/trace | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^kvm_[a-z_]*:$/) print $i}' |
        sort | uniq -c | sort -rn | head -8 | sed 's/^/VT-HANG events /'
    grep -v '^#' $tr/trace | grep -v 'kvm_entry' | head -30 | sed 's/^/VT-HANG trace /'
}
# CPU ticks at each step the guest announces (VT-STEP/VT-STAT lines):
# per VMM thread (utime stime guest), the iperf3 server, the whole lab,
# and the frames the tap dropped because the VMM did not read them.
cpu_steps() {
    last=""
    while kill -0 $1 2>/dev/null; do
        step=$(grep "^VT-ST" $T/out 2>/dev/null | tail -1 | cut -d' ' -f1,2 | tr -d '\r')
        if [ -n "$step" ] && [ "$step" != "$last" ]; then
            last=$step; s=$(echo "$step" | tr ' ' '_')
            for t in /proc/$1/task/*; do
                echo "VT-CPU $2 $s $(tr ' ' '_' <$t/comm) $(sed 's/.*) //' $t/stat | cut -d' ' -f12,13,41)"
            done
            echo "VT-CPU $2 $s iperf3-server $(sed 's/.*) //' /proc/$(pidof iperf3)/stat | cut -d' ' -f12,13)"
            echo "VT-CPU $2 $s lab $(head -1 /proc/stat)"
            echo "VT-CPU $2 $s tap_tx_dropped $(cat /sys/class/net/$3/statistics/tx_dropped)"
        fi
        sleep 0.2
    done
}
run_one() {
    who=$1; tap=$2
    rm -f $T/out
    ( for i in $(seq 100); do [ -e /sys/class/net/$tap ] && break; sleep 0.1; done
      ip addr add 169.254.20.1/24 dev $tap; ip link set $tap up ) &
    if [ $who = vt ] || [ $who = vtoff ]; then
        # vtoff: the same VMM with its device counters off.
        counters=on; [ $who = vtoff ] && counters=off
        # shellcheck disable=SC2086 # VTJAIL is empty or several flags
        VT_VMM_COUNTERS=$counters timeout -s KILL 300 "$R/vt/vt-vmm" $VTJAIL --kernel "$R/guest/vmlinux" \
            --initrd "$R/vt/initramfs.cpio.gz" --memory 512 --cmdline "$CMD" \
            --disk path=$DEV,format=$FMT,cache=$CACHE --net tap=$tap --serial file=$T/out </dev/null &
    else
        timeout -s KILL 300 qemu-system-x86_64 -M microvm,accel=kvm,pcie=on,rtc=on \
            -cpu host -m 512 -smp 1 -nodefaults -no-user-config -nographic \
            -bios "$R/vt/bios-microvm.bin" -kernel "$R/guest/vmlinux" \
            -initrd "$R/vt/initramfs.cpio.gz" -append "$CMD" \
            -drive id=d0,file=$DEV,format=$FMT,if=none,cache=$CACHE \
            -device virtio-blk-pci,drive=d0 \
            -netdev tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off \
            -device virtio-net-pci,netdev=n0,romfile= \
            -serial file:$T/out </dev/null &
    fi
    limit=$!
    vmm=
    for try in 1 2 3 4 5; do sleep 0.2; vmm=$(vmm_pid $limit); [ -n "$vmm" ] && break; done
    watchdog $vmm &
    wd=$!
    cpu_steps $vmm $who $tap &
    wait $limit
    kill $wd 2>/dev/null
    # A watchdog killed mid-sample must not leave KVM tracing on.
    e=/sys/kernel/tracing/events/kvm/enable
    [ -w $e ] && echo 0 > $e
    wait
    sed -n "s/^VT-BENCH /VT-BENCH $who /p" $T/out | tr -d '\r'
    sed -n "s/^VT-\(DIAG\|STAT\) /VT-\1 $who /p" $T/out | tr -d '\r'
    last='net_rx_mbits'; [ -n "$BLOCKONLY" ] && last='rand_write_iops'
    grep -q "^VT-BENCH $last=\|^VT-DIAG $last failed" $T/out || { echo "vt-bench: $who run incomplete:"; tail -20 $T/out; }
}
i=0
while [ $i -lt $RUNS ]; do
    run_one vt vtb$i
    run_one "${PEER:-qemu}" qtb$i
    i=$((i + 1))
done

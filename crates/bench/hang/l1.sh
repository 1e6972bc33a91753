# The lab half of `vt-bench hang`: the stress loop of issue 15 case 7.
#
# Part 1 (BURSTS > 0): ROUNDS times, a guest under vt-vmm then under QEMU
# (same kernel, initramfs, tap set-up and command line as `vt-bench io`)
# runs BURSTS short iperf3 transfers. A guest whose console stays silent
# for STALL seconds is a hang: the VMM's threads (state, CPU ticks, wait
# channel) and a sample of KVM events are printed (`VT-HANG`), then it is
# killed. With a baseline VMM (/vt/vt-vmm-base), it runs a third guest
# each round. Prints `VT-HANGRUN who round bursts_ok bursts_stuck hung
# rx_length_errors crashed` (rx_length_errors as the guest's driver
# counted them; crashed: the VMM said the guest crashed, e.g. a triple fault).
#
# Part 2 (BOOTS > 0): BOOTS times, the guest kernel booted with 2 vCPUs and
# 1 GiB to init and powered off under vt-vmm, then under QEMU. Prints
# `VT-SMPBOOT who n outcome` (init, triple_fault, reset, crashed, hang, or
# l1_wedged: the VMM outlived its SIGKILL, stuck in the lab's kernel; the
# loop ends there).
R="$VTLAB_ROOT"; T=/tmp/vt-hang; mkdir -p $T
ROUNDS=${ROUNDS:-2}; BURSTS=${BURSTS:-20}; SECS=${SECS:-2}; BOOTS=${BOOTS:-0}
STALL=$((SECS + 40))
ip link set lo up
"$R/vt/iperf3" -s -D
vmm_pid() {
    [ "$(cat /proc/$1/comm 2>/dev/null)" = timeout ] || { echo $1; return; }
    for p in /proc/[0-9]*; do
        [ "$(cut -d' ' -f4 $p/stat 2>/dev/null)" = "$1" ] && { echo ${p#/proc/}; return; }
    done
}
hang_report() {
    for n in 1 2; do
        for t in /proc/$1/task/*; do
            [ -d "$t" ] || continue
            echo "VT-HANG $(tr ' ' '_' <$t/comm) $(sed 's/.*) //' $t/stat | cut -d' ' -f1,12,13,41) $(cat $t/wchan 2>/dev/null)"
        done
        sleep 2
    done
    tr=/sys/kernel/tracing
    [ -d $tr/events ] || mount -t tracefs none $tr 2>/dev/null
    if [ -d $tr/events/kvm ]; then
        echo > $tr/trace
        echo 1 > $tr/events/kvm/enable; sleep 0.3; echo 0 > $tr/events/kvm/enable
        grep -v '^#' $tr/trace | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^kvm_[a-z_]*:$/) print $i}' |
            sort | uniq -c | sort -rn | head -8 | sed 's/^/VT-HANG events /'
        grep -v '^#' $tr/trace | grep -v 'kvm_entry' | head -40 | sed 's/^/VT-HANG trace /'
    fi
    tail -40 $T/out | tr -d '\r' | sed 's/^/VT-HANG console /'
}
# Whether pid $1 still runs (an exited child not yet waited for is a
# zombie, which kill -0 still finds).
alive() { [ -r /proc/$1/stat ] && [ "$(sed 's/.*) //' /proc/$1/stat | cut -d' ' -f1)" != Z ]; }
# Waits for VMM pid $1 (started by `timeout`, pid $2); a console silent
# for STALL seconds is a hang. Echoes 1 for a hang, 0 otherwise.
watch_vm() {
    last=0; quiet=0
    while alive $2; do
        size=$(wc -c <$T/out 2>/dev/null || echo 0)
        if [ "$size" != "$last" ]; then last=$size; quiet=0; else quiet=$((quiet + 1)); fi
        if [ $quiet -ge $STALL ]; then
            hang_report $1 >&2
            kill -KILL $1 2>/dev/null
            echo 1; return
        fi
        sleep 1
    done
    echo 0
}
net_run() {
    who=$1; tap=$2; round=$3
    rm -f $T/out
    ( for i in $(seq 100); do [ -e /sys/class/net/$tap ] && break; sleep 0.1; done
      ip addr add 169.254.20.1/24 dev $tap; ip link set $tap up ) &
    cmd="console=ttyS0 quiet vt.secs=$SECS vt.bursts=$BURSTS"
    limit=$((BURSTS * (SECS + 25) + 120))
    bin="$R/vt/vt-vmm"; [ $who = base ] && bin="$R/vt/vt-vmm-base"
    if [ $who != qemu ]; then
        timeout -s KILL $limit "$bin" --kernel "$R/guest/vmlinux" \
            --initrd "$R/vt/initramfs.cpio.gz" --memory 512 --cmdline "$cmd" \
            --net tap=$tap --serial file=$T/out </dev/null 2>$T/err &
    else
        timeout -s KILL $limit qemu-system-x86_64 -M microvm,accel=kvm,pcie=on,rtc=on \
            -cpu host -m 512 -smp 1 -nodefaults -no-user-config -nographic \
            -bios "$R/vt/bios-microvm.bin" -kernel "$R/guest/vmlinux" \
            -initrd "$R/vt/initramfs.cpio.gz" -append "$cmd" \
            -netdev tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off \
            -device virtio-net-pci,netdev=n0,romfile= \
            -serial file:$T/out </dev/null 2>$T/err &
    fi
    t=$!; vmm=
    for try in 1 2 3 4 5; do sleep 0.2; vmm=$(vmm_pid $t); [ -n "$vmm" ] && break; done
    hung=$(watch_vm "$vmm" $t)
    wait $t
    ok=$(grep -c '^VT-BURST [0-9]* [a-z]* ok' $T/out)
    stuck=$(grep -c '^VT-BURST [0-9]* [a-z]* stuck' $T/out)
    grep '^VT-BURST.* stuck\|^VT-BURST-DIAG' $T/out | tr -d '\r' | sed "s/^/$who /"
    grep -q '^VT-BURST done' $T/out || [ "$hung" = 1 ] || { echo "$who run incomplete:"; tail -5 $T/out $T/err; }
    lerr=$(sed -n 's/^VT-BURST-STATS rx_length_errors=\([0-9]*\).*/\1/p' $T/out | tr -d '\r')
    crashed=$(grep -c 'guest crashed' $T/err)
    echo "VT-HANGRUN $who $round $ok $stuck $hung ${lerr:-0} $crashed"
}
smp_boot() {
    who=$1; n=$2
    rm -f $T/out $T/err
    cmd="console=ttyS0 quiet"
    if [ $who = vt ]; then
        timeout -s KILL 90 "$R/vt/vt-vmm" --kernel "$R/guest/vmlinux" --cpus 2 \
            --initrd "$R/guest/initramfs.cpio.gz" --memory 1024 --cmdline "$cmd" \
            --serial file=$T/out </dev/null 2>$T/err &
    else
        timeout -s KILL 90 qemu-system-x86_64 -M microvm,accel=kvm,rtc=on \
            -cpu host -m 1024 -smp 2 -nodefaults -no-user-config -nographic -no-reboot \
            -bios "$R/vt/bios-microvm.bin" -kernel "$R/guest/vmlinux" \
            -initrd "$R/guest/initramfs.cpio.gz" -append "$cmd" \
            -serial file:$T/out </dev/null 2>$T/err &
    fi
    t=$!; s=0
    # SIGKILL at 90 s; a VMM still there 30 s later is stuck in the lab
    # kernel (a vCPU thread that never comes back from KVM_RUN): the L1 is
    # wedged, say so and stop the loop rather than wait for the lab's limit.
    while alive $t && [ $s -lt 120 ]; do sleep 1; s=$((s + 1)); done
    if alive $t; then
        dmesg | tail -5 | sed "s/^/VT-SMPDIAG $who $n dmesg /"
        echo "VT-SMPBOOT $who $n l1_wedged 0"
        exit 0
    fi
    wait $t
    rc=$?
    if grep -q 'init-reached' $T/out; then o=init
    elif grep -q 'triple fault' $T/err; then o=triple_fault
    elif [ $rc = 137 ]; then o=hang
    elif [ $rc = 0 ]; then o=reset
    else o=crashed; fi
    [ $o = init ] || { tail -5 $T/err | sed "s/^/VT-SMPDIAG $who $n err /"; tail -15 $T/out | tr -d '\r' | sed "s/^/VT-SMPDIAG $who $n console /"; }
    echo "VT-SMPBOOT $who $n $o $(grep -c 'nproc=2' $T/out)"
}
i=1
while [ $i -le "$ROUNDS" ] && [ "$BURSTS" -gt 0 ]; do
    net_run vt vth$i $i
    net_run qemu qth$i $i
    [ -x "$R/vt/vt-vmm-base" ] && net_run base bth$i $i
    i=$((i + 1))
done
i=1
while [ $i -le "$BOOTS" ]; do
    smp_boot vt $i
    smp_boot qemu $i
    i=$((i + 1))
done

# The lab half of `vt-bench memory`. Prints `VT-BENCH who case key=value`.
#
# Density: N identical idle guests of GUEST_MIB at once, per case
# (merge off / merge on / merge on + free page reporting), vt-vmm then
# QEMU, ROUNDS times. Host memory: the VMMs' PSS summed
# (/proc/PID/smaps_rollup) and the drop of the lab host's MemFree (page
# cache dropped before each read: what the guests cost the host, KVM's own
# kernel memory included). ksmd runs only once the guests are up (merging
# under a booting nested guest once ended in a triple fault, see
# crates/vt-vmm/tests/memory_lab.rs) and is tuned to scan fast; the wait for
# it is bounded (KSM_WAIT s, or 3 full scans).
#
# Faults: one guest of FAULT_MIB writes FILL_MIB to tmpfs twice (guest.sh),
# with THP advised, THP off (host THP `never` too, since QEMU always
# advises it) and hugetlbfs 2M; FAULT_ROUNDS times.
R="$VTLAB_ROOT"; T=/tmp/vt-mem; mkdir -p $T
N=${N:-4}; GUEST_MIB=${GUEST_MIB:-256}; ROUNDS=${ROUNDS:-1}; KSM_WAIT=${KSM_WAIT:-60}
FAULT_ROUNDS=${FAULT_ROUNDS:-3}; FAULT_MIB=${FAULT_MIB:-512}; FILL_MIB=${FILL_MIB:-256}
K=/sys/kernel/mm/ksm; H=/sys/kernel/mm/transparent_hugepage/enabled
NR=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
echo madvise > $H
echo 0 > $K/run
echo 20000 > $K/pages_to_scan
echo 0 > $K/sleep_millisecs
echo "VT-INFO thp=$(cat $H) ksm_use_zero_pages=$(cat $K/use_zero_pages 2>/dev/null)"
CMD="console=ttyS0 quiet"

# start WHO NAME MIB CASE [CMDLINE-EXTRA]: one VM in the background; its pid in $T/NAME.pid.
start() {
    who=$1; name=$2; mib=$3; case=$4; extra=$5
    rm -f $T/$name.log
    if [ $who = vt ]; then
        case $case in
            off) opt="--memory-merge off" ;;
            on) opt="--memory-merge on" ;;
            fpr) opt="--memory-merge on --balloon free_page_reporting=on" ;;
            thp) opt="--memory-thp on" ;;
            nothp) opt="--memory-thp off" ;;
            huge) opt="--memory-hugepages 2M" ;;
        esac
        # shellcheck disable=SC2086 # $opt is several flags
        "$R/vt/vt-vmm" --kernel "$R/guest/vmlinux" --initrd "$R/vt/initramfs.cpio.gz" \
            --memory $mib --cmdline "$CMD $extra" --serial file=$T/$name.log \
            $opt </dev/null 2>$T/$name.err &
    else
        mach="microvm,accel=kvm,pcie=on,rtc=on"; dev=""; obj=""
        case $case in
            off) mach="$mach,mem-merge=off" ;;
            on) mach="$mach,mem-merge=on" ;;
            fpr) mach="$mach,mem-merge=on"; dev="-device virtio-balloon-pci,free-page-reporting=on" ;;
            thp|nothp) mach="$mach,mem-merge=off" ;;
            huge) mach="$mach,mem-merge=off,memory-backend=ram"
                  obj="-object memory-backend-memfd,id=ram,size=${mib}M,hugetlb=on,hugetlbsize=2M" ;;
        esac
        # shellcheck disable=SC2086 # $dev and $obj are several words or none
        qemu-system-x86_64 -M $mach -cpu host -m $mib -smp 1 -nodefaults -no-user-config \
            -nographic -bios "$R/vt/bios-microvm.bin" -kernel "$R/guest/vmlinux" \
            -initrd "$R/vt/initramfs.cpio.gz" -append "$CMD $extra" $obj $dev \
            -serial file:$T/$name.log </dev/null 2>$T/$name.err &
    fi
    echo $! > $T/$name.pid
}
# waitready NAME: up to 180 s for the guest's `ready` line; 0 if it came.
waitready() {
    for i in $(seq 1800); do grep -q 'VT-GUEST ready=1' $T/$1.log 2>/dev/null && return 0; sleep 0.1; done
    echo "VT-INFO $1 not ready: $(tail -3 $T/$1.log | tr '\r\n' '  ') $(tail -2 $T/$1.err | tr '\n' ' ')"
    return 1
}
stop() { p=$(cat $T/$1.pid); kill -KILL $p 2>/dev/null; wait $p 2>/dev/null; }
freekb() { sync; echo 3 > /proc/sys/vm/drop_caches; sed -n 's/^MemFree:\s*\([0-9]*\) kB/\1/p' /proc/meminfo; }
# The guest mapping is the largest one (both VMMs map guest RAM as one block).
smaps() {
    awk '/^[0-9a-f]+-[0-9a-f]+ / {cur++} /^Size:/ {size[cur]=$2} /^Rss:/ {rss[cur]=$2; t+=$2}
         END {m=0; for (c in size) if (size[c] > size[m]) m=c; print t, rss[m]}' /proc/$1/smaps
}
pss() { sed -n 's/^Pss:\s*\([0-9]*\) kB/\1/p' /proc/$1/smaps_rollup; }

density() {
    who=$1; case=$2; tag="VT-BENCH $who $case"
    echo 0 > $K/run
    base=$(freekb)
    t0=$(cut -d' ' -f1 /proc/uptime)
    i=0; while [ $i -lt $N ]; do start $who d$i $GUEST_MIB $case; i=$((i + 1)); done
    ok=1
    i=0; while [ $i -lt $N ]; do waitready d$i || ok=0; i=$((i + 1)); done
    t1=$(cut -d' ' -f1 /proc/uptime)
    echo "$tag boot_all_s=$(awk "BEGIN { print $t1 - $t0 }")"
    # Settle: the guests idle (and report their free pages, 2 s after freeing).
    sleep 10
    if [ $case != off ]; then
        fs0=$(cat $K/full_scans)
        echo 1 > $K/run
        w=0
        while [ $w -lt $KSM_WAIT ] && [ $(cat $K/full_scans) -lt $((fs0 + 3)) ]; do sleep 2; w=$((w + 2)); done
        echo "$tag ksm_wait_s=$w"
        echo "$tag ksm_full_scans=$(( $(cat $K/full_scans) - fs0 ))"
        echo "$tag ksm_pages_sharing=$(cat $K/pages_sharing)"
        echo "$tag ksm_pages_shared=$(cat $K/pages_shared)"
        # Stop scanning (merged pages stay merged) so reads are not raced.
        echo 0 > $K/run
    fi
    sum=0
    i=0; while [ $i -lt $N ]; do
        p=$(cat $T/d$i.pid)
        set -- $(smaps $p); q=$(pss $p)
        echo "$tag rss_kb=$1"; echo "$tag guest_rss_kb=$2"; echo "$tag overhead_kb=$(($1 - $2))"
        echo "$tag pss_kb=$q"
        sum=$((sum + q)); i=$((i + 1))
    done
    echo "$tag pss_sum_kb=$sum"
    echo "$tag free_drop_kb=$((base - $(freekb)))"
    [ $ok = 1 ] && echo "$tag complete=1"
    i=0; while [ $i -lt $N ]; do stop d$i; i=$((i + 1)); done
    echo 2 > $K/run; echo 0 > $K/run
}

fault() {
    who=$1; case=$2; tag="VT-BENCH $who fault-$case"
    [ $case = nothp ] && echo never > $H
    [ $case = huge ] && echo $((FAULT_MIB / 2 + 4)) > $NR
    start $who f $FAULT_MIB $case "vt.fill=$FILL_MIB"
    if waitready f; then
        for k in fill_kb fill1_ms fill2_ms; do
            echo "$tag $k=$(sed -n "s/.*VT-GUEST $k=\([0-9]*\).*/\1/p" $T/f.log)"
        done
        p=$(cat $T/f.pid)
        echo "$tag anon_huge_kb=$(awk '/^AnonHugePages:/ {s+=$2} END {print s+0}' /proc/$p/smaps)"
        echo "$tag hugetlb_kb=$(sed -n 's/^HugetlbPages:\s*\([0-9]*\) kB/\1/p' /proc/$p/status)"
    fi
    stop f
    echo madvise > $H
    echo 0 > $NR
}

r=0
while [ $r -lt $ROUNDS ]; do
    for c in off on fpr; do density vt $c; density qemu $c; done
    r=$((r + 1))
done
r=0
while [ $r -lt $FAULT_ROUNDS ]; do
    for c in thp nothp huge; do fault vt $c; fault qemu $c; done
    r=$((r + 1))
done
echo "VT-INFO done"

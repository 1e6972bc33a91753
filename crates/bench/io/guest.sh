# The guest half of `vt-bench io` (appended to the initramfs as
# /vt-test.sh): vt-iobench on /dev/vda, then iperf3 against the lab host
# over eth0, both directions.
v() { echo "VT-BENCH $1=$2"; }
secs=5; block=1; net=1
for w in $(cat /proc/cmdline); do
    case "$w" in vt.secs=*) secs=${w#vt.secs=} ;; vt.netonly) block= ;; vt.blockonly) net= ;; esac
done
[ -n "$block" ] && vt-iobench /dev/vda "$secs" 256 | sed 's/^/VT-BENCH /'
[ -n "$net" ] || exit 0
echo "VT-STEP eth0 up"
ip addr add 169.254.20.2/24 dev eth0
ip link set eth0 up
for i in $(seq 50); do ping -c 1 -W 1 169.254.20.1 >/dev/null 2>&1 && break; done
mbits() { awk '/receiver/ {for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i - 1)}'; }
# A stuck transfer must not cost the whole run: bounded, and on failure
# what the guest saw of the NIC is printed.
iperf() { timeout $((secs + 30)) iperf3 -c 169.254.20.1 -t "$secs" -f m "$@" >/tmp/iperf.out 2>&1; }
diag() {
    echo "VT-DIAG $1 failed: $(tail -3 /tmp/iperf.out | tr '\n' ' ')"
    for f in rx_packets tx_packets rx_dropped rx_errors; do
        echo "VT-DIAG eth0 $f=$(cat /sys/class/net/eth0/statistics/$f)"
    done
    for d in /sys/bus/virtio/devices/*; do echo "VT-DIAG ${d##*/} status=$(cat $d/status)"; done
    grep virtio /proc/interrupts | sed 's/^/VT-DIAG /'
}
# What the NIC did during a transfer: interrupts on its receive (input)
# and transmit (output) vectors, packets each way, bytes.
irqs() { awk -v q="$1" '$0 ~ "virtio.*-" q {for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i} END {print n + 0}' /proc/interrupts; }
nstat() { cat /sys/class/net/eth0/statistics/$1; }
counters() { echo "$(irqs input) $(irqs output) $(nstat rx_packets) $(nstat tx_packets) $(nstat rx_bytes) $(nstat tx_bytes)"; }
measure() {
    key=$1; shift
    echo "VT-STEP $key"
    c0=$(counters)
    if iperf "$@"; then
        v "$key" "$(mbits </tmp/iperf.out)"
        set -- $c0 $(counters)
        echo "VT-STAT $key irq_in=$(($7 - $1)) irq_out=$(($8 - $2)) rx_pkts=$(($9 - $3)) tx_pkts=$((${10} - $4)) MB=$(((${11} - $5 + ${12} - $6) >> 20))"
    else
        diag "$key"
    fi
}
measure net_tx_mbits
measure net_rx_mbits -R

# The guest half of `vt-bench hang` (appended to the initramfs as
# /vt-test.sh): BURSTS short iperf3 transfers against the lab host,
# alternating direction, each bounded. Prints `VT-BURST n dir ok|stuck`.
secs=2; bursts=20
for w in $(cat /proc/cmdline); do
    case "$w" in vt.secs=*) secs=${w#vt.secs=} ;; vt.bursts=*) bursts=${w#vt.bursts=} ;; esac
done
ip addr add 169.254.20.2/24 dev eth0
ip link set eth0 up
for i in $(seq 50); do ping -c 1 -W 1 169.254.20.1 >/dev/null 2>&1 && break; done
irqs() { grep virtio /proc/interrupts | tr -s ' ' | tr '\n' ';'; }
n=1
while [ $n -le "$bursts" ]; do
    dir=tx; flag=
    [ $((n % 2)) = 0 ] && { dir=rx; flag=-R; }
    # shellcheck disable=SC2086 # flag is empty or -R
    if timeout $((secs + 20)) iperf3 -c 169.254.20.1 -t "$secs" -f m $flag >/tmp/iperf.out 2>&1; then
        echo "VT-BURST $n $dir ok"
    else
        echo "VT-BURST $n $dir stuck: $(tail -2 /tmp/iperf.out | tr '\n' ' ')"
        echo "VT-BURST-DIAG rx_packets=$(cat /sys/class/net/eth0/statistics/rx_packets) tx_packets=$(cat /sys/class/net/eth0/statistics/tx_packets) irqs=$(irqs)"
    fi
    n=$((n + 1))
done
# What the driver saw go wrong on receive: "rx error: N buffers out of M
# missing" and short frames count as length errors.
st=/sys/class/net/eth0/statistics
echo "VT-BURST-STATS rx_length_errors=$(cat $st/rx_length_errors) rx_errors=$(cat $st/rx_errors) rx_dropped=$(cat $st/rx_dropped)"
echo "VT-BURST done"

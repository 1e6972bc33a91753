# The guest half of `vt-bench io` (appended to the initramfs as
# /vt-test.sh): vt-iobench on /dev/vda, then iperf3 against the lab host
# over eth0, both directions.
v() { echo "VT-BENCH $1=$2"; }
secs=5
for w in $(cat /proc/cmdline); do case "$w" in vt.secs=*) secs=${w#vt.secs=} ;; esac; done
vt-iobench /dev/vda "$secs" 256 | sed 's/^/VT-BENCH /'
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
iperf && v net_tx_mbits "$(mbits </tmp/iperf.out)" || diag net_tx
iperf -R && v net_rx_mbits "$(mbits </tmp/iperf.out)" || diag net_rx

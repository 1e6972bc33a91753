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
v net_tx_mbits "$(iperf3 -c 169.254.20.1 -t "$secs" -f m 2>&1 | mbits)"
v net_rx_mbits "$(iperf3 -c 169.254.20.1 -t "$secs" -f m -R 2>&1 | mbits)"

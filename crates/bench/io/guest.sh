# Runs inside the L2 guest (appended to the initramfs as /vt-test.sh):
# O_DIRECT block throughput and QD1 4 KiB IOPS on /dev/vda, TCP receive
# and send throughput over eth0 against the lab host's httpd.
v() { echo "VT-BENCH $1=$2"; }
now() { cut -d' ' -f1 /proc/uptime; }
rate() { echo "$1 $2 $3" | awk '{ if ($3 > $2) printf "%.1f", $1 / ($3 - $2); else print "inf" }'; }
MB=256
t0=$(now); dd if=/dev/zero of=/dev/vda bs=1M count=$MB oflag=direct 2>/dev/null; t1=$(now)
v seq_write_mbs "$(rate $MB $t0 $t1)"
t0=$(now); dd if=/dev/vda of=/dev/null bs=1M count=$MB iflag=direct 2>/dev/null; t1=$(now)
v seq_read_mbs "$(rate $MB $t0 $t1)"
N=20000
t0=$(now); dd if=/dev/vda of=/dev/null bs=4k count=$N iflag=direct 2>/dev/null; t1=$(now)
v read_4k_iops "$(rate $N $t0 $t1)"
ip addr add 169.254.20.2/24 dev eth0; ip link set eth0 up
for i in $(seq 50); do ping -c 1 -W 1 169.254.20.1 >/dev/null 2>&1 && break; done
t0=$(now); wget -q -O /dev/null http://169.254.20.1:8080/blob; t1=$(now)
v net_rx_mbs "$(rate 128 $t0 $t1)"

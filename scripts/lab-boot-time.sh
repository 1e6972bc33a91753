#!/usr/bin/env bash
# Measure how long the lab takes to come up: boots it N times (default 5) with
# `vt lab run --timing -- true` and prints each time and the median.
# Usage: scripts/lab-boot-time.sh [N]   (builds vt first)
set -euo pipefail
N=${1:-5}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
cargo build -q -p vt
times=()
for _ in $(seq "$N"); do
    t=$(./target/debug/vt lab run --timing -- true 2>&1 | sed -n 's/^vt: lab up in \([0-9.]*\) s.*/\1/p')
    [ -n "$t" ] || { echo "lab-boot-time: a lab run failed" >&2; exit 1; }
    echo "lab up in $t s"
    times+=("$t")
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
echo "median of $N: $median s (load average: $(cut -d' ' -f1-3 /proc/loadavg))"

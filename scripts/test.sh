#!/usr/bin/env bash
# The test command: host set-up, formatting and lint gates, then every test
# (unit tests, tiny guests on this host's /dev/kvm, stock Linux guests on
# hardware virtualization: directly, or in the lab when /dev/kvm is PVM or
# missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh
scripts/guest-artifacts.sh
scripts/guest-image.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace "$@" 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"

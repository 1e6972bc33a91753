#!/usr/bin/env bash
# The test command: host set-up, formatting and lint gates, then every test
# (unit tests, tiny guests on this host's /dev/kvm, stock Linux guests on
# hardware virtualization: directly, or in the lab when /dev/kvm is PVM or
# missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh
scripts/guest-artifacts.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
cargo test --workspace "$@"

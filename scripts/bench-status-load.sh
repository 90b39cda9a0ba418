#!/usr/bin/env bash
# Measures whether load on the status endpoint slows the daemon: change latency and reconcile
# pass time at 1,000 stub tenants, at rest and while wrk hammers /v1/tenants
# (benches/status_load.py). Release builds. Prints a Markdown table for docs/benchmarks.md.
#
# Usage: scripts/bench-status-load.sh [TENANTS] [REPEATS]      (defaults 1000 20)
# Needs: wrk (apt-get install -y wrk), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "bench-status-load: wrk is missing (apt-get install -y wrk)" >&2; exit 1; }
cargo build --release --locked --bin flowhq --bin flowhq-stub-worker >&2
exec python3 benches/status_load.py \
  --flowhq "$PWD/target/release/flowhq" \
  --stub "$PWD/target/release/flowhq-stub-worker" \
  --tenants "${1:-1000}" --repeats "${2:-20}"

#!/usr/bin/env bash
# Benchmark: flowhq following a local config repository of N tenants (default 1000) with the
# stub worker: cold convergence from the first fetch, latency from SIGHUP after a pushed commit
# to the new tenant's worker running, one commit changing 200 files, idle CPU and RSS.
# Builds the release binaries, runs benches/gitops.py, keeps the raw numbers in
# target/bench-gitops/results.json. Needs ~4 GB of memory for 1,000 stub workers.
# Usage: scripts/bench-gitops.sh [N] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-1000}
repeats=${2:-20}
cargo build --release --locked --bin flowhq --bin flowhq-stub-worker
ulimit -n "$(ulimit -Hn)"
ulimit -u unlimited 2>/dev/null || true
out=target/bench-gitops
mkdir -p "$out"
python3 benches/gitops.py \
  --flowhq "$PWD/target/release/flowhq" \
  --stub "$PWD/target/release/flowhq-stub-worker" \
  --tenants "$n" --repeats "$repeats" \
  --out "$PWD/$out" | tee "$out.log"

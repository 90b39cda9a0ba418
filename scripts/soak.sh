#!/usr/bin/env bash
# A long soak of the release daemon: TENANTS stub tenants (default 200) for MINUTES minutes of
# file churn (default 30): bot-field edits, process-field edits, deletions, additions, broken
# edits and repairs. Samples the daemon's RSS, open descriptors, database connections and the
# worker count every few seconds into a CSV, prints a summary and fails when memory,
# descriptors or connections grow (see tests/system/soak.rs for the exact rules). CI runs the same
# test for 90 s with the debug build.
# Usage: scripts/soak.sh [tenants] [minutes] [sqlite|postgres]
# PostgreSQL needs FLOWHQ_TEST_PG_URL (e.g. from scripts/pg.sh start).
set -euo pipefail
cd "$(dirname "$0")/.."

tenants=${1:-200}
minutes=${2:-30}
backend=${3:-sqlite}
out=${FLOWHQ_SOAK_OUT:-target/soak}
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
csv="$PWD/$out/soak-$backend-$tenants-${minutes}m-$stamp.csv"
summary="${csv%.csv}.txt"

# Room for 200+ workers and their descriptors.
ulimit -n "$(ulimit -Hn)" || true

# The daemon and the stub workers are the release build; the sampling harness need not be.
cargo build --release --locked --bin flowhq --bin flowhq-stub-worker
FLOWHQ_TEST_BIN_DIR=$PWD/target/release \
FLOWHQ_SOAK_TENANTS=$tenants \
FLOWHQ_SOAK_SECS=$((minutes * 60)) \
FLOWHQ_SOAK_SAMPLE_SECS=${FLOWHQ_SOAK_SAMPLE_SECS:-10} \
FLOWHQ_SOAK_DB=$backend \
FLOWHQ_SOAK_CSV=$csv \
FLOWHQ_SOAK_SUMMARY=$summary \
  cargo test --locked --test system -- soak:: --nocapture
echo "samples: $csv"
echo "summary: $summary"

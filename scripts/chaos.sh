#!/usr/bin/env bash
# The chaos test (tests/system/chaos.rs) run by hand for longer than CI does, with its figures printed
# at the end (the table in docs/reliability.md comes from such a run).
#   scripts/chaos.sh [seconds] [seed]      defaults: 600 seconds of faults, a fresh seed
# Debug build, like CI: the point is the daemon's behaviour under faults, not its speed, and a
# release build costs many minutes on a small machine. It starts a throwaway PostgreSQL on
# FLOWHQ_PG_PORT (default 55432) only to satisfy the PostgreSQL gate; the faults hit a cluster
# of the test's own on a free port. Needs Chromium and the PostgreSQL server binaries
# (scripts/deps.sh test installs them). FLOWHQ_CHAOS_SOURCE=dir|git picks where tenant files
# come from (default: the seed's parity).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-600}
seed=${2:-}

pg_url=$(scripts/pg.sh start)
trap 'scripts/pg.sh stop' EXIT
export FLOWHQ_TEST_PG_URL="$pg_url"
export FLOWHQ_REQUIRE_EXTERNAL=1
export FLOWHQ_CHAOS_SECS="$secs"
if [ -n "$seed" ]; then
  export FLOWHQ_CHAOS_SEED="$seed"
fi
cargo test --locked --test system -- chaos:: --include-ignored --nocapture

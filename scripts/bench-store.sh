#!/usr/bin/env bash
# State store benchmarks (release build): message-log insert throughput, single and batched, and
# the status snapshot at 1,000 tenants, on SQLite and on a throwaway PostgreSQL.
# Prints a Markdown table; docs/benchmarks.md keeps the latest results.
#   FLOWHQ_PG_PORT=55432 scripts/bench-store.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${FLOWHQ_TEST_PG_URL:-}" ]; then
  FLOWHQ_TEST_PG_URL=$(scripts/pg.sh start)
  trap 'scripts/pg.sh stop' EXIT
fi
export FLOWHQ_TEST_PG_URL

echo "machine: $(nproc) cores, $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cargo bench --locked --bench store

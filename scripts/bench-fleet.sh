#!/usr/bin/env bash
# Benchmark: fleet mode with running daemons. Failover time when the node holding 100 tenants
# is killed with SIGKILL (production and short lease settings), the database statements per
# second of one node at 30 and at 300 tenants at rest, and the tenants moved when a fourth
# node joins a three-node fleet of 300 tenants under a rebalancing budget. Builds the release
# binaries, starts a throwaway PostgreSQL cluster of its own (scripts/pg.sh on its own port
# and directory; never the test cluster), runs benches/fleet.py against it, stops and removes
# the cluster. Raw numbers go to target/bench-fleet/results.json, the run's log to
# target/bench-fleet.log. A full run takes about 12 minutes plus the release build.
# Usage: scripts/bench-fleet.sh [benches/fleet.py options, e.g. --runs 1 --only failover]
set -euo pipefail
cd "$(dirname "$0")/.."

export FLOWHQ_PG_PORT=${FLOWHQ_BENCH_PG_PORT:-55961}
export FLOWHQ_PG_DIR=${FLOWHQ_BENCH_PG_DIR:-/tmp/flowhq-pg-bench-fleet-$FLOWHQ_PG_PORT}
if [ "$FLOWHQ_PG_PORT" = 55999 ]; then
  echo "bench-fleet: port 55999 is the test cluster; pick another FLOWHQ_BENCH_PG_PORT" >&2
  exit 64
fi

cargo build --release --locked --bins

# Hundreds of workers and their pipes.
ulimit -n "$(ulimit -Hn)"

out=target/bench-fleet
mkdir -p "$out"
url=$(scripts/pg.sh start)
# Every worker holds up to two connections (three while it starts), so 300 tenants on one node
# need more than pg.sh's 400: the cluster is restarted with the same options and a higher limit.
max_conn=${FLOWHQ_BENCH_PG_MAX_CONNECTIONS:-1000}
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg=()
[ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
"${as_pg[@]}" "$bindir/pg_ctl" -D "$FLOWHQ_PG_DIR/data" -l "$FLOWHQ_PG_DIR/server.log" -w -t 30 \
  -o "-p $FLOWHQ_PG_PORT -k $FLOWHQ_PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=$max_conn" \
  restart >/dev/null
# Whatever happens, the cluster of this run does not outlive it (the driver kills its own
# daemons and workers by pid).
cleanup() {
  scripts/pg.sh stop
  rm -rf "$FLOWHQ_PG_DIR"
}
trap cleanup EXIT

python3 benches/fleet.py \
  --flowhq "$PWD/target/release/flowhq" \
  --stub "$PWD/target/release/flowhq-stub-worker" \
  --pg-url "$url" \
  --pg-log "$FLOWHQ_PG_DIR/server.log" \
  --out "$PWD/$out" "$@" | tee "$out.log"

#!/usr/bin/env bash
# Benchmark: flowhq, PM2 and supervisord side by side, managing the same stub workers
# (target/release/flowhq-stub-worker): cold convergence of 100 and N tenants, latency from an
# operator's change to the new worker running (add) and to a removed tenant's worker gone
# (remove), replacement of a kill -9'd worker, the manager's idle CPU and RSS, all at N tenants
# (default 1000), and for flowhq a burst of 100 new files (time and passes). Installs PM2 (npm) and supervisor
# (PyPI) under target/bench-tools when missing, builds the release binaries, runs
# benches/daemon.py, prints a table and keeps the raw numbers in target/bench-daemon/results.json.
# A full run takes about 16 minutes (10 with REPEATS=30) plus the release build, and needs
# ~4 GB of memory for the 1,000 stub workers.
# Usage: scripts/bench-daemon.sh [N] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-1000}
repeats=${2:-50}

tools=target/bench-tools
pm2=$tools/npm/node_modules/.bin/pm2
venv=$tools/venv
if [ ! -x "$pm2" ]; then
  mkdir -p "$tools/npm"
  npm install --prefix "$tools/npm" --no-audit --no-fund pm2 >/dev/null
fi
if [ ! -x "$venv/bin/supervisord" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet supervisor
fi
cargo build --release --locked --bin flowhq --bin flowhq-stub-worker

# One descriptor set per worker in each manager, plus pipes: far above the usual 1024.
ulimit -n "$(ulimit -Hn)"
ulimit -u unlimited 2>/dev/null || true

out=target/bench-daemon
# Whatever happens, no manager or worker of this run is left behind.
cleanup() {
  PM2_HOME="$PWD/$out/run/pm2-$n/pm2home" "$pm2" kill -s >/dev/null 2>&1 || true
  PM2_HOME="$PWD/$out/run/pm2-100/pm2home" "$pm2" kill -s >/dev/null 2>&1 || true
}
trap cleanup EXIT

python3 benches/daemon.py \
  --flowhq "$PWD/target/release/flowhq" \
  --stub "$PWD/target/release/flowhq-stub-worker" \
  --pm2 "$PWD/$pm2" \
  --supervisord "$PWD/$venv/bin/supervisord" \
  --supervisorctl "$PWD/$venv/bin/supervisorctl" \
  --python "$(readlink -f "$venv/bin/python3")" \
  --tenants "$n" --repeats "$repeats" \
  --out "$PWD/$out" | tee "$out.log"


#!/usr/bin/env bash
# Long fuzzing campaigns over the tenant file loader, the daemon config loader and the status
# endpoint (tests/config/fuzz.rs), beyond the short run CI does on every `cargo test`. Each round runs
# every property with CASES cases from fresh random seeds; rounds repeat until MINUTES have
# passed. A failure stops the campaign; proptest has then shrunk it and saved it in
# tests/config/fuzz.proptest-regressions (commit that file: every later run replays it first).
# Usage: scripts/fuzz.sh [cases-per-property] [minutes] [test-name-filter]
set -euo pipefail
cd "$(dirname "$0")/.."

cases=${1:-20000}
minutes=${2:-10}
filter=${3:-}

cargo test --release --locked --test config --no-run
end=$(($(date +%s) + minutes * 60))
round=0
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  echo "== round $round: $cases cases per property"
  # The fuzz module of the config tests binary, narrowed by the filter when one is given.
  FLOWHQ_FUZZ_CASES=$cases cargo test --release --locked --test config -- \
    --skip config_check:: --skip config_fixtures:: $filter
done
echo "fuzz: $round rounds of $cases cases per property, no failure"

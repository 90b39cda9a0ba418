#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, starts a throwaway PostgreSQL,
# runs lints and every test against real PostgreSQL, SQLite, Chromium and processes, then stops
# what it started. Tests that need PostgreSQL, Chromium, nginx or root are `#[ignore = "needs
# ..."]`, so a plain `cargo test` lists them as not run; this script runs them all
# (`--include-ignored`). Usage: scripts/test.sh [extra cargo test args [-- test binary args]]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh test

pg_url=$(scripts/pg.sh start)
trap 'scripts/pg.sh stop' EXIT
export FLOWHQ_TEST_PG_URL="$pg_url"
# The CA the cluster's TLS certificate verifies against (tests/store/tls.rs); empty when the
# cluster runs without TLS, which those tests then report.
FLOWHQ_TEST_PG_CA=$(scripts/pg.sh ca) || FLOWHQ_TEST_PG_CA=
export FLOWHQ_TEST_PG_CA
# Tests that need PostgreSQL or Chromium fail (never skip) when this is set.
export FLOWHQ_REQUIRE_EXTERNAL=1

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== man pages"
for page in man/*.[1-8]; do
  [ -e "$page" ] || continue
  mandoc -T lint -W warning "$page"
done
echo "== example tenants"
cargo run --quiet --locked -- check tenants.d
echo "== tests"
log=$(mktemp)
trap 'scripts/pg.sh stop; rm -f "$log"' EXIT
args=("$@")
case " ${args[*]} " in
  *" -- "*) args+=(--include-ignored) ;;
  *) args+=(-- --include-ignored) ;;
esac
cargo test --locked "${args[@]}" 2>&1 | tee "$log"
# The tests that drive a real browser ran on Chromium; the worker tests run again on Debian's
# chromium-headless-shell, the browser `[worker] browser = "auto"` prefers (a missing one
# fails them, as FLOWHQ_REQUIRE_EXTERNAL=1 is set). Skipped when arguments narrowed the run.
if [ $# -eq 0 ]; then
  echo "== worker tests on chromium-headless-shell"
  FLOWHQ_TEST_BROWSER=headless-shell cargo test --locked --test worker -- --include-ignored 2>&1 \
    | tee -a "$log"
fi
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"

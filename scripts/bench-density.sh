#!/usr/bin/env bash
# Density benchmark: N real workers (flowhq worker + its browser) under one `flowhq daemon`, on
# the offline fake WhatsApp Web (tests/fixtures/wa-web, served at https://web.whatsapp.com/ by
# the version pin; no network), each linked through the fake's scripted control and idle. Once
# every tenant is ACTIVE and the host settled, it sums PSS (/proc/PID/smaps_rollup) over each
# worker's process tree (and USS, what stopping it would give back), reads how much
# MemAvailable fell (noisy on a shared machine), and prints a Markdown table for
# docs/worker-memory.md with the implied tenants per 24 GiB. Measures, asserts nothing.
#
# Usage: scripts/bench-density.sh [N] [BROWSER]
#   N        workers (default 30)
#   BROWSER  `headless-shell` (default) or `chromium`: the `[worker] browser` of the run
# Env: FLOWHQ_BENCH_SETTLE (seconds idle before measuring, default 60), FLOWHQ_BENCH_RELEASE=1
# (release build of flowhq instead of the debug one). Needs the browser installed
# (scripts/deps.sh) and about N x 300 MiB of memory. Every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-30}
browser=${2:-headless-shell}
settle=${FLOWHQ_BENCH_SETTLE:-60}
case "$browser" in
  chromium | headless-shell) ;;
  *) echo "bench-density: BROWSER must be chromium or headless-shell, not $browser" >&2; exit 2 ;;
esac

if [ "${FLOWHQ_BENCH_RELEASE:-0}" = 1 ]; then
  cargo build --release --locked --bin flowhq >&2
  bin=$PWD/target/release/flowhq
else
  cargo build --locked --bin flowhq >&2
  bin=$PWD/target/debug/flowhq
fi

root=$PWD/target/bench-density/$browser-$n
rm -rf "$root"
mkdir -p "$root/tenants" "$root/site" "$root/state"

# The fake: one long-lived QR, and a scripted scan every page runs once (remembered per profile).
cp tests/fixtures/wa-web/index.html "$root/site/"
echo 'window.__fakeWaConfig = {qrIntervalMs: 600000, controlPollMs: 2000};' >"$root/site/fake-config.js"
echo '{"id": "scan", "call": "scanQr", "args": {"pn": "255700000001", "pushname": "Bench"}, "when": "UNPAIRED"}' \
  >"$root/site/fake-control.json"

for i in $(seq 1 "$n"); do
  cat >"$root/tenants/bench-$(printf %03d "$i").toml" <<EOF
business_name = "Bench $i"
phone = "+2547$(printf %08d "$i")"
template = "support"
language = "en"
enabled = true
timezone = "Africa/Nairobi"
EOF
done

cat >"$root/flowhq.toml" <<EOF
tenants_dir = "$root/tenants"
state_dir = "$root/state"
database_url = "sqlite://$root/state/flowhq.db"
[status]
listen = "127.0.0.1:0"
[worker]
command = ["$bin", "worker"]
browser = "$browser"
wa_web_index = "$root/site/index.html"
EOF

avail_kib() { awk '/^MemAvailable:/ { print $2 }' /proc/meminfo; }
# Every live descendant of a pid, the pid first.
tree() {
  echo "$1"
  local c
  for c in $(pgrep -P "$1" || true); do tree "$c"; done
}
# The sum over pids of one /proc/PID/smaps_rollup figure: `^Pss:`, or USS
# (`^Private_(Clean|Dirty):`).
rollup_kib() {
  local key=$1 sum=0 p v
  shift
  for p in "$@"; do
    v=$(awk -v k="$key" '$0 ~ k { s += $2 } END { print s + 0 }' "/proc/$p/smaps_rollup" 2>/dev/null || true)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
pss_kib() { rollup_kib '^Pss:' "$@"; }
uss_kib() { rollup_kib '^Private_(Clean|Dirty):' "$@"; }

avail_before=$(avail_kib)
"$bin" daemon --config "$root/flowhq.toml" >"$root/daemon.log" 2>&1 &
daemon=$!
stop() {
  if kill -0 "$daemon" 2>/dev/null; then
    kill -TERM "$daemon"
    for _ in $(seq 1 120); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$daemon" 2>/dev/null || true
  fi
  # Anything still carrying one of this run's profiles (nothing, when the daemon stopped cleanly).
  local p
  for p in $(pgrep -f -- "--user-data-dir=$root/state/sessions/" || true); do
    kill -KILL "$p" 2>/dev/null || true
  done
}
trap stop EXIT

started=$(date +%s)
active=0
while :; do
  active=$("$bin" status --config "$root/flowhq.toml" --json 2>/dev/null |
    python3 -c 'import json, sys
d = json.load(sys.stdin)
rows = d if isinstance(d, list) else d.get("tenants", [])
print(sum(1 for t in rows if t.get("status") == "ACTIVE"))' 2>/dev/null || echo 0)
  [ "$active" -ge "$n" ] && break
  if [ $(($(date +%s) - started)) -gt $((60 + n * 20)) ]; then
    echo "bench-density: only $active of $n tenants ACTIVE after $(($(date +%s) - started)) s" >&2
    exit 1
  fi
  sleep 5
done
to_active=$(($(date +%s) - started))
echo "bench-density: $n tenants ACTIVE after ${to_active} s; settling ${settle} s" >&2
sleep "$settle"

# The daemon's children: the workers, and helpers that left their parent and were adopted by the
# daemon (a child subreaper), like Chromium's crash handlers; those count as browser memory.
total=0 browsers=0 own=0 procs=0 count=0 uss=0
for c in $(pgrep -P "$daemon" || true); do
  all=$(tree "$c")
  set -- $all
  procs=$((procs + $#))
  t=$(pss_kib "$@")
  uss=$((uss + $(uss_kib "$@")))
  total=$((total + t))
  if tr '\0' ' ' <"/proc/$c/cmdline" | grep -q -- ' worker --tenant '; then
    o=$(pss_kib "$c")
    own=$((own + o))
    browsers=$((browsers + t - o))
    count=$((count + 1))
  else
    browsers=$((browsers + t))
  fi
done
daemon_pss=$(pss_kib "$daemon")
avail_after=$(avail_kib)
load=$(cut -d' ' -f1-3 /proc/loadavg)
version=$("$bin" --version)

python3 - "$n" "$browser" "$count" "$procs" "$total" "$own" "$browsers" "$daemon_pss" \
  "$((avail_before - avail_after))" "$uss" "$to_active" "$settle" "$load" "$version" <<'EOF'
import sys
n, browser, count, procs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
total, own, browsers, daemon, avail, uss = (int(v) / 1024 for v in sys.argv[5:11])
to_active, settle, load, version = sys.argv[11:15]
per = total / count
host = 24 * 1024
print(f"{version}, browser `{browser}`, {count} workers ({procs} processes), ACTIVE after {to_active} s, "
      f"measured {settle} s later, load average {load}")
print()
print("| workers | PSS per tenant (worker + browser) | worker | browser | USS per tenant | daemon | MemAvailable drop per tenant | tenants per 24 GiB (PSS, 2 GiB kept for the system) |")
print("|---|---|---|---|---|---|---|---|")
print(f"| {count} | {per:.0f} MiB | {own / count:.1f} MiB | {browsers / count:.0f} MiB | {uss / count:.0f} MiB "
      f"| {daemon:.0f} MiB | {avail / count:.0f} MiB | {int((host - 2048 - daemon) / per)} |")
EOF

#!/usr/bin/env bash
# Benchmark: `flowhq check` loading and validating N generated tenant files (default 10,000) on
# one core, with the release binary. Prints the timings and records them in the config section
# of docs/benchmarks.md. Usage: scripts/bench-config.sh [N] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-10000}
runs=${2:-7}
cargo build --release --locked --bin flowhq
bin=target/release/flowhq

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# Realistic files: the three templates, both languages, opening hours on two thirds of them,
# reply overrides with placeholders, every phone number distinct.
for ((i = 0; i < n; i++)); do
  case $((i % 3)) in
    0) tpl=booking lang=sw ;;
    1) tpl=ecommerce lang=sw ;;
    *) tpl=support lang=en ;;
  esac
  {
    printf 'business_name = "Business %d"\n' "$i"
    printf 'phone = "+2557%08d"\n' "$i"
    printf 'template = "%s"\nlanguage = "%s"\n' "$tpl" "$lang"
    printf 'timezone = "Africa/Dar_es_Salaam"\n'
    if ((i % 3 != 1)); then
      printf '\n[hours]\nmon = "08:00-18:00"\ntue = "08:00-18:00"\nwed = "08:00-18:00"\n'
      printf 'thu = "08:00-18:00"\nfri = "08:00-12:30, 14:00-18:00"\nsat = "09:00-13:00"\nsun = "closed"\n'
    fi
    printf '\n[limits]\nreplies_per_minute = 10\nreplies_per_contact_per_10min = 20\n'
    printf '\n[replies]\n%s.menu = "Karibu {business}. 1) Miadi 2) Huduma 3) Bei 4) Mawasiliano"\n' "$lang"
    printf '%s.closed = "{business} is closed. We open {opens}."\n' "$lang"
  } >"$dir/tenant-$i.toml"
done
bytes=$(cat "$dir"/*.toml | wc -c)

# The run must be clean, or the numbers measure the error path.
"$bin" check "$dir" | tail -n 1

pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)
times=()
for ((r = 0; r < runs; r++)); do
  start=$(date +%s%N)
  "${pin[@]}" "$bin" check "$dir" >/dev/null
  end=$(date +%s%N)
  times+=($(((end - start) / 1000000)))
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
best=$(echo "$sorted" | head -n 1)
median=$(echo "$sorted" | sed -n "$(((runs + 1) / 2))p")
worst=$(echo "$sorted" | tail -n 1)
echo "flowhq check, $n files ($bytes bytes), $runs runs on one core: best ${best} ms, median ${median} ms, worst ${worst} ms"

load=$(cut -d" " -f1 /proc/loadavg)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //' || echo unknown)
section=$(
  cat <<MD
<!-- bench-config:start -->
## Config: loading and validating tenant files

Command: \`scripts/bench-config.sh $n $runs\` (release build; \`flowhq check DIR\` pinned to one core
with \`taskset -c 0\`, wall time of the whole process, page cache warm).
The files are generated: three templates, both languages, hours on two thirds, two reply
overrides each, distinct phones; $n files, $bytes bytes. Target: under 1 s.

| measured | files | best | median | worst |
|---|---|---|---|---|
| $(date -u +%Y-%m-%d), $(git rev-parse --short HEAD), ${cpu}, $(nproc) cores shared (load average ${load}) | $n | ${best} ms | ${median} ms | ${worst} ms |
<!-- bench-config:end -->
MD
)
doc=docs/benchmarks.md
[ -e "$doc" ] || printf '# Benchmarks\n\nNumbers measured on the project machine by the scripts named in each section.\n' >"$doc"
if grep -q '<!-- bench-config:start -->' "$doc"; then
  awk -v section="$section" '
    /<!-- bench-config:start -->/ { print section; skip = 1; next }
    /<!-- bench-config:end -->/ { skip = 0; next }
    !skip { print }
  ' "$doc" >"$doc.tmp"
  mv "$doc.tmp" "$doc"
else
  printf '\n%s\n' "$section" >>"$doc"
fi
echo "recorded in $doc"

#!/usr/bin/env bash
# Benchmarks the status endpoint: requests per second on /healthz and /v1/tenants (1,000
# tenants) measured with wrk from a second process, next to nginx serving the same bytes as
# static files in the same run: plain, and gzipped for clients that send
# `Accept-Encoding: gzip` (the endpoint compresses once per snapshot; nginx serves a
# pre-compressed copy with gzip_static). Prints a Markdown table for docs/benchmarks.md.
#
# Usage: scripts/bench-status.sh            (DURATION=10s CONNECTIONS=64 THREADS=2 TENANTS=1000)
# Needs: wrk, nginx, curl (installed with apt-get when missing and running as root).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
TENANTS=${TENANTS:-1000}

need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y "$2" >/dev/null
    else
        echo "bench-status: $1 is missing (apt-get install -y $2)" >&2
        exit 1
    fi
}
need wrk wrk
need curl curl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { need nginx nginx; NGINX=$(command -v nginx || echo /usr/sbin/nginx); }

cargo build --release --example status_bench >&2

work=$(mktemp -d)
# nginx workers run as an unprivileged user: let them read the files they serve.
chmod 755 "$work"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    [ -f "$work/nginx.pid" ] && kill -QUIT "$(cat "$work/nginx.pid")" 2>/dev/null || true
    sleep 0.3
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench-status: nothing answers on port $1" >&2
    exit 1
}

status_port=$(free_port)
nginx_port=$(free_port)

target/release/examples/status_bench "127.0.0.1:$status_port" "$TENANTS" >/dev/null &
server_pid=$!
wait_port "$status_port"

# nginx serves exactly the bytes the endpoint serves.
mkdir -p "$work/www/v1"
curl -fs "http://127.0.0.1:$status_port/v1/tenants" -o "$work/www/v1/tenants"
curl -fs "http://127.0.0.1:$status_port/healthz" -o "$work/www/healthz"
curl -fs -H 'Accept-Encoding: gzip' "http://127.0.0.1:$status_port/v1/tenants" \
    -o "$work/www/v1/tenants.gz"
json_bytes=$(stat -c %s "$work/www/v1/tenants")
gz_bytes=$(stat -c %s "$work/www/v1/tenants.gz")

cat >"$work/nginx.conf" <<NGINX
daemon on;
worker_processes 2;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 1024; }
http {
    client_body_temp_path $work/cb; proxy_temp_path $work/px; fastcgi_temp_path $work/fc;
    uwsgi_temp_path $work/uw; scgi_temp_path $work/sc;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {
        listen 127.0.0.1:$nginx_port;
        root $work/www;
        default_type application/json;
        gzip_static on;
    }
}
NGINX
"$NGINX" -p "$work" -e "$work/error.log" -c "$work/nginx.conf"
wait_port "$nginx_port"

# CPU time (clock ticks) used so far by the given processes.
cpu_ticks() {
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
TICK=$(getconf CLK_TCK)

# measure URL PID... -> "rps latency_avg latency_p99 non2xx cpu_us_per_request"
# (with GZIP=1 in the environment, requests send Accept-Encoding: gzip)
measure() {
    local url=$1 out rps lat p99 bad reqs before after
    local -a hdr=()
    [ "${GZIP:-0}" = 1 ] && hdr=(-H 'Accept-Encoding: gzip')
    shift
    before=$(cpu_ticks "$@")
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${hdr[@]}" "$url")
    after=$(cpu_ticks "$@")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    lat=$(awk '/^ +Latency / {print $2; exit}' <<<"$out")
    p99=$(awk '/^ +99% / {print $2; exit}' <<<"$out")
    bad=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1; exit}' <<<"$out")
    cpu=$(awk -v t="$((after - before))" -v hz="$TICK" -v n="$reqs" \
        'BEGIN { printf "%.0f", t * 1000000 / hz / n }')
    echo "$rps ${lat:-?} ${p99:-?} ${bad:-0} $cpu"
}

row() {
    local name=$1 ours=$2 theirs=$3
    read -r o_rps o_lat o_p99 o_bad o_cpu <<<"$ours"
    read -r n_rps n_lat n_p99 n_bad n_cpu <<<"$theirs"
    ratio=$(awk -v a="$o_rps" -v b="$n_rps" 'BEGIN { printf "%.2f", a / b }')
    echo "| $name | $o_rps | $o_lat / $o_p99 | $o_cpu µs | $n_rps | $n_lat / $n_p99 | $n_cpu µs | $ratio | $o_bad / $n_bad |"
}

# Warm both up, then measure each pair back to back.
wrk -t1 -c4 -d1s "http://127.0.0.1:$status_port/v1/tenants" >/dev/null
wrk -t1 -c4 -d1s "http://127.0.0.1:$nginx_port/v1/tenants" >/dev/null
nginx_workers=$(pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' ')
# shellcheck disable=SC2086 # one argument per worker pid
{
    h_ours=$(measure "http://127.0.0.1:$status_port/healthz" "$server_pid")
    h_nginx=$(measure "http://127.0.0.1:$nginx_port/healthz" $nginx_workers)
    t_ours=$(measure "http://127.0.0.1:$status_port/v1/tenants" "$server_pid")
    t_nginx=$(measure "http://127.0.0.1:$nginx_port/v1/tenants" $nginx_workers)
    z_ours=$(GZIP=1 measure "http://127.0.0.1:$status_port/v1/tenants" "$server_pid")
    z_nginx=$(GZIP=1 measure "http://127.0.0.1:$nginx_port/v1/tenants" $nginx_workers)
}

# Both must really have sent the compressed bytes.
for port in "$status_port" "$nginx_port"; do
    enc=$(curl -fsS -o /dev/null -w '%header{content-encoding}' -H 'Accept-Encoding: gzip' \
        "http://127.0.0.1:$port/v1/tenants")
    [ "$enc" = gzip ] || { echo "bench-status: port $port did not gzip ($enc)" >&2; exit 1; }
done

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $TENANTS tenants, /v1/tenants = $json_bytes bytes ($gz_bytes gzipped), $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| route | flowhq req/s | flowhq latency avg / p99 | flowhq CPU per request | nginx static req/s | nginx latency avg / p99 | nginx CPU per request | ratio | non-2xx (flowhq / nginx) |"
echo "|---|---|---|---|---|---|---|---|---|"
row "/healthz" "$h_ours" "$h_nginx"
row "/v1/tenants" "$t_ours" "$t_nginx"
row "/v1/tenants (gzip)" "$z_ours" "$z_nginx"

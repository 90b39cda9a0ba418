#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a loopback port, for tests and benchmarks only.
# It is never the system cluster: its data lives under $FLOWHQ_PG_DIR (default /tmp/flowhq-pg-PORT).
#   scripts/pg.sh start   -> prints the admin URL (postgres://postgres@127.0.0.1:PORT/postgres)
#   scripts/pg.sh stop
#   scripts/pg.sh url
set -euo pipefail

# Not under the checkout: the postgres user must reach it, and a checkout may sit in a 0700 folder.
dir=${FLOWHQ_PG_DIR:-/tmp/flowhq-pg-${FLOWHQ_PG_PORT:-55432}}
port=${FLOWHQ_PG_PORT:-55432}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bindir" ] || { echo "pg: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
url="postgres://postgres@127.0.0.1:${port}/postgres"

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    # initdb and postgres refuse to run as root.
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "${1:-}" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_pg "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if ! as_pg "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
        start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    fi
    echo "$url"
    ;;
  stop)
    if [ -f "$dir/data/PG_VERSION" ]; then
      as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
  url)
    echo "$url"
    ;;
  *)
    echo "usage: scripts/pg.sh start|stop|url" >&2
    exit 64
    ;;
esac

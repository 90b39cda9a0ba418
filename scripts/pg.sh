#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a loopback port, for tests and benchmarks only.
# It is never the system cluster: its data lives under $FLOWHQ_PG_DIR (default /tmp/flowhq-pg-PORT).
#   scripts/pg.sh start   -> prints the admin URL (postgres://postgres@127.0.0.1:PORT/postgres)
#   scripts/pg.sh stop
#   scripts/pg.sh url
#   scripts/pg.sh ca      -> prints the path of the CA certificate the server's TLS certificate
#                            verifies against (fails when the running server has no TLS)
# The server takes plain and TLS connections alike: when it starts, a throwaway CA and a server
# certificate for 127.0.0.1 and localhost are made under $dir/tls unless they are there already
# (a cluster already running without them keeps running as it is: it is never restarted).
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

tls="$dir/tls"

# A throwaway CA (ca.crt, ca.key) and a server certificate signed by it (server.crt,
# server.key) for 127.0.0.1 and localhost, readable by the postgres user only.
make_tls() {
  local tmp="$dir/tls.new"
  command -v openssl >/dev/null || { echo "pg: openssl not found (scripts/deps.sh test)" >&2; exit 1; }
  rm -rf "$tmp"
  mkdir -p "$tmp"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$tmp/ca.key" -out "$tmp/ca.crt" -days 3650 \
    -subj "/CN=flowhq throwaway test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req "${ec[@]}" -keyout "$tmp/server.key" -out "$tmp/server.csr" \
    -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$tmp/server.ext"
  openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
    -set_serial "0x$(openssl rand -hex 8)" -days 3650 -extfile "$tmp/server.ext" \
    -out "$tmp/server.crt" 2>/dev/null
  rm -f "$tmp/server.csr" "$tmp/server.ext"
  chmod 600 "$tmp/ca.key" "$tmp/server.key"
  chmod 644 "$tmp/ca.crt" "$tmp/server.crt"
  [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$tmp"
  mv "$tmp" "$tls"
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
      [ -f "$tls/server.crt" ] || make_tls
      ssl="-c ssl=on -c ssl_cert_file=$tls/server.crt -c ssl_key_file=$tls/server.key"
      as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 $ssl" \
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
  ca)
    # postmaster.opts holds the options the running (or last) server was started with.
    if [ -f "$tls/ca.crt" ] && grep -q -- "ssl=on" "$dir/data/postmaster.opts" 2>/dev/null; then
      echo "$tls/ca.crt"
    else
      echo "pg: the cluster in $dir was not started with TLS (stop and start it with scripts/pg.sh)" >&2
      exit 1
    fi
    ;;
  *)
    echo "usage: scripts/pg.sh start|stop|url|ca" >&2
    exit 64
    ;;
esac

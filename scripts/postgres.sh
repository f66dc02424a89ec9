#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the fleet-store tests, on a loopback port, run by an
# unprivileged user (initdb and postgres refuse root).
#   scripts/postgres.sh start    prints `DIR URL`: the data directory and the admin URL
#   scripts/postgres.sh stop DIR stops that cluster and removes its directory
#   scripts/postgres.sh pause DIR / resume DIR   stops it keeping its data, starts it again
set -euo pipefail

bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [ -x "$dir/initdb" ] || { echo "PostgreSQL is not installed (Debian package postgresql)" >&2; exit 1; }
  echo "$dir"
}

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_cluster() {
  as_owner "$1/pg_ctl" -D "$2/data" -l "$2/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $(cat "$2/port") -k $2 -c max_connections=200 -c fsync=off" start >/dev/null \
    || { cat "$2/server.log" >&2; exit 1; }
}

case "${1:-}" in
  start)
    bin="$(bindir)"
    dir="$(mktemp -d /tmp/opamp-gitops-pg.XXXXXX)"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    password="$(head -c 18 /dev/urandom | base64 | tr -d '+/=')"
    printf '%s\n' "$password" > "$dir/password"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/password"
    as_owner "$bin/initdb" -D "$dir/data" -U opamp --pwfile="$dir/password" \
      --auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    echo "$port" > "$dir/port"
    start_cluster "$bin" "$dir"
    echo "$dir postgres://opamp:$password@127.0.0.1:$port/postgres"
    ;;
  stop)
    dir="${2:?usage: postgres.sh stop DIR}"
    as_owner "$(bindir)/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  pause)
    as_owner "$(bindir)/pg_ctl" -D "${2:?usage: postgres.sh pause DIR}/data" -m fast -w stop >/dev/null
    ;;
  resume)
    start_cluster "$(bindir)" "${2:?usage: postgres.sh resume DIR}"
    ;;
  *) echo "usage: $0 start | stop DIR | pause DIR | resume DIR" >&2; exit 2 ;;
esac

#!/bin/sh
# Runs a command with a throwaway PostgreSQL server:
#
#   sh tools/pgtest.sh COMMAND [ARGS...]
#
# Creates a fresh cluster in a temporary directory (initdb, trust
# authentication, superuser "postgres"), starts it listening only on a Unix
# socket in that directory, runs COMMAND with the connection in the
# environment, then stops the server and removes the directory, also when
# COMMAND fails or the run is interrupted. Exits with COMMAND's status, or
# non-zero (after printing the server's log) if the server cannot start.
#
# COMMAND sees:
#   LIPSYNC_PG_CONNINFO  "host=DIR port=PORT dbname=postgres user=postgres"
#   PGHOST PGPORT PGUSER PGDATABASE  the same, for psql and friends
#
# initdb refuses to run as root: as root, the cluster belongs to the system
# user "postgres". The settings trade durability for speed (fsync=off):
# the cluster lives only as long as the command.
set -eu

me=pgtest
if [ "$#" -eq 0 ]; then
  echo "usage: sh tools/pgtest.sh COMMAND [ARGS...]" >&2
  exit 2
fi

# The server programs are not on PATH on Debian: take the newest version.
# shellcheck disable=SC2012 # version directory names are plain
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V |
  while read -r d; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; fi
  done | tail -n 1)
if [ -z "$bindir" ]; then
  echo "$me: no PostgreSQL server found under /usr/lib/postgresql/*/bin;" \
    "install the package postgresql (sh tools/deps.sh)" >&2
  exit 1
fi

# A Unix socket path may not exceed 107 bytes: keep the directory short.
base=${TMPDIR:-/tmp}
[ "${#base}" -le 60 ] || base=/tmp
dir=$(mktemp -d "$base/lipsync-pg.XXXXXX")
data="$dir/data"
log="$dir/server.log"
started=0

# Runs a server program as the cluster's owner.
if [ "$(id -u)" -eq 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    echo "$me: running as root, but there is no system user postgres to" \
      "own the cluster" >&2
    rm -rf "$dir"
    exit 1
  fi
  chown postgres: "$dir"
  chmod 0755 "$dir"
  as_owner() {
    if command -v runuser >/dev/null 2>&1; then
      (cd "$dir" && runuser -u postgres -- "$@")
    else
      # shellcheck disable=SC2016 # expanded by the inner shell
      (cd "$dir" && su postgres -s /bin/sh -c '"$0" "$@"' -- "$@")
    fi
  }
else
  as_owner() { (cd "$dir" && "$@"); }
fi

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  status=$?
  trap - EXIT INT TERM HUP
  if [ "$started" -eq 1 ]; then
    as_owner "$bindir/pg_ctl" -D "$data" -m immediate -w stop \
      >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

fail() {
  echo "$me: $1" >&2
  [ -s "$log" ] && sed 's/^/  /' "$log" >&2
  exit 1
}

if ! as_owner "$bindir/initdb" -D "$data" -A trust -U postgres --no-sync \
  -E UTF8 --locale=C >"$log" 2>&1; then
  fail "initdb failed:"
fi

# Only a Unix socket, so the port number just names the socket file; still,
# take one that no TCP listener uses, to keep clear of anything else that
# keys on it.
port=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' 2>/dev/null) || port=$((20000 + $$ % 40000))

cat >>"$data/postgresql.conf" <<EOF

# tools/pgtest.sh: a throwaway test server
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
max_connections = 200
log_min_messages = warning
log_line_prefix = '%m [%p] '
EOF

: >"$log"
[ "$(id -u)" -eq 0 ] && chown postgres: "$log"
started=1
if ! as_owner "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 start \
  >/dev/null 2>&1; then
  fail "the PostgreSQL server did not start:"
fi

conninfo="host=$dir port=$port dbname=postgres user=postgres"
tries=0
until "$bindir/pg_isready" -q -d "$conninfo" >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ "$tries" -lt 300 ] || fail "the PostgreSQL server accepts no connection:"
  sleep 0.1
done

export LIPSYNC_PG_CONNINFO="$conninfo"
export PGHOST="$dir" PGPORT="$port" PGUSER=postgres PGDATABASE=postgres
unset PGSERVICE PGSERVICEFILE PGPASSFILE PGHOSTADDR PGSSLMODE 2>/dev/null || true

set +e
"$@"
status=$?
set -e
exit "$status"

#!/bin/sh
# `make demo`: a guided tour of two syncs. Two small SQLite databases hold
# different places in a table `cities`; a lipsync-server serves one of them
# on loopback, a lipsync-client syncs the other with it, and both end up
# with the same nine rows, each with the same _lipsync_uuid. Then each side
# updates and deletes rows, both change the same row, and a second sync
# carries every change over, the later change to the shared row winning.
#
# Exits non-zero if the sync fails or the two tables differ afterwards.
# Everything lives in a temporary directory that is removed on every exit.
set -eu
cd "$(dirname "$0")/.."
BIN=${LIPSYNC_BIN:-build/bin}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lipsync-demo.XXXXXX")
server_pid=""
cleanup() {
  # A server left behind would hold the port and the database open.
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || :
    wait "$server_pid" 2>/dev/null || :
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  echo "demo: $*" >&2
  exit 1
}

for b in lipsync-server lipsync-client; do
  [ -x "$BIN/$b" ] || fail "$BIN/$b not found; run 'make' first"
done

# ---- two databases -------------------------------------------------------
# The rows below are real places from the GeoNames gazetteer
# (https://www.geonames.org, CC BY 4.0), taken as they appear there:
# non-ASCII names, negative coordinates and big integers on purpose.
python3 - "$tmp" <<'EOF'
import sqlite3, sys

SCHEMA = """CREATE TABLE cities (city_id INTEGER, name TEXT, country TEXT,
                                 population INTEGER, lon REAL, lat REAL)"""
CLIENT = [
    (3448439, "São Paulo", "BR", 10021295, -46.63611, -23.5475),
    (2657896, "Zürich", "CH", 341730, 8.55, 47.36667),
    (3094802, "Kraków", "PL", 755050, 19.93658, 50.06143),
    (1850147, "Tokyo", "JP", 8336599, 139.69171, 35.6895),
    (3413829, "Reykjavík", "IS", 118918, -21.89541, 64.13548),
]
SERVER = [
    (3674962, "Medellín", "CO", 1999979, -75.56359, 6.25184),
    (3033123, "Besançon", "FR", 128426, 6.01815, 47.24878),
    (712374, "Бережани", "UA", 16962, 24.93333, 49.45),
    (3421319, "Nuuk", "GL", 14798, -51.72157, 64.18347),
]
for name, rows in (("client", CLIENT), ("server", SERVER)):
    db = sqlite3.connect(f"{sys.argv[1]}/{name}.db")
    with db:
        db.execute(SCHEMA)
        db.executemany("INSERT INTO cities VALUES (?, ?, ?, ?, ?, ?)", rows)
    db.close()
EOF

# Prints a table as aligned text. Names may hold wide characters (CJK), so
# the padding counts display columns, not code points.
cat >"$tmp/show.py" <<'EOF'
import sqlite3, sys, unicodedata

def width(s):
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)

def show(path, title):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    # The UUID column, once the sync has added it, goes first.
    cols = sorted((r[1] for r in db.execute("PRAGMA table_info(cities)")),
                  key=lambda c: c != "_lipsync_uuid")
    rows = db.execute(f"SELECT {', '.join(cols)} FROM cities"
                      " ORDER BY city_id").fetchall()
    db.close()
    cells = [cols] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(width(r[i]) for r in cells) for i in range(len(cols))]
    print(f"  {title} ({len(rows)} rows)")
    for r in cells:
        print("    " + "  ".join(v + " " * (w - width(v))
                                for v, w in zip(r, widths)).rstrip())
    print()

for path, title in zip(sys.argv[1::2], sys.argv[2::2]):
    show(path, title)
EOF

# Exits 0 when both tables hold exactly the same rows, UUIDs included.
cat >"$tmp/same.py" <<'EOF'
import sqlite3, sys

def rows(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    r = db.execute("SELECT _lipsync_uuid, city_id, name, country, population,"
                   " lon, lat FROM cities ORDER BY _lipsync_uuid").fetchall()
    db.close()
    return r

a, b = rows(sys.argv[1]), rows(sys.argv[2])
sys.exit(0 if a == b and len(a) == int(sys.argv[3]) else 1)
EOF

# The shared secret lives in a file only we can read, never on a command
# line (where `ps` would show it).
(umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' \
  >"$tmp/secret")

echo "== LipSync demo: two SQLite databases, one table 'cities' each"
echo "   (places from GeoNames, https://www.geonames.org, CC BY 4.0)"
echo
echo "-- before"
python3 "$tmp/show.py" "$tmp/client.db" "client.db: cities" \
  "$tmp/server.db" "server.db: cities"

# ---- the server ------------------------------------------------------------
# Port 0 lets the system pick a free port; the server tells us which one.
"$BIN/lipsync-server" --db "$tmp/server.db" --listen 127.0.0.1:0 \
  --secret-file "$tmp/secret" --table cities \
  >"$tmp/server.out" 2>"$tmp/server.log" &
server_pid=$!

address=""
tries=0
while [ -z "$address" ]; do
  address=$(sed -n 's/^listening on //p' "$tmp/server.out")
  [ -n "$address" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    cat "$tmp/server.log" >&2
    fail "the server did not start"
  fi
  tries=$((tries + 1))
  [ "$tries" -le 100 ] || fail "the server did not report its address"
  sleep 0.1
done

# ---- the sync --------------------------------------------------------------
echo "-- lipsync-server --db server.db --listen 127.0.0.1:0 --secret-file secret \\"
echo "     --table cities"
echo "   listening on $address"
echo "   (every byte between the two is encrypted: TLS 1.3 with a key both"
echo "   derive from the shared secret, the default; no certificate needed)"
sync_once() {
  echo "-- lipsync-client --db client.db --connect $address --secret-file secret \\"
  echo "     --table cities"
  if ! "$BIN/lipsync-client" --db "$tmp/client.db" --connect "$address" \
    --secret-file "$tmp/secret" --table cities >"$tmp/client.out" \
    2>"$tmp/client.log"; then
    cat "$tmp/client.log" >&2
    fail "the sync failed"
  fi
  sed 's/^/   /' "$tmp/client.out"
  echo
}
sync_once


echo "-- after: every row on both sides, each with its _lipsync_uuid"
python3 "$tmp/show.py" "$tmp/client.db" "client.db: cities" \
  "$tmp/server.db" "server.db: cities"

if python3 "$tmp/same.py" "$tmp/client.db" "$tmp/server.db" 9; then
  echo "== both tables hold the same 9 rows with the same UUIDs"
else
  fail "the two tables differ after the sync"
fi

# ---- act two: updates, deletes and a conflict ----------------------------
# Plain SQL from another connection, as an application would write: the
# first sync installed triggers that give every change a version.
python3 - "$tmp" <<'EOF2'
import sqlite3, sys, time
def run(name, sql):
    db = sqlite3.connect(f"{sys.argv[1]}/{name}.db")
    with db:
        db.execute(sql)
    db.close()
    time.sleep(0.01)  # distinct clocks, so the order below is the order
run("server", "UPDATE cities SET population = 421878 WHERE name = 'Zürich'")
run("client", "UPDATE cities SET population = 402762 WHERE name = 'Zürich'")
run("client", "UPDATE cities SET name = 'Tōkyō' WHERE city_id = 1850147")
run("server", "DELETE FROM cities WHERE name = 'Nuuk'")
EOF2
echo "-- then, on the server: Zürich's population set to 421878, Nuuk deleted;"
echo "   on the client, later: Zürich's population set to 402762, Tokyo renamed"
echo
sync_once
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=""
if [ "$status" -ne 0 ]; then
  cat "$tmp/server.log" >&2
  fail "the server exited with status $status"
fi

echo "-- after: the later change to Zürich won on both sides (last writer wins),"
echo "   Tōkyō renamed, Nuuk deleted"
python3 "$tmp/show.py" "$tmp/client.db" "client.db: cities" \
  "$tmp/server.db" "server.db: cities"

python3 - "$tmp" <<'EOF2' || fail "the changes did not travel as expected"
import sqlite3, sys
for side in ("client", "server"):
    db = sqlite3.connect(f"file:{sys.argv[1]}/{side}.db?mode=ro", uri=True)
    pop = dict(db.execute("SELECT name, population FROM cities"))
    db.close()
    assert pop.get("Zürich") == 402762 and "Tōkyō" in pop, side
    assert "Nuuk" not in pop and "Tokyo" not in pop and len(pop) == 8, side
EOF2
if python3 "$tmp/same.py" "$tmp/client.db" "$tmp/server.db" 8; then
  echo "== both tables hold the same 8 rows with the same UUIDs"
else
  fail "the two tables differ after the second sync"
fi

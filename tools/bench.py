#!/usr/bin/env python3
"""The LipSync benchmark (`make bench`).

Builds a table of 1,000,000 rows (five columns of mixed types) in a client
database, then measures in one run, with a SQLite server and then with a
PostgreSQL server:

  - an initial sync over loopback TCP: every row on the client, none on the
    server, against the fastest way to write those rows in order: an
    in-process `INSERT INTO ... SELECT ... ORDER BY _lipsync_uuid` into an
    empty table with a unique index on `_lipsync_uuid` (SQLite), `COPY`
    (PostgreSQL);
  - a second sync with nothing changed, which must be incremental;
  - a sync after the client updated 1,000 random rows and deleted 1,000
    others (exactly those 2,000 rows must travel), then one after the server
    changed 1,000 rows (exactly those must reach the client);
  - the rate of syncs with nothing to do, several clients at once against
    one server;
  - the client database restored in place from a copy taken after the
    initial sync: its checkpoint no longer matches, the sync must fall back
    to ranges, and the client must end equal to the server;
  - then 1,000 rows inserted and 1,000 updated on that client, synced by
    ranges (--full): the server writes new and changed rows mixed in UUID
    order;
  - the bytes on the wire (the whole session, as the server counts them)
    and the peak RSS of each process, next to the figures before the
    incremental exchange existed.

Figures only: the targets are printed next to them, and nothing fails on a
figure; a sync that fails or ends wrong makes the benchmark exit non-zero.

The rows come from the GeoNames gazetteer (https://www.geonames.org,
CC BY 4.0): 135,233 places, cycled with distinct ids and names.

Python's sqlite3 module is used only to prepare and check the databases and
for the baseline; it links the same system libsqlite3 as the LipSync
binaries.
"""

import argparse
import concurrent.futures
import hashlib
import csv
import ctypes
import gzip
import os
import re
import secrets
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CITIES = os.environ.get(
    "LIPSYNC_CITIES", str(ROOT / "fixtures" / "data" / "cities.csv.gz"))
DEFAULT_BIN = os.environ.get("LIPSYNC_BIN", str(ROOT / "build" / "bin"))

TABLE = "bench"
SCHEMA = (f"CREATE TABLE {TABLE} (city_id INTEGER, name TEXT,"
          " population INTEGER, lon REAL, code BLOB, _lipsync_uuid TEXT)")
UUID_INDEX = (f"CREATE UNIQUE INDEX {TABLE}_uuid"
              f" ON {TABLE}(_lipsync_uuid)")

# A random version 4 UUID in the lowercase 8-4-4-4-12 form LipSync stores.
# Each group comes from its own randomblob(): every hex digit is random
# except the version digit (4) and the variant digit (8, 9, a or b).
UUID_V4_SQL = (
    "lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2)))"
    " || '-4' || substr(lower(hex(randomblob(2))), 2)"
    " || '-' || substr('89ab', 1 + (random() & 3), 1)"
    " || substr(lower(hex(randomblob(2))), 2)"
    " || '-' || lower(hex(randomblob(6)))")

# The server's line for each session: its whole traffic.
SESSION_LINE = re.compile(r"ok; (\d+) rows in, (\d+) rows out, (\d+) bytes in,"
                          r" (\d+) bytes out")
SUMMARY = re.compile(
    rf"^{TABLE}: sent (\d+) rows, received (\d+) rows,"
    r" (\d+) bytes out, (\d+) bytes in, ([0-9.]+)s( \(incremental\))?$",
    re.M)

# How long the server may take to say where it listens.
STARTUP_TIMEOUT_S = 30


class BenchError(Exception):
    pass


# ---- data ------------------------------------------------------------------

def load_cities(path):
    """The places as (id, name, country, feature, admin, population, lon)."""
    try:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", newline="", encoding="utf-8") as f:
            return [(int(r["city_id"]), r["name"], r["country"],
                     r["feature_code"], r["admin_code"], int(r["population"]),
                     float(r["lon"])) for r in csv.DictReader(f)]
    except OSError as e:
        raise BenchError(f"cannot read the cities data: {e}; "
                         "use --cities PATH or set LIPSYNC_CITIES") from e


def bench_rows(cities, n):
    """n distinct rows: the places over and over. Each lap shifts the ids
    past every GeoNames id and gives the names a suffix, so no two rows are
    alike even apart from their UUIDs."""
    per_lap = len(cities)
    for i in range(n):
        lap, j = divmod(i, per_lap)
        cid, name, country, feature, admin, population, lon = cities[j]
        if lap:
            name = f"{name} ({lap + 1})"
        code = f"{country}.{feature}.{admin}".encode()
        yield (cid + lap * 100_000_000, name, population + lap, lon, code)


def connect(path):
    """A connection configured as the LipSync SQLite backend configures its
    own, so both sides of the comparison write the same way. Transactions
    are explicit (isolation_level=None)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def create_table(path):
    db = connect(path)
    db.execute(SCHEMA)
    db.execute(UUID_INDEX)
    return db


def build_client(path, cities, n):
    db = connect(path)
    db.execute(SCHEMA)
    db.execute("BEGIN")
    db.executemany(
        f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, {UUID_V4_SQL})",
        bench_rows(cities, n))
    # Built after the rows: faster than maintaining it row by row.
    db.execute(UUID_INDEX)
    db.execute("COMMIT")
    # Fold the WAL into the database file so that the copy and the syncs
    # all start from the same on-disk state.
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def copy_database(src, dst):
    """Copies database |src| into |dst| through SQLite's backup API: |dst|
    stays the same file (a restore in place keeps its device and inode)."""
    a, b = sqlite3.connect(str(src)), sqlite3.connect(str(dst))
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


# ---- the baseline ----------------------------------------------------------

def baseline_copy(work, client_db, name, order):
    """Seconds to copy every row into an empty table with the same schema
    and unique index, in one transaction, in-process. With |order| (ORDER
    BY _lipsync_uuid) SQLite inserts the rows one by one, decoded, in UUID
    order, as a sync must; without, between two tables of the same schema
    it copies records and index entries as they are (its transfer
    optimization), a floor no sync can reach."""
    db = create_table(str(work / name))
    db.execute("ATTACH DATABASE ? AS src", (str(client_db),))
    started = time.perf_counter()
    db.execute("BEGIN")
    db.execute(f"INSERT INTO main.{TABLE} SELECT * FROM src.{TABLE}"
               + (" ORDER BY _lipsync_uuid" if order else ""))
    db.execute("COMMIT")
    seconds = time.perf_counter() - started
    db.close()
    return seconds


# ---- processes -------------------------------------------------------------
#
# Peak RSS is the child's own ru_maxrss, from os.wait4(). On Linux that
# figure starts at the RSS of the process that forked the child (the kernel
# carries it across exec), and this Python process has held a lot of rows
# by then. So each binary is started by a short-lived sh, whose RSS is tiny;
# as a child subreaper we inherit the binary when sh exits and can wait4()
# it ourselves.

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise BenchError("cannot measure peak RSS: prctl: "
                         + os.strerror(ctypes.get_errno()))


class Child:
    """A program started through sh (see above). |stdout| may be
    subprocess.PIPE, read through .stdout."""

    def __init__(self, argv, stdout, stderr, pidfile):
        pidfile.unlink(missing_ok=True)
        sh = subprocess.Popen(
            ["sh", "-c", 'p=$1; shift; "$@" & echo $! >"$p"', "sh",
             str(pidfile)] + [str(a) for a in argv],
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
        self.stdout = sh.stdout
        self.status = None
        self.rss = None
        if sh.wait() != 0:
            raise BenchError(f"cannot start {argv[0]}")
        self.pid = int(pidfile.read_text())

    def _reap(self, flags):
        pid, status, usage = os.wait4(self.pid, flags)
        if pid:
            self.status = os.waitstatus_to_exitcode(status)
            self.rss = usage.ru_maxrss * 1024  # KiB on Linux
        return self.status

    def wait(self):
        """Waits for the exit; returns the exit status and sets .rss."""
        return self.status if self.status is not None else self._reap(0)

    def terminate(self, timeout=10):
        """Stops the process with SIGTERM (SIGKILL after |timeout| s)."""
        if self.status is None:
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self._reap(os.WNOHANG) is None:
                if time.monotonic() > deadline:
                    os.kill(self.pid, signal.SIGKILL)
                    return self.wait()
                time.sleep(0.01)
        return self.status

    def close(self):
        self.terminate()
        if self.stdout is not None:
            self.stdout.close()



class Server:
    """A lipsync-server on 127.0.0.1, port 0, serving |db|."""

    def __init__(self, bench, label, db, extra=()):
        self.bench, self.label, self.db = bench, label, db
        self.extra = list(extra)
        self.log = bench.work / f"server-{label}.log"
        self.child = None
        self.address = None
        self.status = self.rss = None

    def __enter__(self):
        b = self.bench
        with open(self.log, "wb") as log:
            self.child = Child(
                [b.bindir / "lipsync-server", "--db", self.db, "--listen",
                 "127.0.0.1:0", "--secret-file", b.secret, "--table", TABLE,
                 "--max-clients", "64", *self.extra], subprocess.PIPE, log,
                b.work / "server.pid")
        ready, _, _ = select.select([self.child.stdout], [], [],
                                    STARTUP_TIMEOUT_S)
        line = self.child.stdout.readline().decode() if ready else ""
        m = re.fullmatch(r"listening on (\S+)\n?", line)
        if not m:
            self.child.close()
            raise BenchError("the server did not report its address"
                             + tail(self.log))
        self.address = m.group(1)
        return self

    def __exit__(self, *exc):
        self.status = self.child.terminate()
        self.rss = self.child.rss
        self.child.close()
        if self.status != 0 and exc[0] is None:
            raise BenchError(f"the server ({self.label}) exited with status"
                             f" {self.status}" + tail(self.log))

    def sessions(self):
        """(rows in, rows out, bytes in, bytes out) of each session."""
        return [tuple(map(int, m.groups()))
                for m in SESSION_LINE.finditer(self.log.read_text())]


def tail(path, lines=20):
    if not path.exists() or not path.stat().st_size:
        return ""
    text = path.read_text(errors="replace").splitlines()
    return f"\n{path.name}:\n" + "\n".join(text[-lines:])


def run_client(bench, address, label, db=None, extra=()):
    """One lipsync-client run; returns its figures, or raises BenchError."""
    log = bench.work / f"client-{label}.log"
    with open(log, "wb") as err:
        child = Child([bench.bindir / "lipsync-client", "--db",
                       db or bench.client_db, "--connect", address,
                       "--secret-file", bench.secret, "--table", TABLE,
                       *extra],
                      subprocess.PIPE, err, bench.work / f"client-{label}.pid")
        started = time.perf_counter()
        out = child.stdout.read().decode(errors="replace")
        status = child.wait()
        seconds = time.perf_counter() - started
        child.close()
    if status != 0:
        raise BenchError(f"the {label} sync failed (client exit status"
                         f" {status})" + tail(log))
    log.unlink()
    (bench.work / f"client-{label}.pid").unlink(missing_ok=True)
    m = SUMMARY.search(out)
    if not m:
        raise BenchError(f"unexpected client output: {out!r}")
    return {"seconds": seconds, "rows_sent": int(m.group(1)),
            "rows_received": int(m.group(2)), "client_seconds":
            float(m.group(5)), "incremental": m.group(6) is not None,
            "client_rss": child.rss}


def sync(bench, label, server_db, extra=(), client_extra=()):
    """One sync with a fresh server, so that its peak RSS is this sync's.
    |extra|: options of both programs (--plaintext); |client_extra|: of
    the client alone."""
    with Server(bench, label, server_db, extra) as server:
        figures = run_client(bench, server.address, label,
                             extra=(*extra, *client_extra))
    sessions = server.sessions()
    if len(sessions) != 1:
        raise BenchError(f"the server logged {len(sessions)} sessions for"
                         f" the {label} sync" + tail(server.log))
    _, _, bytes_in, bytes_out = sessions[0]
    figures.update(server_rss=server.rss, wire=bytes_in + bytes_out)
    return figures


def noop_rate(bench, label, server_db, total, parallel, extra=()):
    """|total| syncs with nothing to do, |parallel| clients at a time, of
    the same client database, against one server (with options |extra|):
    syncs per second."""
    with Server(bench, label, server_db, extra) as server:
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            runs = list(pool.map(
                lambda i: run_client(bench, server.address, f"{label}-{i}"),
                range(total)))
        seconds = time.perf_counter() - started
    moved = sum(r["rows_sent"] + r["rows_received"] for r in runs)
    incremental = sum(r["incremental"] for r in runs)
    if moved or incremental != total:
        raise BenchError(f"{label}: {moved} rows moved and {incremental} of"
                         f" {total} syncs incremental; expected 0 and all")
    return {"rate": total / seconds, "total": total, "parallel": parallel,
            "longest": max(r["seconds"] for r in runs),
            "server_rss": server.rss}


PG_SCHEMA = ("(city_id bigint, name text, population bigint,"
             " lon double precision, code bytea, _lipsync_uuid uuid)")


def psql(sql, stdin=None):
    """Runs |sql| with psql on the server of $LIPSYNC_PG_CONNINFO."""
    out = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
         "-d", os.environ["LIPSYNC_PG_CONNINFO"], "-c", sql],
        input=stdin, capture_output=True)
    if out.returncode != 0:
        raise BenchError(f"psql failed: {out.stderr.decode(errors='replace')}")
    return out.stdout.decode()


def pg_create(table):
    psql(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} {PG_SCHEMA};"
         f" CREATE UNIQUE INDEX {table}_uuid ON {table}(_lipsync_uuid)")


def pg_copy(client_db, work):
    """Seconds for COPY of the client's rows into an empty table with the
    same schema and unique index, streamed from psql like a client would.
    The CSV is written first and not timed."""
    csv_path = work / "bench.csv"
    db = connect(str(client_db))
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        for cid, name, pop, lon, code, uuid in db.execute(
                f"SELECT * FROM {TABLE}"):
            w.writerow([cid, name, pop, repr(lon), "\\x" + code.hex(), uuid])
    db.close()
    pg_create("bench_copy")
    started = time.perf_counter()
    psql(f"\\copy bench_copy FROM '{csv_path}' WITH (FORMAT csv)")
    seconds = time.perf_counter() - started
    csv_path.unlink()
    return seconds



def pg_rows_digest(table):
    """An order-independent digest of |table|'s rows on PostgreSQL, in the
    form sqlite_rows_digest gives a SQLite table's."""
    out = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d",
         os.environ["LIPSYNC_PG_CONNINFO"], "-c",
         f"COPY (SELECT _lipsync_uuid, city_id, name, population, lon,"
         f" encode(code, 'hex') FROM {table}) TO STDOUT"],
        capture_output=True)
    if out.returncode != 0:
        raise BenchError(f"psql failed: {out.stderr.decode(errors='replace')}")
    acc, n = 0, 0
    for line in out.stdout.decode().splitlines():
        uuid, cid, name, pop, lon, code = line.split("\t")
        name = name.replace("\\\\", "\\")
        acc += row_digest(uuid, int(cid), name, int(pop), float(lon), code)
        n += 1
    return n, acc % (1 << 128)


# ---- changes and checks -----------------------------------------------------

CHANGED = 1000  # rows updated, and rows deleted, on the client
SERVER_CHANGED = 500  # rows updated, and rows deleted, on the server


def row_digest(uuid, cid, name, pop, lon, code_hex):
    text = f"{uuid}|{cid}|{name}|{pop}|{lon!r}|{code_hex}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")


def sqlite_rows_digest(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    acc, n = 0, 0
    for uuid, cid, name, pop, lon, code in db.execute(
            f"SELECT _lipsync_uuid, city_id, name, population, lon, code"
            f" FROM {TABLE}"):
        acc += row_digest(uuid, cid, name, pop, lon, code.hex())
        n += 1
    db.close()
    return n, acc % (1 << 128)


def change_rows(db, k, suffix):
    """Updates |k| random rows and deletes |k| others through |db| (a
    connection with LipSync's triggers in place, as any application's).
    Returns the number of rows changed."""
    picked = [r[0] for r in db.execute(
        f"SELECT _lipsync_uuid FROM {TABLE} ORDER BY random() LIMIT ?",
        (2 * k,))]
    with db:
        db.executemany(f"UPDATE {TABLE} SET population = population + 1,"
                       f" name = name || ' ({suffix})' WHERE _lipsync_uuid"
                       " = ?", [(u,) for u in picked[:k]])
        db.executemany(f"DELETE FROM {TABLE} WHERE _lipsync_uuid = ?",
                       [(u,) for u in picked[k:]])
    return len(picked)


def insert_update_sqlite(path, k):
    """Inserts |k| new rows (copies of random ones under new UUIDs) and
    updates |k| others in the SQLite database |path|. Returns the number of
    rows written."""
    db = sqlite3.connect(str(path))
    try:
        with db:
            db.execute(f"UPDATE {TABLE} SET population = population + 2"
                       f" WHERE _lipsync_uuid IN (SELECT _lipsync_uuid FROM"
                       f" {TABLE} ORDER BY random() LIMIT {k})")
            db.execute(f"INSERT INTO {TABLE} SELECT city_id + 100000000,"
                       f" name || ' (new)', population, lon, code,"
                       f" {UUID_V4_SQL} FROM {TABLE} ORDER BY random()"
                       f" LIMIT {k}")
        return 2 * k
    finally:
        db.close()


def change_sqlite(path, k, suffix):
    db = sqlite3.connect(str(path))
    try:
        return change_rows(db, k, suffix)
    finally:
        db.close()


def change_pg(k, suffix):
    psql(f"BEGIN; UPDATE {TABLE} SET population = population + 1, name ="
         f" name || ' ({suffix})' WHERE _lipsync_uuid IN (SELECT"
         f" _lipsync_uuid FROM {TABLE} ORDER BY random() LIMIT {k});"
         f" DELETE FROM {TABLE} WHERE _lipsync_uuid IN (SELECT _lipsync_uuid"
         f" FROM {TABLE} WHERE name NOT LIKE '% ({suffix})' ORDER BY random()"
         f" LIMIT {k}); COMMIT")
    return 2 * k


def expect(ok, message):
    if not ok:
        raise BenchError(message)


# ---- report ------------------------------------------------------------------

# The same benchmark before the incremental exchange (main at 6d0c6be, on
# the same kind of 2-core machine): every sync read and hashed every item,
# and held the database's write lock throughout.
BEFORE = {
    "ratio": "4.2 (against this copy)",
    "rss": "80 MB / 58 MB",
    "noop": "0.9-1.0 s, 32 bytes out (items read and hashed)",
    "client_changes": "1.2-1.5 s, 3.3 MB",
    "pg_ratio": "1.9-2.2",
}
WIDTH = 50


def mb(nbytes):
    return f"{nbytes / 1e6:.1f} MB"


def line(label, value):
    print(f"  {label:<{WIDTH}}{value}")


def verdict(ok):
    return "ok" if ok else "MISSED"


def report_small_sync(label, s, first, rows, before=None):
    share = s["seconds"] / first["seconds"]
    limit_s, limit_b = (0.03, 1000) if rows == 0 else (0.05, 500_000)
    line(label, f"{s['seconds']:.2f} s = {100 * share:.1f} % of the initial"
         f" sync (target <= {100 * limit_s:.0f} %: {verdict(share <= limit_s)})")
    line("  bytes on the wire, both ways",
         f"{s['wire']:,} (target <= {limit_b:,}: "
         f"{verdict(s['wire'] <= limit_b)})")
    if rows:
        line("  rows applied by the server / the client",
             f"{s['rows_sent']:,} / {s['rows_received']:,}")
    line("  peak RSS client / server",
         f"{mb(s['client_rss'])} / {mb(s['server_rss'])}")
    if before:
        line("  before", before)


def report_scenario(name, r):
    first = r["first"]
    ratio = first["seconds"] / r["baseline_s"]
    print()
    print(f"  {name}")
    line(r["baseline_label"], f"{r['baseline_s']:.2f} s")
    line("initial sync, loopback TCP", f"{first['seconds']:.2f} s")
    line("  ratio", f"{ratio:.2f} (target <= 2.0: {verdict(ratio <= 2.0)};"
         f" before: {r['before_ratio']})")
    line("  bytes on the wire, both ways",
         f"{first['wire']:,} ({first['wire'] / r['rows']:.1f} per row)")
    line("  peak RSS client / server",
         f"{mb(first['client_rss'])} / {mb(first['server_rss'])}"
         f" (target < 100 MB each; before: {BEFORE['rss']})")
    report_small_sync("second sync, nothing changed", r["noop"], first, 0,
                      BEFORE["noop"])
    report_small_sync(f"{CHANGED:,} updates + {CHANGED:,} deletes on the"
                      " client", r["client"], first, 2 * CHANGED,
                      BEFORE["client_changes"])
    report_small_sync(f"{2 * SERVER_CHANGED:,} changes on the server, pulled",
                      r["server"], first, 2 * SERVER_CHANGED)
    rate = r["rate"]
    line(f"syncs with nothing to do, {rate['parallel']} clients at a time",
         f"{rate['rate']:.0f} syncs/s ({rate['total']} syncs, longest"
         f" {rate['longest']:.2f} s)")
    fresh = r.get("rate_fresh")
    if fresh:
        line("  each session its own connection (--idle-connections 0)",
             f"{fresh['rate']:.0f} syncs/s: kept connections are"
             f" {rate['rate'] / fresh['rate']:.2f} times as fast")
    restored = r["restored"]
    line("client restored in place from a copy",
         f"{restored['seconds']:.2f} s, by ranges (its checkpoint no longer"
         " matches), tables equal")
    line("  bytes on the wire, both ways", f"{restored['wire']:,}")
    mixed = r["mixed"]
    line(f"{CHANGED:,} inserts + {CHANGED:,} updates, --full",
         f"{mixed['seconds']:.2f} s, by ranges, {mixed['wire']:,} bytes,"
         " tables equal")


def install_capture(bindir, client_db):
    """lipsync-client --init: what a table's first sync does before it
    talks to the server (items with initial versions, triggers), timed
    apart. Returns the seconds."""
    started = time.perf_counter()
    r = subprocess.run([str(Path(bindir) / "lipsync-client"), "--db",
                        str(client_db), "--init", "--table", TABLE,
                        "--quiet"], capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"lipsync-client --init failed: {r.stderr}")
    return time.perf_counter() - started


# ---- one server ----------------------------------------------------------------

class Bench:
    def __init__(self, args, work, secret):
        self.bindir = Path(args.bin)
        self.work = work
        self.secret = secret
        self.rows = args.rows
        self.client_db = work / "client.db"


def scenario(bench, server_db, change_server, server_digest):
    """The syncs of one server, from a client that holds every row and has
    change capture installed. Returns the figures; raises BenchError when a
    sync fails or ends wrong."""
    n, r = bench.rows, {"rows": bench.rows}
    os.sync()
    first = r["first"] = sync(bench, "initial", server_db)
    expect(first["rows_sent"] == n and not first["incremental"],
           f"the initial sync sent {first['rows_sent']:,} rows; expected"
           f" {n:,}, whole")
    saved = bench.work / "client-saved.db"
    saved.unlink(missing_ok=True)
    copy_database(bench.client_db, saved)

    os.sync()
    r["noop"] = sync(bench, "noop", server_db)
    expect(r["noop"]["incremental"] and not r["noop"]["rows_sent"]
           and not r["noop"]["rows_received"],
           "the second sync was not incremental or moved rows")

    changed = change_sqlite(bench.client_db, CHANGED, "client")
    os.sync()
    s = r["client"] = sync(bench, "client-changes", server_db)
    expect(s["incremental"] and s["rows_sent"] == changed
           and s["rows_received"] == 0,
           f"after {changed:,} changes on the client the sync sent"
           f" {s['rows_sent']:,} rows and received {s['rows_received']:,}")

    changed = change_server(SERVER_CHANGED, "server")
    os.sync()
    s = r["server"] = sync(bench, "server-changes", server_db)
    expect(s["incremental"] and s["rows_received"] == changed
           and s["rows_sent"] == 0,
           f"after {changed:,} changes on the server the sync received"
           f" {s['rows_received']:,} rows and sent {s['rows_sent']:,}")
    expect(sqlite_rows_digest(bench.client_db) == server_digest(),
           "after the syncs the client's table differs from the server's")

    r["rate"] = noop_rate(bench, "rate", server_db, 200, 8)

    copy_database(saved, bench.client_db)
    os.sync()
    s = r["restored"] = sync(bench, "restored", server_db)
    expect(not s["incremental"],
           "the restored client's sync was incremental: its checkpoint"
           " should no longer match")
    expect(sqlite_rows_digest(bench.client_db) == server_digest(),
           "after the restored client's sync its table differs from the"
           " server's")

    # Rows inserted and updated, mixed in UUID order, that the server
    # writes in a sync by ranges (--full).
    changed = insert_update_sqlite(bench.client_db, CHANGED)
    os.sync()
    s = r["mixed"] = sync(bench, "mixed", server_db, client_extra=("--full",))
    expect(not s["incremental"] and s["rows_sent"] == changed
           and s["rows_received"] == 0,
           f"after {changed:,} inserts and updates on the client the sync"
           f" by ranges sent {s['rows_sent']:,} rows and received"
           f" {s['rows_received']:,}")
    expect(sqlite_rows_digest(bench.client_db) == server_digest(),
           "after the sync by ranges the client's table differs from the"
           " server's")
    return r


def tls_cost(bench, init_db):
    """The initial sync again, in plaintext: the same client database
    into a fresh empty server. Prints its time next to the one under TLS
    (the default, which every other figure uses)."""
    copy_database(init_db, bench.client_db)
    server_db = bench.work / "server-plain.db"
    server_db.unlink(missing_ok=True)
    create_table(str(server_db)).close()
    os.sync()
    s = sync(bench, "initial-plaintext", server_db, ["--plaintext"])
    expect(s["rows_sent"] == bench.rows, "the plaintext initial sync did not"
           " send every row")
    server_db.unlink()
    return s["seconds"]


def report_tls(tls_s, plain_s):
    cost = tls_s / plain_s - 1
    line("initial sync in plaintext (--plaintext)", f"{plain_s:.2f} s")
    line("  TLS 1.3 (the default) costs",
         f"{100 * cost:+.1f} % ({tls_s:.2f} s; target < 15 %:"
         f" {verdict(cost < 0.15)})")


def bench_sqlite(bench, init_db):
    server_db = bench.work / "server.db"
    create_table(str(server_db)).close()
    os.sync()
    r = {"baseline_s": baseline_copy(bench.work, init_db, "copy.db", True),
         "baseline_label": "INSERT ... SELECT ... ORDER BY _lipsync_uuid",
         "before_ratio": BEFORE["ratio"]}
    r.update(scenario(bench, server_db,
                      lambda k, suffix: change_sqlite(server_db, k, suffix),
                      lambda: sqlite_rows_digest(server_db)))
    report_scenario("SQLite client -> SQLite server", r)
    report_tls(r["first"]["seconds"], tls_cost(bench, init_db))
    line("  for context: the copy without ORDER BY",
         f"{baseline_copy(bench.work, init_db, 'transfer.db', False):.2f} s"
         " (records copied as they are, not decoded)")


def bench_pg(bench, init_db):
    if "LIPSYNC_PG_CONNINFO" not in os.environ:
        print("\n  PostgreSQL: skipped, LIPSYNC_PG_CONNINFO is not set"
              " (make bench runs under tools/pgtest.sh)")
        return
    copy_database(init_db, bench.client_db)
    os.sync()
    r = {"baseline_s": pg_copy(bench.client_db, bench.work),
         "baseline_label": "COPY of the same rows (psql \\copy)",
         "before_ratio": BEFORE["pg_ratio"]}
    pg_create(TABLE)
    r.update(scenario(bench, os.environ["LIPSYNC_PG_CONNINFO"], change_pg,
                      lambda: pg_rows_digest(TABLE)))
    # What the server's kept PostgreSQL connections save (the rate above
    # keeps them, the default).
    r["rate_fresh"] = noop_rate(bench, "rate-fresh",
                                os.environ["LIPSYNC_PG_CONNINFO"], 200, 8,
                                ("--idle-connections", "0"))
    report_scenario("SQLite client -> PostgreSQL "
                    + psql("SHOW server_version").strip()
                    + " server (throwaway, fsync off, Unix socket)", r)


def bench(args, cities, work):
    n = args.rows
    print(f"LipSync benchmark: {n:,} rows in table {TABLE}(city_id"
          " INTEGER, name TEXT, population INTEGER, lon REAL, code BLOB)")
    print(f"  rows: {len(cities):,} places from GeoNames"
          " (https://www.geonames.org, CC BY 4.0),"
          f" cycled {n / len(cities):.1f} times")
    print("  every row already has its _lipsync_uuid (unique index), so"
          " the sync measures")
    print("  the transfer, not the first-time assignment of UUIDs")
    print(f"  databases in {work} (WAL, synchronous=NORMAL),"
          f" SQLite {sqlite3.sqlite_version}")
    started = time.perf_counter()
    b = Bench(args, work, write_secret(work))
    build_client(str(b.client_db), cities, n)
    print(f"  prepared the client database in"
          f" {time.perf_counter() - started:.1f} s"
          f" ({b.client_db.stat().st_size / 1e6:.1f} MB)")
    os.sync()
    line("change capture on the client (--init, once)",
         f"{install_capture(b.bindir, b.client_db):.2f} s")
    init_db = work / "client-init.db"
    copy_database(b.client_db, init_db)
    bench_sqlite(b, init_db)
    bench_pg(b, init_db)
    print()
    print("  Every sync runs over TLS 1.3 with the key derived from the"
          " secret (the default)")
    print("  but the one marked plaintext.")
    print("  Times: the client's wall time, process start to exit. Bytes:"
          " the whole session,")
    print("  both ways, as the server counts them. Each sync but the rate's"
          " has a fresh server;")
    print("  peak RSS: each process's ru_maxrss, 1 MB = 10^6 bytes. The"
          " restored client is")
    print("  the copy taken after the initial sync, written back over its"
          " file (same inode).")


# ---- main ----------------------------------------------------------------------

def prepare_workdir(keep):
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="lipsync-bench.")), True
    work = Path(keep).resolve()
    work.mkdir(parents=True, exist_ok=True)
    # Start from scratch: a database left by an earlier run would change
    # what is measured.
    for name in ("client", "client-init", "client-saved", "server", "copy",
                 "transfer"):
        for suffix in (".db", ".db-wal", ".db-shm"):
            (work / (name + suffix)).unlink(missing_ok=True)
    return work, False


def write_secret(work):
    """The shared secret, in a file only we can read: never in argv, where
    any user could see it."""
    path = work / "secret"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000,
                    help="rows in the table (default 1,000,000)")
    ap.add_argument("--keep", metavar="DIR",
                    help="build the databases in DIR and keep them")
    ap.add_argument("--cities", default=DEFAULT_CITIES, metavar="CSV",
                    help="the GeoNames cities CSV (default %(default)s)")
    ap.add_argument("--bin", default=DEFAULT_BIN, metavar="DIR",
                    help="where lipsync-server and lipsync-client are"
                    " (default %(default)s)")
    args = ap.parse_args()
    if args.rows < 1:
        ap.error("--rows must be at least 1")
    for b in ("lipsync-server", "lipsync-client"):
        if not os.access(Path(args.bin) / b, os.X_OK):
            ap.error(f"{Path(args.bin) / b} not found; run 'make' first")

    try:
        cities = load_cities(args.cities)
        become_subreaper()
        work, temporary = prepare_workdir(args.keep)
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    try:
        bench(args, cities, work)
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"  databases kept in {work}")
    return 0



if __name__ == "__main__":
    sys.exit(main())

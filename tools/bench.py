#!/usr/bin/env python3
"""The LipSync benchmark (`make bench`).

Builds a table of 1,000,000 rows (five columns of mixed types) in a client
database, then measures in one run:

  - an initial sync over loopback TCP: every row on the client, none on the
    server, with lipsync-client and lipsync-server;
  - an in-process `INSERT INTO ... SELECT` copy of the same rows into an
    empty table with the same schema: what this machine's SQLite needs to
    write those rows at all, the floor for any sync;
  - their ratio, the bytes on the wire, and the peak RSS of each process;
  - a second sync right after the first, when nothing has changed;
  - a third after updating 1,000 random rows and deleting 1,000 others on
    the client: its time and bytes next to the initial sync's, and the rows
    each side applied, which must be exactly the 2,000 changed.

Figures only: nothing here passes or fails, except that a sync that fails
makes the benchmark exit non-zero.

The rows come from the GeoNames gazetteer (https://www.geonames.org,
CC BY 4.0): 135,233 places, cycled with distinct ids and names.

Python's sqlite3 module is used only to prepare the databases and for the
baseline; it links the same system libsqlite3 as the LipSync binaries.
"""

import argparse
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

SUMMARY = re.compile(
    rf"^{TABLE}: sent (\d+) rows, received (\d+) rows,"
    r" (\d+) bytes out, (\d+) bytes in, ([0-9.]+)s$", re.M)

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


def count_rows(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
    finally:
        db.close()


# ---- the baseline --------------------------------------------------------

def baseline_copy(work, client_db, name="copy.db", where=""):
    """Seconds to copy every row into an empty table with the same schema
    and unique index, in one transaction, in-process. With identical
    schemas SQLite copies the records and index entries without decoding
    them (its transfer optimization): the floor for writing these rows.
    A WHERE clause, even `WHERE 1`, turns that optimization off, and the
    rows are then inserted one by one like any other insert."""
    db = create_table(str(work / name))
    db.execute("ATTACH DATABASE ? AS src", (str(client_db),))
    started = time.perf_counter()
    db.execute("BEGIN")
    db.execute(f"INSERT INTO main.{TABLE} SELECT * FROM src.{TABLE} {where}")
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


class Sync:
    """One sync: a fresh lipsync-server on 127.0.0.1 port 0 and one
    lipsync-client run against it."""

    def __init__(self, bindir, work, secret_file, label, server_db=None):
        self.bindir = Path(bindir)
        self.work = work
        self.secret_file = secret_file
        self.label = label
        self.server_db = server_db or work / "server.db"

    def start(self, name, args, stdout):
        with open(self.work / f"{name}-{self.label}.log", "wb") as log:
            return Child([self.bindir / f"lipsync-{name}"] + args, stdout,
                         log, self.work / f"{name}.pid")

    def logs(self, *who):
        text = ""
        for w in who:
            path = self.work / f"{w}-{self.label}.log"
            if path.exists() and path.stat().st_size:
                text += f"\n{w} said:\n" + path.read_text(errors="replace")
        return text

    def run(self):
        """Returns a dict of figures; raises BenchError if the sync fails."""
        server = client = None
        try:
            server = self.start(
                "server", ["--db", self.server_db, "--listen",
                           "127.0.0.1:0", "--secret-file", self.secret_file,
                           "--table", TABLE], subprocess.PIPE)
            ready, _, _ = select.select([server.stdout], [], [],
                                        STARTUP_TIMEOUT_S)
            line = server.stdout.readline().decode() if ready else ""
            m = re.fullmatch(r"listening on (\S+)\n?", line)
            if not m:
                raise BenchError("the server did not report its address"
                                 + self.logs("server"))
            started = time.perf_counter()
            client = self.start(
                "client", ["--db", self.work / "client.db", "--connect",
                           m.group(1), "--secret-file", self.secret_file,
                           "--table", TABLE], subprocess.PIPE)
            out = client.stdout.read().decode(errors="replace")
            status = client.wait()
            seconds = time.perf_counter() - started
            # The session ended with the client: stopping the server now
            # gives its peak RSS for this sync.
            server_status = server.terminate()
        finally:
            for child in (client, server):
                if child is not None:
                    child.close()
        if status != 0:
            raise BenchError(f"the {self.label} sync failed (client exit"
                             f" status {status})"
                             + self.logs("client", "server"))
        if server_status != 0:
            raise BenchError(f"the server of the {self.label} sync exited"
                             f" with status {server_status}"
                             + self.logs("server"))
        m = SUMMARY.search(out)
        if not m:
            raise BenchError(f"unexpected client output: {out!r}")
        return {
            "seconds": seconds,
            "rows_sent": int(m.group(1)),
            "rows_received": int(m.group(2)),
            "bytes_out": int(m.group(3)),
            "bytes_in": int(m.group(4)),
            "client_seconds": float(m.group(5)),
            "client_rss": client.rss,
            "server_rss": server.rss,
        }


# ---- PostgreSQL ------------------------------------------------------------
#
# The server side of the second part of the benchmark: a SQLite client syncs
# into an empty PostgreSQL table, against COPY of the same rows into an
# empty table of the same schema on the same server, the fastest way in.

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


# ---- report ----------------------------------------------------------------

def mb(nbytes):
    return f"{nbytes / 1e6:.1f} MB"


def report_pg(n, copy_s, sync):
    width = 48

    def line(label, value):
        print(f"  {label:<{width}}{value}")

    print()
    print("  PostgreSQL " + psql("SHOW server_version").strip()
          + " (throwaway server, fsync off, on a Unix socket)")
    line("initial sync, SQLite client -> PostgreSQL",
         f"{sync['seconds']:.2f} s")
    line("COPY of the same rows (psql \\copy)", f"{copy_s:.2f} s")
    line("ratio", f"{sync['seconds'] / copy_s:.2f}   (target <= 2.0)")
    line("peak RSS client / server",
         f"{mb(sync['client_rss'])} / {mb(sync['server_rss'])}")


CHANGED = 1000  # rows updated, and rows deleted, before the third sync


def change_client(path, n):
    """Updates CHANGED random rows and deletes CHANGED others, as an
    application would: through its own connection, captured by LipSync's
    triggers. Returns (updated uuids, deleted uuids)."""
    db = connect(path)
    k = min(CHANGED, n // 2)
    picked = [r[0] for r in db.execute(
        f"SELECT _lipsync_uuid FROM {TABLE} ORDER BY random() LIMIT ?",
        (2 * k,))]
    updated, deleted = picked[:k], picked[k:]
    with db:
        db.executemany(f"UPDATE {TABLE} SET population = population + 1,"
                       " name = name || ' (updated)' WHERE _lipsync_uuid = ?",
                       [(u,) for u in updated])
        db.executemany(f"DELETE FROM {TABLE} WHERE _lipsync_uuid = ?",
                       [(u,) for u in deleted])
    db.close()
    return updated, deleted


def check_changes(path, n, updated, deleted):
    db = connect(path)
    have = db.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
    marked = db.execute(f"SELECT count(*) FROM {TABLE}"
                        " WHERE name LIKE '% (updated)'").fetchone()[0]
    db.close()
    if have != n - len(deleted) or marked != len(updated):
        raise BenchError(f"after the third sync the server holds {have:,}"
                         f" rows, {marked:,} of them updated; expected"
                         f" {n - len(deleted):,} and {len(updated):,}")


def report_changes(first, third, nchanged):
    width = 48

    def line(label, value):
        print(f"  {label:<{width}}{value}")

    print()
    line(f"sync after {CHANGED:,} updates + {CHANGED:,} deletes",
         f"{third['seconds']:.2f} s   (initial sync {first['seconds']:.2f} s)")
    line("  bytes on the wire (client out / in)",
         f"{third['bytes_out']:,} / {third['bytes_in']:,}   (initial"
         f" {first['bytes_out']:,} / {first['bytes_in']:,})")
    line("  rows applied by the server / the client",
         f"{third['rows_sent']:,} / {third['rows_received']:,}"
         f"   (changed: {nchanged:,} / 0)")
    line("  its peak RSS client / server",
         f"{mb(third['client_rss'])} / {mb(third['server_rss'])}")


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


def report(n, copy_s, rowwise_s, init_s, first, second):
    width = 48

    def line(label, value):
        print(f"  {label:<{width}}{value}")

    ratio = first["seconds"] / copy_s if copy_s > 0 else float("inf")
    print()
    line("change capture on the client (--init, once)", f"{init_s:.2f} s")
    line(f"initial sync ({n:,} rows, loopback TCP)",
         f"{first['seconds']:.2f} s")
    line("INSERT INTO ... SELECT (same rows, in-process)", f"{copy_s:.2f} s")
    line("ratio", f"{ratio:.2f}   (target <= 2.0)")
    line("  for context: the same copy, row by row",
         f"{rowwise_s:.2f} s   (INSERT ... SELECT ... WHERE 1; ratio"
         f" {first['seconds'] / rowwise_s:.2f})")
    line("bytes on the wire (client out / in)",
         f"{first['bytes_out']:,} / {first['bytes_in']:,}"
         f"   ({first['bytes_out'] / max(n, 1):.1f} bytes per row)")
    line("peak RSS client / server",
         f"{mb(first['client_rss'])} / {mb(first['server_rss'])}"
         "   (target < 100 MB each)")
    line("second sync (nothing changed)",
         f"{second['seconds']:.2f} s, {second['bytes_out']:,} / "
         f"{second['bytes_in']:,} bytes out / in")
    line("  its peak RSS client / server",
         f"{mb(second['client_rss'])} / {mb(second['server_rss'])}")
    print()
    print("  Sync times: the client's wall time, process start to exit (its"
          " own summary says")
    print(f"  {first['client_seconds']:.2f} s and"
          f" {second['client_seconds']:.2f} s). Bytes: the frames of table"
          f" {TABLE}, as the client")
    print("  counts them. Each sync has a fresh server. Peak RSS: each"
          " process's ru_maxrss,")
    print("  1 MB = 10^6 bytes. Between two tables of the same schema,"
          " INSERT INTO ... SELECT *")
    print("  lets SQLite copy records and index entries as they are (its"
          " transfer optimization);")
    print("  `WHERE 1` turns it off, so that copy inserts row by row, as a"
          " sync must.")


# ---- main ------------------------------------------------------------------

def prepare_workdir(keep):
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="lipsync-bench.")), True
    work = Path(keep).resolve()
    work.mkdir(parents=True, exist_ok=True)
    # Start from scratch: a database left by an earlier run would change
    # what is measured.
    for name in ("client", "server", "copy"):
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


def bench_pg(args, work, secret, client_db, n):
    """The same initial sync into an empty PostgreSQL table, against COPY."""
    if "LIPSYNC_PG_CONNINFO" not in os.environ:
        print("\n  PostgreSQL: skipped, LIPSYNC_PG_CONNINFO is not set"
              " (make bench runs under tools/pgtest.sh)")
        return
    os.sync()
    pg_copy_s = pg_copy(client_db, work)
    pg_create(TABLE)
    os.sync()
    pg_sync = Sync(args.bin, work, secret, "pg",
                   server_db=os.environ["LIPSYNC_PG_CONNINFO"]).run()
    have = int(psql(f"SELECT count(*) FROM {TABLE}"))
    if have != n:
        raise BenchError(f"after the sync PostgreSQL holds {have:,} rows,"
                         f" expected {n:,}")
    report_pg(n, pg_copy_s, pg_sync)


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
    client_db = work / "client.db"
    build_client(str(client_db), cities, n)
    create_table(str(work / "server.db")).close()
    print(f"  prepared the client database in"
          f" {time.perf_counter() - started:.1f} s"
          f" ({client_db.stat().st_size / 1e6:.1f} MB)")

    # Before each timed step, flush what earlier steps left dirty in the
    # page cache, so that no step pays for another one's write-back.
    os.sync()
    copy_s = baseline_copy(work, client_db)
    os.sync()
    rowwise_s = baseline_copy(work, client_db, "rowwise.db", "WHERE 1")
    secret = write_secret(work)

    os.sync()
    init_s = install_capture(args.bin, client_db)
    os.sync()
    first = Sync(args.bin, work, secret, "first").run()
    have = count_rows(work / "server.db")
    if have != n or first["rows_sent"] != n:
        raise BenchError(f"after the first sync the server holds {have:,}"
                         f" rows and the client sent {first['rows_sent']:,};"
                         f" expected {n:,}")
    os.sync()
    second = Sync(args.bin, work, secret, "second").run()
    if second["rows_sent"] or second["rows_received"]:
        raise BenchError("the second sync moved rows although nothing had"
                         " changed")
    report(n, copy_s, rowwise_s, init_s, first, second)
    bench_pg(args, work, secret, client_db, n)

    updated, deleted = change_client(str(client_db), n)
    os.sync()
    third = Sync(args.bin, work, secret, "third").run()
    nchanged = len(updated) + len(deleted)
    if third["rows_sent"] != nchanged or third["rows_received"]:
        raise BenchError(f"the third sync sent {third['rows_sent']:,} rows"
                         f" and received {third['rows_received']:,};"
                         f" expected {nchanged:,} and 0")
    check_changes(str(work / "server.db"), n, updated, deleted)
    report_changes(first, third, nchanged)



if __name__ == "__main__":
    sys.exit(main())

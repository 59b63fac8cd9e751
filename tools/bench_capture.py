#!/usr/bin/env python3
"""What change capture costs an application's writes on PostgreSQL (part of
`make bench`).

Two tables of the same rows (id, name, population, lon), one with
LipSync's change capture installed (`lipsync-server --init`), one without;
the same statements run on each, in one psql session, timed by the server
(psql's \\timing):

  - bulk: an UPDATE of every row, an INSERT of as many rows, a DELETE of
    them (one statement each);
  - single rows: that many one-row UPDATEs, INSERTs and no-op UPDATEs
    (a value set to itself), each its own statement, in a DO loop.

Prints each time and the ratio to the table without capture. Then checks
that capture recorded every change: every row of the captured table has a
live item, every other item is a tombstone. Figures only; the check fails
the run.

Run under tools/pgtest.sh (make bench does), from the repository root:

    sh tools/pgtest.sh python3 tools/bench_capture.py [--rows N] [--bin DIR]
"""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STATEMENTS = [
    ("UPDATE of {n:,} rows (one statement)",
     "UPDATE {t} SET pop = pop + 1"),
    ("INSERT of {n:,} rows (one statement)",
     "INSERT INTO {t} SELECT g, 'n' || g, g * 3, g / 7.0"
     " FROM generate_series({n} + 1, 2 * {n}) g"),
    ("DELETE of {n:,} rows (one statement)",
     "DELETE FROM {t} WHERE id > {n}"),
    ("{k:,} one-row UPDATEs",
     "DO $$ BEGIN FOR i IN 1..{k} LOOP UPDATE {t} SET pop = pop + 1"
     " WHERE id = i; END LOOP; END $$"),
    ("{k:,} one-row INSERTs",
     "DO $$ BEGIN FOR i IN 1..{k} LOOP INSERT INTO {t} VALUES"
     " (10 * {n} + i, 'x', i, 0); END LOOP; END $$"),
    ("{k:,} one-row UPDATEs changing nothing",
     "DO $$ BEGIN FOR i IN 1..{k} LOOP UPDATE {t} SET pop = pop"
     " WHERE id = i; END LOOP; END $$"),
]


class BenchError(Exception):
    pass


def psql(conninfo, script):
    r = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", conninfo],
        input=script, capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"psql failed: {r.stderr}")
    return r.stdout


def timed(conninfo, statements):
    """Server-side milliseconds of each of |statements|, in one session."""
    out = psql(conninfo, "\\timing on\n" + "".join(s + ";\n"
                                                     for s in statements))
    times = [float(m) for m in re.findall(r"^Time: ([\d.]+) ms", out, re.M)]
    if len(times) != len(statements):
        raise BenchError(f"expected {len(statements)} timings:\n{out}")
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000,
                    help="rows of each table and of each bulk statement")
    ap.add_argument("--single", type=int, default=2_000,
                    help="one-row statements of each kind")
    ap.add_argument("--bin", default="build/bin",
                    help="where lipsync-server is")
    args = ap.parse_args()
    conninfo = os.environ.get("LIPSYNC_PG_CONNINFO")
    if not conninfo:
        print("capture cost: skipped, LIPSYNC_PG_CONNINFO is not set"
              " (make bench runs under tools/pgtest.sh)")
        return 0
    n, k = args.rows, args.single
    try:
        psql(conninfo, "DROP DATABASE IF EXISTS lipsync_capture_bench;"
             " CREATE DATABASE lipsync_capture_bench")
        db = f"{conninfo} dbname=lipsync_capture_bench"
        psql(db, "".join(
            f"CREATE TABLE {t}(id bigint PRIMARY KEY, name text, pop bigint,"
            f" lon double precision); INSERT INTO {t} SELECT g, 'n' || g,"
            f" g * 3, g / 7.0 FROM generate_series(1, {n}) g;"
            for t in ("plain", "captured")))
        server = Path(args.bin) / "lipsync-server"
        if not server.is_absolute():
            server = ROOT / server
        r = subprocess.run([str(server), "--db", db, "--init", "--table",
                            "captured"], capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"lipsync-server --init: {r.stderr}")
        plain = timed(db, [s.format(t="plain", n=n, k=k)
                           for _, s in STATEMENTS])
        captured = timed(db, [s.format(t="captured", n=n, k=k)
                              for _, s in STATEMENTS])
        # Rows without a live item, and live items without a row.
        bad = psql(db, "SELECT (SELECT count(*) FROM captured c LEFT JOIN"
                   " _lipsync_meta_captured m ON m.uuid = c._lipsync_uuid"
                   " WHERE m.deleted IS DISTINCT FROM false) + (SELECT"
                   " count(*) FROM _lipsync_meta_captured m LEFT JOIN"
                   " captured c ON c._lipsync_uuid = m.uuid WHERE NOT"
                   " m.deleted AND c._lipsync_uuid IS NULL)").strip()
        psql(conninfo, "DROP DATABASE lipsync_capture_bench")
    except BenchError as e:
        print(f"bench_capture: {e}", file=sys.stderr)
        return 1
    print(f"Change capture on PostgreSQL: application writes, {n:,}-row"
          " tables (ms, server-side)")
    width = max(len(label.format(n=n, k=k)) for label, _ in STATEMENTS) + 2
    print(f"  {'':<{width}}{'no capture':>12}{'capture':>12}{'ratio':>8}")
    for (label, _), a, b in zip(STATEMENTS, plain, captured):
        print(f"  {label.format(n=n, k=k):<{width}}{a:>12.1f}{b:>12.1f}"
              f"{b / a if a else 0:>8.1f}")
    ok = bad == "0"
    print(f"  every change recorded: {'yes' if ok else 'NO (' + bad + ')'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

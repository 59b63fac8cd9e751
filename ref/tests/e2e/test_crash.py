#!/usr/bin/env python3
"""Crash-fault matrix: lipsync-server and, separately, lipsync-client are
killed with SIGKILL at many moments of a sync of the cities table, on SQLite
(both sides SQLite files) and on PostgreSQL (both sides PostgreSQL
databases). Run from the repository root:

    sh tools/pgtest.sh python3 -m unittest ref/tests/e2e/test_crash.py -v

The sync under test: both sides share 80% of the rows through a first
sync, then each updates and deletes shared rows and inserts its own, and
some rows change on both sides, so that the sync moves rows both ways,
inserts, updates and deletes. That state is prepared once per backend and
restored before every kill (SQLite: the file, checkpointed, copied back in
place; PostgreSQL: CREATE DATABASE ... TEMPLATE). One fault-free reference
sync of it, through a relay that records every frame (--plaintext) and
with the fault counters on (LIPSYNC_FAULT_COUNT, ref/src/fault.h), gives
the state after a complete sync and how often each program passes each
fault point. The moments are chosen from those counts, in turn from each
phase: the handshake, the opening of the tables, reconciliation frames
(Changes, Need, EndTurn) and Rows frames, received and queued; the writes
of the apply (first, last, between); Verify; both Verify agreeing, before
the commit; the commit itself (PostgreSQL: COMMIT sent, its answer not
read, then the COMMITs of the maintenance that follows; SQLite: the file
writes between the commit point and the exit, WAL frames then checkpoint,
and those before the commit point); Committed. On SQLite a bisection of
the file writes of the commit then finds the write that makes it durable,
killing on both sides of it. Each kill is printed to stderr with its
outcome, for example:

    crash sqlite kill-server recv:3 (OpenTables received, open):
    server=before client=before (client exit 5, +0.00s after the kill)

After each kill: the killed program died of SIGKILL; the survivor exited
promptly, with status 5 and a message, or with 0 if its side holds the
complete sync; PRAGMA integrity_check is ok (SQLite); each database is
exactly as before the sync or exactly as after a complete one (its rows,
UUIDs included, as typed values; the two sides judged separately, since
one may have committed and not the other), and which one is what the
protocol decides where it decides (spec 10.2, 10.3); the change capture
metadata is consistent with the rows (every row has one live item, no
live item lacks its row, no UUID is both a row and a tombstone, recorded
row digests and initial versions match the rows, the kept summary adds up
to the items, the clock is not behind them, the client's bases are those
of its state, and on SQLite the triggers are not left switched off); and
a fault-free sync then succeeds and leaves both tables equal to the
reference result, with consistent metadata, and one more sync moves
nothing. A last test damages the metadata on purpose and checks that the
check notices.

Environment:
  LIPSYNC_FAULT_BIN      directory of the fault-injection build (default
                         build/fault/bin, relative to the repository root;
                         make build/fault/bin/lipsync-server
                         build/fault/bin/lipsync-client)
  LIPSYNC_CRASH_ROWS     rows of the cities table (default 2000; the long
                         run, make crash, uses all 135233)
  LIPSYNC_CRASH_MOMENTS  moments per killed role and backend (default 22;
                         at least 20 are needed)
  LIPSYNC_PG_CONNINFO    the PostgreSQL server (tools/pgtest.sh sets it);
                         the PostgreSQL tests fail without it.
Standard library only.
"""

import collections
import hashlib
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lipsync_harness import (  # noqa: E402
    CITY_SCHEMA, EXIT_OK, EXIT_PEER, FAULT_CLIENT, FAULT_SERVER,
    SANITIZER_RE, UNIT_SEP,
    UUID_COLUMN, PgDatabase, SqliteDatabase, cities, clean_env, client_args,
    connect, integrity_check, new_pg_name, parse_summary, pg_admin_conninfo,
    psql, quote_ident, quote_literal, read_line, row_keys, stop_process,
    typed_rows, value_key, write_secret)
from test_transport import Relay  # noqa: E402


ROWS = int(os.environ.get("LIPSYNC_CRASH_ROWS", "2000"))
MOMENTS = int(os.environ.get("LIPSYNC_CRASH_MOMENTS", "22"))
TABLE = "cities"
# How long the survivor may take to notice the kill and exit, and how long
# any one program may run.
PROMPT_SECONDS = 10 if ROWS <= 20000 else 60
SYNC_TIMEOUT = 120 if ROWS <= 20000 else 900

# Frame.body fields (spec 15.1) and the phase of the sync each belongs to.
FRAMES = {
    1: ("ClientHello", "handshake"), 2: ("ServerHello", "handshake"),
    3: ("client_auth", "handshake"), 4: ("server_auth", "handshake"),
    5: ("OpenTables", "open"), 6: ("TablesOpened", "open"),
    7: ("Ranges", "reconciliation"), 8: ("Rows", "rows"),
    9: ("Need", "reconciliation"), 10: ("EndTurn", "reconciliation"),
    11: ("Verify", "verify"), 12: ("Committed", "committed"),
    15: ("Error", "error"), 1000: ("Changes", "reconciliation"),
}

BEFORE, AFTER = "before", "after"
EITHER = frozenset((BEFORE, AFTER))

_started = time.monotonic()


def note(line):
    print(line, file=sys.stderr, flush=True)


def tearDownModule():
    note(f"crash matrix: {ROWS} rows, {MOMENTS} moments per killed role and "
         f"backend, {time.monotonic() - _started:.1f}s")


# ---- what the fault counters and the relay tell -----------------------------


def read_counts(path):
    """The lines of a LIPSYNC_FAULT_COUNT file as {"commit": {...},
    "exit": {...}}, each mapping a point to how often it was passed."""
    result = {}
    text = Path(path).read_text() if Path(path).exists() else ""
    for line in text.splitlines():
        when, *fields = line.split()
        result[when] = {k: int(v) for k, v in
                        (f.split("=") for f in fields)}
    return result


def frame_names(stream):
    """The (name, phase) of every frame of a plaintext stream (spec 4: a
    u32be length, then a Frame whose one field is the body)."""
    frames, pos = [], 0
    while pos + 4 <= len(stream):
        length = int.from_bytes(stream[pos:pos + 4], "big")
        key, shift, i = 0, 0, pos + 4
        while True:
            byte = stream[i]
            key |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if byte < 0x80:
                break
        frames.append(FRAMES.get(key >> 3, (f"field {key >> 3}", "?")))
        pos += 4 + length
    if pos != len(stream):
        raise AssertionError("the relay recorded a truncated frame")
    return frames


class Moment:
    """One kill: the N-th pass of fault point |point|, with what it is."""

    def __init__(self, point, n, what, phase):
        self.point, self.n, self.what, self.phase = point, n, what, phase

    @property
    def spec(self):
        return f"{self.point}:{self.n}"

    def __str__(self):
        return f"{self.spec} ({self.what}, {self.phase})"


def spread(seq):
    """The items of |seq|: first, last, then ever finer midpoints, so that
    any prefix covers the whole."""
    seq = list(seq)
    if not seq:
        return
    seen = set()
    queue = collections.deque([(0, len(seq) - 1)])
    for i in (0, len(seq) - 1):
        if i not in seen:
            seen.add(i)
            yield seq[i]
    while queue:
        lo, hi = queue.popleft()
        if hi - lo < 2:
            continue
        mid = (lo + hi) // 2
        if mid not in seen:
            seen.add(mid)
            yield seq[mid]
        queue.extend(((lo, mid), (mid, hi)))


def interleave(*iterables):
    iterators = [iter(i) for i in iterables]
    while iterators:
        for it in list(iterators):
            try:
                yield next(it)
            except StopIteration:
                iterators.remove(it)


def candidate_moments(backend, received, sent, at_commit, at_exit):
    """The moments one side can be killed at, by category, each category in
    spread order. |received| and |sent| are the (name, phase) of the frames
    the side received and queued, in order; |at_commit| and |at_exit| the
    counts of its fault points at the commit point and at exit."""
    def frames(phases):
        rx = [Moment("recv", i + 1, f"{name} received", phase)
              for i, (name, phase) in enumerate(received) if phase in phases]
        tx = [Moment("send", i + 1, f"{name} queued", phase)
              for i, (name, phase) in enumerate(sent) if phase in phases]
        return list(interleave(spread(rx), spread(tx)))

    writes = at_commit["write"]
    commit_writes = range(at_commit["fswrite"] + 1, at_exit["fswrite"] + 1)
    categories = collections.OrderedDict([
        ("handshake", frames({"handshake"})),
        ("open", frames({"open"})),
        ("reconciliation", frames({"reconciliation"})),
        ("rows", frames({"rows"})),
        ("apply", [Moment("write", n, f"row {n} of {writes} to the store",
                          "apply") for n in spread(range(1, writes + 1))]),
        ("verify", frames({"verify"})),
        ("before commit", [Moment("commit", 1, "both Verify agree, before "
                                  "the commit", "before commit")]),
        # PostgreSQL: the sync's COMMIT, then those of the maintenance
        # that folds the summaries right after it (store_pg_changes.c).
        ("commit", [Moment("commit-sent", n, f"COMMIT {n} of "
                           f"{at_exit['commit-sent']} sent, answer not read",
                           "commit" if n == 1 else "maintenance")
                    for n in range(1, at_exit["commit-sent"] + 1)]
         if backend == "pg" else
         [Moment("fswrite", n, f"file write {n} of {commit_writes.start}.."
                 f"{commit_writes.stop - 1}", "commit")
          for n in spread(commit_writes)]),
        ("committed", frames({"committed"})),
        ("file writes before the commit",
         [Moment("fswrite", n, f"file write {n} of 1..{at_commit['fswrite']}",
                 "before commit") for n in
          spread(range(1, at_commit["fswrite"] + 1))]),
    ])
    return categories


def choose_moments(categories, count):
    """|count| distinct moments, taken in turn from each category."""
    chosen, keys = [], set()
    for moment in interleave(*categories.values()):
        if len(chosen) >= count:
            break
        if (moment.point, moment.n) not in keys:
            keys.add((moment.point, moment.n))
            chosen.append(moment)
    return chosen


# ---- change capture metadata (spec 6.7, 8.1, 8.2) ---------------------------

UUID_FORM = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                       r"[0-9a-f]{12}")
# An item: its version, deleted flag, the row digest the last recount
# recorded (None: none), and the client's base version (spec 8.6).
Item = collections.namedtuple("Item", "clock site deleted rowdig base")


def canonical_value(key):
    """enc(v) of spec 7.2, from a harness value key."""
    kind = key[0]
    if kind == "null":
        return b"\x00"
    if kind == "integer":
        return b"\x01" + struct.pack(">q", key[1])
    if kind == "real":
        return b"\x02" + bytes.fromhex(key[1])
    data = key[1].encode("utf-8") if kind == "text" else key[1]
    return (b"\x03" if kind == "text" else b"\x04") + \
        struct.pack(">I", len(data)) + data


def row_digest(uuid, keys):
    """LS-DIGEST-2, for a row read by the harness's rows(): the columns in
    name order, which for these ASCII names is canonical column order."""
    data = bytes.fromhex(uuid.replace("-", "")) + struct.pack(">I", len(keys))
    data += b"".join(canonical_value(k) for k in keys)
    return hashlib.sha256(data).digest()[:16]


def row_digests(rows):
    """(uuid, row digest) of each row read by the harness's rows(); the
    digest is None when the UUID is malformed."""
    return [(r[0], row_digest(r[0], r[1:])
             if isinstance(r[0], str) and UUID_FORM.fullmatch(r[0]) else None)
            for r in rows]


def item_digest(uuid, clock, site, deleted):
    """LS-ITEM-1, as an integer (the fingerprint sums them mod 2^128)."""
    data = (bytes.fromhex(uuid.replace("-", "")) + struct.pack(">Q", clock)
            + site + (b"\x01" if deleted else b"\x00"))
    return int.from_bytes(hashlib.sha256(data).digest()[:16], "big")


def capture_problems(digests, items, counted, kept, clock):
    """What is wrong with the metadata of one table, and how many of its
    items are dirty (their base is not their version): (list of messages,
    empty when consistent; count). |digests|: row_digests() of the table;
    |items|: uuid -> Item; |counted|: the (uuid, clock, site, deleted)
    states that the kept summary |kept| = (sum, count) adds up; |clock|:
    the database's clock state."""
    problems = []

    def report(what, uuids):
        uuids = sorted(uuids)
        if uuids:
            problems.append(f"{len(uuids)} {what}, e.g. {uuids[:3]}")

    uuids = [u for u, _ in digests]
    report("rows without a well-formed UUID",
           [str(u) for u, digest in digests if digest is None])
    report("UUIDs held by more than one row",
           [u for u, n in collections.Counter(uuids).items() if n > 1])
    live = set(uuids)
    report("rows without an item", [u for u in live if u not in items])
    report("UUIDs that are both a row and a tombstone",
           [u for u in live if u in items and items[u].deleted])
    report("live items without a row",
           [u for u, it in items.items() if not it.deleted and u not in live])
    stale, initial = [], []
    for uuid, digest in digests:
        item = items.get(uuid)
        if item is None or item.deleted or digest is None:
            continue
        if item.rowdig is not None and item.rowdig != digest:
            stale.append(uuid)
        if item.clock == 0 and item.site != digest:
            initial.append(uuid)
    report("rows whose recorded digest is not their values'", stale)
    report("rows whose initial version (clock 0) is not their digest",
           initial)
    if kept is not None:
        total = sum(item_digest(*state) for state in counted) % (1 << 128)
        count = len(counted)
        if (total, count) != kept:
            problems.append(
                f"the kept summary (sum {kept[0]:032x}, count {kept[1]}) is "
                f"not that of the items (sum {total:032x}, count {count})")
    top = max((it.clock for it in items.values()), default=0)
    if clock < top:
        problems.append(f"the clock state {clock} is below the clock {top} "
                        "of an item")
    dirty = sum((it.clock, it.site) != it.base for it in items.values())
    return problems, dirty


# ---- the two sides of a sync ----------------------------------------------


class SqliteSide:
    """A SQLite database file of one side, saved and restored in place (so
    that its inode, the identity the store records, stays the same)."""

    kind = "sqlite"

    def __init__(self, directory, label):
        self.label = label
        self.db = SqliteDatabase(directory / f"{label}.db")
        self.path = self.db.path
        self.saved = directory / f"{label}.saved"

    @property
    def dsn(self):
        return self.db.dsn

    def save(self):
        db = connect(self.path)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
        shutil.copyfile(self.path, self.saved)

    def restore(self):
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.saved, self.path)  # same inode: truncated

    def rows(self):
        return self.db.rows(TABLE)

    def content(self):
        """The rows as a list that compares equal exactly when the rows
        do (each value with its type), cheaper to read than rows()."""
        return typed_rows(self.path, TABLE)

    def integrity(self):
        return integrity_check(self.path)

    def run_sql(self, statement):
        self.db.run_sql(statement)

    def metadata(self, digests):
        """capture_problems() of this database, whose table has the row
        digests |digests|."""
        db = connect(self.path)
        try:
            applying, clock = db.execute(
                "SELECT applying, clock FROM _lipsync_state").fetchone()
            items = {u: Item(c, s, bool(d), rd, (bc, bs))
                     for u, c, s, d, rd, bc, bs in db.execute(
                         "SELECT uuid, clock, site, deleted, rowdig, "
                         "base_clock, base_site "
                         f'FROM "_lipsync_meta_{TABLE}"')}
            prev = {u: (c, s, bool(d)) for u, c, s, d in db.execute(
                "SELECT uuid, clock, site, deleted "
                f'FROM "_lipsync_prev_{TABLE}"')}
            kept = db.execute("SELECT sum, count FROM _lipsync_tables "
                              "WHERE name = ?", (TABLE,)).fetchone()
        finally:
            db.close()
        # The kept summary counts, for an item changed since the last fold,
        # the state the fold log holds (clock NULL: none), else the item.
        counted = [(u, it.clock, it.site, it.deleted)
                   for u, it in items.items() if u not in prev]
        counted += [(u, *state) for u, state in prev.items()
                    if state[0] is not None]
        problems, dirty = capture_problems(
            digests, items, counted,
            (int.from_bytes(kept[0] or bytes(16), "big"), kept[1])
            if kept else None, clock)
        if applying != 0:
            problems.append("_lipsync_state.applying is still set: the "
                            "capture triggers ignore every local write")
        if kept is None:
            problems.append(f"_lipsync_tables has no row for {TABLE}")
        return problems, dirty

    def settle(self):
        pass


class PgSide:
    """A PostgreSQL database of one side, saved as a template database and
    restored by dropping it and creating it again from the template. The
    store records the OID of the database that made its site id (its
    "home") and treats a database found under another OID as a copy, which
    takes a new site id and forgets its checkpoints: after a restore the
    test records the new OID as home, so that the restored database syncs
    as the saved one would. (CREATE DATABASE ... OID = reuses the OID, but
    on PostgreSQL 15 reusing a dropped database's OID can PANIC the server:
    "trying to drop stats entry already dropped".)"""

    kind = "pg"

    def __init__(self, label):
        self.label = label
        self.db = PgDatabase(new_pg_name(label))
        self.name = self.db.name
        self.saved = new_pg_name(f"{label}_saved")
        self.admin = pg_admin_conninfo()
        self.columns = None

    @property
    def dsn(self):
        return self.db.dsn

    def save(self):
        wait_for_pg_sessions(self.admin, [self.name])
        psql(self.admin,
             f"CREATE DATABASE {quote_ident(self.saved)} TEMPLATE "
             f"{quote_ident(self.name)}",
             extra=["-c",
                    f"DROP DATABASE IF EXISTS {quote_ident(self.saved)}"])

    def restore(self):
        psql(self.admin,
             f"CREATE DATABASE {quote_ident(self.name)} TEMPLATE "
             f"{quote_ident(self.saved)}",
             extra=["-c", f"DROP DATABASE IF EXISTS {quote_ident(self.name)}"
                    " WITH (FORCE)"])
        self.db.sql("UPDATE _lipsync.state SET home = (SELECT oid FROM "
                    "pg_database WHERE datname = current_database())")

    def drop(self):
        for name in (self.name, self.saved):
            psql(self.admin,
                 f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")

    def rows(self):
        """As PgDatabase.rows(), without reading the columns each time."""
        if self.columns is None:
            self.columns = sorted(self.db.canonical_columns(TABLE))
        got = self.db._select(TABLE, [(UUID_COLUMN, "uuid")] + self.columns,
                              UUID_COLUMN)
        return [(r[0],) + tuple(value_key(v) for v in r[1:]) for r in got]

    def content(self):
        """The rows as a list that compares equal exactly when the rows
        do: psql's output of an exact rendering of each value, undecoded
        (cheaper than rows())."""
        if self.columns is None:
            self.columns = sorted(self.db.canonical_columns(TABLE))
        exprs = [self.db._read_expr(n, t)
                 for n, t in [(UUID_COLUMN, "uuid")] + self.columns]
        return self.db.sql(f"SELECT {', '.join(exprs)} FROM {TABLE} ORDER BY "
                           f"{UUID_COLUMN}", extra=["-F", UNIT_SEP]
                           ).splitlines()

    def integrity(self):
        return [("ok",)]

    def run_sql(self, statement):
        self.db.run_sql(statement)

    def metadata(self, digests):
        """capture_problems() of this database, whose table has the row
        digests |digests|."""
        reg = quote_literal(f"public.{TABLE}")
        sep = "chr(31)"
        out = self.db.sql(
            f"SELECT concat_ws({sep}, 'i', uuid::text, clock, "
            "encode(site, 'hex'), deleted::int, "
            "coalesce(encode(rowdig, 'hex'), ''), base_clock, "
            "coalesce(encode(base_site, 'hex'), '-')) "
            f'FROM public."_lipsync_meta_{TABLE}" '
            f"UNION ALL SELECT concat_ws({sep}, 'k', "
            "coalesce(encode(sum, 'hex'), ''), count) FROM _lipsync.tables "
            f"WHERE name = {reg} "
            f"UNION ALL SELECT concat_ws({sep}, 'd', "
            "coalesce(encode(add_sum, 'hex'), ''), "
            "coalesce(encode(sub_sum, 'hex'), ''), count_delta) "
            f"FROM _lipsync.deltas WHERE tbl = {reg} "
            f"UNION ALL SELECT concat_ws({sep}, 'c', GREATEST("
            "(SELECT last_value FROM _lipsync.clock), "
            "(SELECT floor FROM _lipsync.state)))")
        items, kept, clock = {}, None, 0
        delta_sum = delta_count = 0
        for line in out.splitlines():
            f = line.split(UNIT_SEP)
            if f[0] == "i":
                items[f[1]] = Item(int(f[2]), bytes.fromhex(f[3]),
                                   f[4] == "1",
                                   bytes.fromhex(f[5]) if f[5] else None,
                                   (int(f[6]), None if f[7] == "-"
                                    else bytes.fromhex(f[7])))
            elif f[0] == "k":
                kept = (int(f[1] or "0", 16), int(f[2]))
            elif f[0] == "d":
                delta_sum += int(f[1] or "0", 16) - int(f[2] or "0", 16)
                delta_count += int(f[3])
            elif f[0] == "c":
                clock = int(f[1])
        problems = []
        if kept is None:
            problems.append(f"_lipsync.tables has no row for public.{TABLE}")
        else:
            # The kept summary is the registry row plus the delta rows.
            kept = ((kept[0] + delta_sum) % (1 << 128),
                    kept[1] + delta_count)
        counted = [(u, it.clock, it.site, it.deleted)
                   for u, it in items.items()]
        found, dirty = capture_problems(digests, items, counted, kept,
                                        clock)
        return found + problems, dirty

    def settle(self):
        wait_for_pg_sessions(self.admin, [self.name])


def wait_for_pg_sessions(admin, names, timeout=SYNC_TIMEOUT):
    """Waits until no client session is connected to the databases
    |names|: a killed program's backend may still be finishing its COMMIT,
    or rolling back, when the program is gone."""
    listed = ", ".join(quote_literal(n) for n in names)
    deadline = time.monotonic() + timeout
    while int(psql(admin, "SELECT count(*) FROM pg_stat_activity WHERE "
                   f"datname IN ({listed}) AND "
                   "backend_type = 'client backend'")):
        if time.monotonic() > deadline:
            raise AssertionError(f"sessions of {names} did not end within "
                                 f"{timeout}s")
        time.sleep(0.02)


# ---- the matrix -------------------------------------------------------------

# The city columns in name order (the order rows() gives), as indexes into
# CITY_SCHEMA order.
CITY_ORDER = [i for _, i in sorted((n, i) for i, (n, _)
                                   in enumerate(CITY_SCHEMA))]


def describe_difference(rows, before, after):
    """Why |rows| is neither |before| nor |after| (lists of rows in any
    comparable form): a half-synced table."""
    have, b, a = set(rows), set(before), set(after)
    return (f"{len(rows)} rows, {len(have - b)} not in the state before "
            f"and {len(b - have)} missing from it; {len(have - a)} not in "
            f"the state after and {len(a - have)} missing from it")


class CrashMatrix:
    """The crash-fault matrix on one backend (both sides on |backend|)."""

    backend = None

    # -- preparation, once per backend --

    @classmethod
    def setUpClass(cls):
        for binary in (FAULT_SERVER, FAULT_CLIENT):
            if not os.access(binary, os.X_OK):
                raise AssertionError(
                    f"{binary} is missing: build the fault-injection binaries "
                    "(make build/fault/bin/lipsync-server "
                    "build/fault/bin/lipsync-client) or set LIPSYNC_FAULT_BIN")
        started = time.monotonic()
        tmp = tempfile.TemporaryDirectory(prefix="lipsync-crash-")
        cls.addClassCleanup(tmp.cleanup)
        cls.dir = Path(tmp.name)
        cls.secret_file = write_secret(cls.dir / "secret",
                                       os.urandom(32).hex())
        if cls.backend == "sqlite":
            cls.client = SqliteSide(cls.dir, "client")
            cls.server = SqliteSide(cls.dir, "server")
        else:
            cls.client = PgSide("crash_client")
            cls.addClassCleanup(cls.client.drop)
            cls.server = PgSide("crash_server")
            cls.addClassCleanup(cls.server.drop)
        cls.sides = {"client": cls.client, "server": cls.server}
        cls.prepare()
        cls.calibrate()
        cls.restore()
        note(f"crash {cls.backend}: prepared {ROWS} rows and calibrated in "
             f"{time.monotonic() - started:.1f}s; the reference sync: "
             f"{cls.reference_summary}")

    @classmethod
    def prepare(cls):
        """Both sides share 80% of the rows through a first sync, then each
        updates and deletes shared rows and inserts its own, and some rows
        change on both sides (the later change wins, lww): the state the
        sync under test starts from, saved, with the result a complete
        sync of it must give."""
        rows = cities()[:ROWS]
        if len(rows) < ROWS:
            raise AssertionError(f"the cities data has only {len(rows)} rows")
        a, b, c = int(ROWS * 0.4), int(ROWS * 0.8), int(ROWS * 0.9)
        cls.client.db.create_table(TABLE, rows=rows[:a])
        cls.server.db.create_table(TABLE, rows=rows[a:b])
        r = cls.fault_free_sync()
        if r.returncode != EXIT_OK:
            raise AssertionError(f"the first sync failed: {r.stderr}")
        # Shares of the shared rows by city_id % 40: the client updates 1-3
        # and deletes 4-5, the server updates 6-8 and deletes 9-10; both
        # update 11; the client deletes 12 and the server updates it
        # later; the client updates 13 and the server deletes it later.
        cls.client.run_sql("UPDATE cities SET population = population + 1 "
                           "WHERE city_id % 40 IN (1, 2, 3, 11, 13)")
        cls.client.run_sql("DELETE FROM cities WHERE city_id % 40 IN "
                           "(4, 5, 12)")
        cls.server.run_sql("UPDATE cities SET name = name || ' (s)' "
                           "WHERE city_id % 40 IN (6, 7, 8, 11, 12)")
        cls.server.run_sql("DELETE FROM cities WHERE city_id % 40 IN "
                           "(9, 10, 13)")
        cls.client.db.insert(TABLE, CITY_SCHEMA, rows[b:c])
        cls.server.db.insert(TABLE, CITY_SCHEMA, rows[c:])
        expected = rows[b:]
        for row in rows[:b]:
            share = row[0] % 40
            if share in (4, 5, 9, 10, 13):
                continue
            if share in (1, 2, 3):
                row = row[:6] + (row[6] + 1,) + row[7:]
            if share in (6, 7, 8, 11, 12):
                row = row[:1] + (row[1] + " (s)",) + row[2:]
            expected.append(row)
        cls.expected_cities = sorted(tuple(k[i] for i in CITY_ORDER)
                                     for k in row_keys(expected))
        cls.content, cls.digests, cls.dirty = {}, {}, {}
        for name, side in cls.sides.items():
            side.settle()
            side.save()
            cls.record(name, BEFORE, side.rows())

    @classmethod
    def record(cls, name, state, rows):
        """Keeps what the |name| side looks like in |state| (before or
        after the sync), its table holding |rows|."""
        side = cls.sides[name]
        cls.content[name, state] = side.content()
        cls.digests[name, state] = row_digests(rows)
        problems, cls.dirty[name, state] = side.metadata(
            cls.digests[name, state])
        if problems:
            raise AssertionError(f"the {name}'s metadata {state} the "
                                 f"sync: {problems}")

    @classmethod
    def calibrate(cls):
        """The fault-free reference sync of the prepared state: through a
        relay that records the frames, with the fault counters on. Gives
        the state after a complete sync, and what each side passes."""
        cls.restore()
        counts = {role: cls.dir / f"{role}.counts" for role in cls.sides}
        server, address = cls.start_server(
            faults={"LIPSYNC_FAULT_COUNT": str(counts["server"])}, once=True)
        try:
            relay = Relay(int(address.rsplit(":", 1)[1]))
        except OSError:
            stop_process(server)
            raise
        try:
            r = cls.run_client(
                address=relay.address,
                faults={"LIPSYNC_FAULT_COUNT": str(counts["client"])})
            status = server.wait(SYNC_TIMEOUT)
        finally:
            relay.close()
            stop_process(server)
        if r.returncode != EXIT_OK or status != EXIT_OK:
            raise AssertionError(f"the reference sync failed: client "
                                 f"{r.returncode} {r.stderr}, server {status}")
        cls.reference_summary = r.stdout.strip()
        up, down = frame_names(bytes(relay.up)), frame_names(bytes(relay.down))
        cls.frames = {"server": (up, down), "client": (down, up)}
        cls.counts = {}
        for role, path in counts.items():
            c = read_counts(path)
            if set(c) != {"commit", "exit"}:
                raise AssertionError(f"{role} counts: {path.read_text()!r}")
            received, sent = cls.frames[role]
            if c["exit"]["recv"] != len(received) or \
                    c["exit"]["send"] != len(sent):
                raise AssertionError(
                    f"the {role} counted {c['exit']} but the relay saw "
                    f"{received} in and {sent} out")
            cls.counts[role] = c
        after = cls.client.rows()
        if cls.server.rows() != after:
            raise AssertionError("the reference sync left two different "
                                 "tables")
        if sorted(r[1:] for r in after) != cls.expected_cities:
            raise AssertionError("the reference sync did not give the "
                                 "expected rows")
        for name in cls.sides:
            cls.record(name, AFTER, after)
        if cls.dirty["client", AFTER] != 0:
            raise AssertionError("after a sync the client's items have "
                                 "bases other than their versions")

    @classmethod
    def restore(cls):
        for side in cls.sides.values():
            side.settle()
            side.restore()

    # -- running the programs --

    @classmethod
    def start_server(cls, faults=None, once=False):
        """Starts a server of the fault build, with the fault variables
        |faults|; returns it and its address."""
        args = [str(FAULT_SERVER), "--db", cls.server.dsn, "--listen",
                "127.0.0.1:0", "--secret-file", str(cls.secret_file),
                "--table", TABLE, "--plaintext",
                # A session's connection ends with it: settle() waits for
                # a killed program's backend, save() copies the database.
                "--idle-connections", "0"] + (["--once"] if once else [])
        with open(cls.dir / "server.log", "wb") as log:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=log,
                                    env=clean_env(**(faults or {})))
        try:
            line = read_line(proc.stdout.fileno(), 10)
        except AssertionError as e:
            stop_process(proc)
            raise AssertionError(f"server did not start: {e}\n"
                                 f"{cls.server_log()}")
        finally:
            proc.stdout.close()
        match = re.fullmatch(r"listening on (.+:\d+)", line)
        if not match:
            stop_process(proc)
            raise AssertionError(f"unexpected first line {line!r}")
        return proc, match.group(1)

    @classmethod
    def server_log(cls):
        return (cls.dir / "server.log").read_text(errors="replace")

    @classmethod
    def client_command(cls, address, extra=()):
        return client_args(cls.client.dsn, address, [TABLE], cls.secret_file,
                           ["--plaintext", *extra], FAULT_CLIENT)

    @classmethod
    def run_client(cls, address, faults=None):
        return subprocess.run(
            cls.client_command(address), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, env=clean_env(**(faults or {})),
            timeout=SYNC_TIMEOUT)

    @classmethod
    def fault_free_sync(cls):
        server, address = cls.start_server()
        try:
            return cls.run_client(address)
        finally:
            stop_process(server)

    # -- one kill --

    def expected_outcome(self, role, moment):
        """The states the protocol allows each side after |role| is killed
        at |moment| (spec 10.2, 10.3): nobody commits before the server;
        the server commits before it sends Committed; the client commits
        only after receiving it."""
        at_commit = self.counts[role]["commit"]
        before_commit = moment.n <= at_commit[moment.point]
        # SQLite: a file write after the commit point may come before or
        # after the commit record; PostgreSQL: the first COMMIT sent is the
        # sync's, a later one maintenance's.
        during_commit = moment.point == "fswrite" or (
            moment.point == "commit-sent" and moment.n == 1)
        if role == "server":
            if before_commit:
                return {"server": {BEFORE}, "client": {BEFORE}}
            return {"server": EITHER if during_commit else {AFTER},
                    "client": EITHER}
        if before_commit:
            got_committed = moment.what == "Committed received"
            return {"server": {AFTER} if got_committed else EITHER,
                    "client": {BEFORE}}
        return {"server": {AFTER},
                "client": EITHER if during_commit else {AFTER}}

    def classify(self, name, content):
        """BEFORE or AFTER, the state of the |name| side whose table has
        |content|, or what makes it neither."""
        for state in (BEFORE, AFTER):
            if content == self.content[name, state]:
                return state
        return describe_difference(content, self.content[name, BEFORE],
                                   self.content[name, AFTER])

    def run_killed_sync(self, role, moment):
        """Runs one sync in which |role| is killed at |moment|. Returns the
        exit status of each program, when each ended (a program still
        running PROMPT_SECONDS after the kill is missing: it was killed
        then), and their messages."""
        self.restore()
        kill = {"LIPSYNC_FAULT_KILL": moment.spec}
        server, address = self.start_server(
            faults=kill if role == "server" else None, once=True)
        procs, ended = {"server": server}, {}
        with open(self.dir / "client.out", "w+") as out, \
                open(self.dir / "client.err", "w+") as err:
            try:
                procs["client"] = subprocess.Popen(
                    self.client_command(address, ["--retries", "0"]),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    env=clean_env(**(kill if role == "client" else {})))
                deadline = time.monotonic() + SYNC_TIMEOUT
                while len(ended) < 2 and time.monotonic() < deadline:
                    for name, proc in procs.items():
                        if name not in ended and proc.poll() is not None:
                            ended[name] = time.monotonic()
                    if role in ended and \
                            time.monotonic() - ended[role] > PROMPT_SECONDS:
                        break
                    time.sleep(0.005)
            finally:
                for proc in procs.values():
                    stop_process(proc, signal.SIGKILL)
            out.seek(0)
            err.seek(0)
            messages = {"server": self.server_log(), "client": err.read(),
                        "client stdout": out.read()}
        status = {name: proc.returncode for name, proc in procs.items()}
        return status, ended, messages

    def crash(self, role, moment, tally):
        """Kills |role| at |moment| and checks what it leaves; returns the
        state of each database (before or after)."""
        survivor = "client" if role == "server" else "server"
        status, ended, messages = self.run_killed_sync(role, moment)
        context = (f"\n{role} killed at {moment}; exit status {status}\n"
                   f"server log:\n{messages['server']}\n"
                   f"client stderr:\n{messages['client']}")
        for name in self.sides:
            self.assertNotRegex(messages[name], SANITIZER_RE, context)
        self.assertIn(role, ended, f"the {role} did not end" + context)
        self.assertEqual(status[role], -signal.SIGKILL,
                         f"the {role} was not killed" + context)
        self.assertIn(survivor, ended,
                      f"the {survivor} was still running {PROMPT_SECONDS}s "
                      "after the kill" + context)

        # Each database exactly as before the sync or as after a complete
        # one, with consistent metadata, as the protocol allows.
        states = {}
        for name, side in self.sides.items():
            side.settle()
            self.assertEqual(side.integrity(), [("ok",)],
                             f"the {name} database is damaged" + context)
            state = self.classify(name, side.content())
            self.assertIn(state, (BEFORE, AFTER),
                          f"the {name} database is half synced: {state}"
                          + context)
            states[name] = state
            problems, dirty = side.metadata(self.digests[name, state])
            self.assertEqual(problems, [], f"the {name}'s capture metadata"
                             + context)
            if name == "client":
                self.assertEqual(dirty, self.dirty[name, state],
                                 "the client's bases are not those of the "
                                 f"state {state}" + context)
        allowed = self.expected_outcome(role, moment)
        for name in self.sides:
            self.assertIn(states[name], allowed[name],
                          f"the {name} is {states[name]}, not "
                          f"{' or '.join(sorted(allowed[name]))}" + context)
        # The survivor failed, with a message, unless its side completed.
        if status[survivor] == EXIT_OK:
            self.assertEqual(states[survivor], AFTER, context)
        else:
            self.assertEqual(states[survivor], BEFORE, context)
            self.assertEqual(status[survivor], EXIT_PEER, context)
            # The server's session lines start with a timestamp.
            self.assertRegex(messages[survivor],
                             rf"(?m)^(\S+ )?lipsync-{survivor}: .*\S",
                             context)
        if survivor == "client":
            self.assertEqual(messages["client stdout"] != "",
                             status["client"] == EXIT_OK, context)

        self.converge(context)
        tally[states["server"], states["client"]] += 1
        note(f"crash {self.backend} kill-{role} {moment}: "
             f"server={states['server']} client={states['client']} "
             f"({survivor} exit {status[survivor]}, "
             f"{ended[survivor] - ended[role]:+.2f}s after the kill)")
        return states

    def converge(self, context):
        """A fault-free sync completes what the killed one left; one more
        moves nothing."""
        server, address = self.start_server()
        try:
            r = self.run_client(address)
            self.assertEqual(r.returncode, EXIT_OK,
                             f"the sync after the crash failed: {r.stderr}"
                             + context)
            for name, side in self.sides.items():
                side.settle()
                state = self.classify(name, side.content())
                self.assertEqual(state, AFTER,
                                 f"the {name} did not converge" + context)
                problems, _ = side.metadata(self.digests[name, AFTER])
                self.assertEqual(problems, [],
                                 f"the {name}'s capture metadata after the "
                                 "sync that converged" + context)
            r = self.run_client(address)
            self.assertEqual(r.returncode, EXIT_OK, r.stderr + context)
            self.assertEqual(parse_summary(r.stdout), {TABLE: (0, 0)},
                             "the sync after convergence moved rows" + context)
        finally:
            self.assertEqual(stop_process(server), 0,
                             self.server_log() + context)

    def try_moment(self, role, moment, tally, outcomes):
        """crash() as a subtest named after the backend and the moment;
        records the state it left the killed side in (None: it failed)."""
        outcomes[moment.point, moment.n] = None
        with self.subTest(backend=self.backend, killed=role,
                          moment=str(moment)):
            outcomes[moment.point, moment.n] = self.crash(
                role, moment, tally)[role]

    def find_commit_record(self, role, tally, outcomes):
        """SQLite: bisects the file writes between the commit point and the
        exit for the one that makes the commit durable (the WAL frame that
        holds the commit record): a kill before it leaves the killed side
        before, a kill after it after. Returns how many kills it added."""
        counts = self.counts[role]
        first = counts["commit"]["fswrite"] + 1
        last = counts["exit"]["fswrite"]
        # Known ends: a kill at the commit point leaves the side before;
        # no kill at all leaves it after.
        lo, hi, added = first - 1, last + 1, 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ("fswrite", mid) not in outcomes:
                self.try_moment(role, Moment(
                    "fswrite", mid, f"file write {mid} of {first}..{last}, "
                    "commit record search", "commit"), tally, outcomes)
                added += 1
            state = outcomes["fswrite", mid]
            if state is None:
                return added
            lo, hi = (mid, hi) if state == BEFORE else (lo, mid)
        note(f"crash {self.backend} kill-{role}: file write {lo} (of "
             f"{first}..{last}) makes the commit durable: a kill before it "
             "leaves the side before, a kill after it after")
        return added

    def run_matrix(self, role):
        started = time.monotonic()
        received, sent = self.frames[role]
        categories = candidate_moments(self.backend, received, sent,
                                       self.counts[role]["commit"],
                                       self.counts[role]["exit"])
        moments = choose_moments(categories, MOMENTS)
        self.assertGreaterEqual(len(moments), min(MOMENTS, 20))
        note(f"crash {self.backend} kill-{role}: {len(moments)} moments "
             f"chosen from the counts {self.counts[role]}")
        tally, outcomes = collections.Counter(), {}
        for moment in moments:
            self.try_moment(role, moment, tally, outcomes)
        total = len(moments)
        if self.backend == "sqlite":
            total += self.find_commit_record(role, tally, outcomes)
        self.restore()
        outcome = ", ".join(f"server={s} client={c}: {n}"
                            for (s, c), n in sorted(tally.items()))
        note(f"crash {self.backend} kill-{role}: {sum(tally.values())} of "
             f"{total} kills passed ({outcome}) in "
             f"{time.monotonic() - started:.1f}s")

    # -- the tests --

    def test_kill_server(self):
        """SIGKILL of the server at each chosen moment: the client exits
        with a message, both databases are intact, each as before or as
        after the sync, with consistent metadata, and they converge."""
        self.run_matrix("server")

    def test_kill_client(self):
        """SIGKILL of the client at each chosen moment: the same, with the
        server as the survivor."""
        self.run_matrix("client")

    def test_metadata_check_finds_corruption(self):
        """The metadata check of this file fails on a database whose
        metadata was damaged behind the capture triggers' back, so that its
        silence after a crash means something."""
        side = self.server
        for damage, expected in self.corruptions():
            with self.subTest(damage=damage):
                side.restore()
                for statement in damage:
                    side.run_sql(statement)
                side.settle()
                problems, _ = side.metadata(row_digests(side.rows()))
                self.assertTrue(any(expected in p for p in problems),
                                f"{damage}: {problems}")
        self.restore()

    def corruptions(self):
        """(statements, what the check must then say), for this backend."""
        meta = f'"_lipsync_meta_{TABLE}"'
        row = f"(SELECT {UUID_COLUMN} FROM {TABLE} ORDER BY city_id LIMIT 1)"
        # A row that still has its initial version (clock 0).
        initial = (f"(SELECT {UUID_COLUMN} FROM {TABLE} JOIN {meta} ON uuid "
                   f"= {UUID_COLUMN} WHERE clock = 0 ORDER BY city_id "
                   "LIMIT 1)")
        common = [
            ([f"DELETE FROM {meta} WHERE uuid = {row}"],
             "rows without an item"),
            ([f"UPDATE {meta} SET deleted = NOT deleted WHERE uuid = {row}"],
             "both a row and a tombstone"),
        ]
        if self.backend == "sqlite":
            off, on = ("UPDATE _lipsync_state SET applying = 1",
                       "UPDATE _lipsync_state SET applying = 0")
            return common + [
                ([off, f"DELETE FROM {TABLE} WHERE {UUID_COLUMN} = {row}",
                  on], "live items without a row"),
                ([off, f"UPDATE {TABLE} SET population = population + 1 "
                  f"WHERE {UUID_COLUMN} = {initial}", on], "initial version"),
                (["UPDATE _lipsync_tables SET count = count + 1"],
                 "kept summary"),
                ([off], "applying is still set"),
                (["UPDATE _lipsync_state SET clock = 0"], "clock state"),
            ]
        off = "BEGIN; SET LOCAL lipsync.applying = 'on'; "
        return common + [
            ([f"{off} DELETE FROM {TABLE} WHERE {UUID_COLUMN} = {row}; "
              "COMMIT"], "live items without a row"),
            ([f"{off} UPDATE {TABLE} SET population = population + 1 "
              f"WHERE {UUID_COLUMN} = {initial}; COMMIT"], "initial version"),
            (["UPDATE _lipsync.tables SET count = count + 1"], "kept summary"),
            (["SELECT setval('_lipsync.clock', 1); "
              "UPDATE _lipsync.state SET floor = 0"], "clock state"),
        ]


class CrashTest_sqlite(CrashMatrix, unittest.TestCase):
    """The crash-fault matrix with both sides on SQLite files."""

    backend = "sqlite"


class CrashTest_pg(CrashMatrix, unittest.TestCase):
    """The crash-fault matrix with both sides on PostgreSQL databases."""

    backend = "pg"


if __name__ == "__main__":
    unittest.main()

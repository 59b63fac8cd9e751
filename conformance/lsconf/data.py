"""The data plane: fixture files, and the tests that replay them through an
implementation's two programs on every pair of backends.

Fixture format (conformance/README.md, "Fixtures"): a text file, one
directive a line, `#` comments, indented lines belong to the block above.

  requirements: LS-RECON-8 LS-APPLY-3     IDs of spec/ the case checks
  level: MUST                              MUST (default) or SHOULD
  features: x-foo                          optional features it needs
  backends: sqlite postgres                backends every side may use
  pairs: sqlite-postgres                   only these client-server pairs
  description: one sentence

  table NAME[ @client|@client2|@server][ no-uuid]: COL TYPE, ...
  table NAME: cities                       the nine columns of cities.csv
  table NAME @client: absent               that side has no such table

  client NAME:                             initial rows (indented), each
    UUID VALUE VALUE ...                   UUID and one value per column
    cities A:B [any-uuid] [COL+N]...       rows A..B-1 of cities.csv (COL+N,
                                           COL-N: that integer column plus
                                           or minus N in every row)
  server NAME:
  client2 NAME:                            a second client of the server
  server2 NAME:                            a second server

  sync [client|client2] [to server|server2] [expect OUTCOME]
       [unchanged] [policy P] [retention MS] [mode incremental|ranges]
       [full]
                                           run one sync of the client (or
                                           client2) with the server
                                           (OUTCOME: ok, fail, conflict,
                                           schema, ..., any; P: lww,
                                           server-wins, client-wins; MS:
                                           milliseconds;
                                           mode: every table was / none was
                                           listed in TablesOpened.
                                           incremental; full: the impl's
                                           full_option)
  sql client|client2|server|both|all[ fails|uncaptured]: STATEMENT
                                           run SQL on those databases
                                           (fails: each must refuse it;
                                           uncaptured: through the impl's
                                           uncaptured_sql_BACKEND)
  init client|client2|server               run the impl's client_init or
                                           server_init on that database
  save SIDE NAME, restore SIDE NAME        snapshot a database, put it back
                                           (a restore from a backup)
  copy SIDE1 SIDE2                         SIDE2 becomes a copy of SIDE1

  expect client|client2|server|both|all NAME:
    ...                                    the table at this point (rows as
                                           above, UUID * = any); both: client
                                           and server hold the same rows;
                                           all: client, client2 and server
                                           do

The database client2 exists only in fixtures that name it; it has the
client's backend and, unless `table NAME @client2:` says otherwise, the
client's schema; server2 likewise has the server's (a second server, which
`sync ... to server2` syncs with). `all` means every database the fixture
uses. Steps run in order; before each step the harness waits
STEP_GAP (5 ms), so each write (sql, init, sync) happens at a later
millisecond than every write before it and row versions (hybrid logical
clocks, wall milliseconds << 16) order the fixture's changes as written.
"""

import csv
import gzip
import hashlib
import io
import os
import re
import threading
import time
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path

from . import pbwire
from . import values as V
from .core import Test, Outcome, PASS, FAIL, passed, failed
from .databases import (DECLARED, HarnessError, UUID_COLUMN, canonical_order,
                        format_row, rows_digest)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
CITIES_GZ = FIXTURES / "data" / "cities.csv.gz"
CITY_SCHEMA = [("city_id", "integer"), ("name", "text"),
               ("alt_name", "text"), ("country", "text"),
               ("feature_code", "text"), ("admin_code", "text"),
               ("population", "integer"), ("lon", "real"), ("lat", "real")]
SIDES = ("client", "server")         # each table has a schema for both
DATABASES = ("client", "client2", "server", "server2")
SERVERS = ("server", "server2")     # the databases servers run on
GROUPS = {"both": ("client", "server"),
          "all": DATABASES}         # those of DATABASES the fixture uses
POLICIES = ("lww", "server-wins", "client-wins")
MODES = ("incremental", "ranges")
INCREMENTAL = "incremental"         # the feature of spec 8.8
STEP_GAP = 0.005        # seconds between steps: writes at distinct ms
HASH_ABOVE = 200        # expected tables larger than this compare by hash
DIFF_LINES = 12


class FixtureError(Exception):
    pass


# ---- cities -----------------------------------------------------------------

_cities = []
_cities_lock = threading.Lock()     # tests run in threads (-j)


def cities(stop):
    """The first |stop| data rows of cities.csv.gz as canonical values."""
    with _cities_lock:
        if len(_cities) < stop:
            if not CITIES_GZ.is_file():
                raise HarnessError(f"{CITIES_GZ} is missing")
            rows = []
            with gzip.open(CITIES_GZ, "rt", encoding="utf-8",
                           newline="") as f:
                reader = csv.reader(f)
                next(reader)
                for r in reader:
                    rows.append((
                        ("integer", int(r[0])), ("text", r[1]),
                        ("text", r[2]), ("text", r[3]), ("text", r[4]),
                        ("text", r[5]), ("integer", int(r[6])),
                        ("real", V.real_bits(float(r[7]))),
                        ("real", V.real_bits(float(r[8])))))
                    if len(rows) >= max(stop, 10000):
                        break
            if len(rows) < stop:
                raise FixtureError(f"cities.csv has only {len(rows)} rows")
            _cities[:] = rows
        return _cities[:stop]


def city_uuid(i):
    b = bytearray(hashlib.sha256(b"lipsync-cities:%d" % i).digest()[:16])
    b[6] = (b[6] & 0x0f) | 0x40
    b[8] = (b[8] & 0x3f) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# ---- fixtures -----------------------------------------------------------------

class Table:
    def __init__(self, name):
        self.name = name
        self.columns = {}       # side -> [(name, ctype)]
        self.with_uuid = {}     # side -> bool


class Fixture:
    def __init__(self, name, path=None):
        self.name = name
        self.path = path
        self.requirements = []
        self.level = "MUST"
        self.features = frozenset()
        self.backends = ("sqlite", "postgres")
        self.pairs = None           # None, or a set of (client, server)
        self.description = ""
        self.tables = {}            # name -> Table, in order
        self.initial = {}           # (side, table) -> [(uuid, vals)]
        self.steps = []             # Sync(...), ("sql", sides, statement,
                                    # lineno, must fail, uncaptured),
                                    # ("init", side, lineno), ("expect",
                                    # index in self.expect, lineno),
                                    # ("save"|"restore", side, name,
                                    # lineno), ("copy", from, to, lineno)
        self.expect = []            # (side, table, [(uuid, vals)], lineno)

    @property
    def databases(self):
        """The databases the fixture uses: client and server, and client2
        when it names it."""
        used = {k[0] for k in self.initial if self.initial[k]}
        for st in self.steps:
            if isinstance(st, Sync):
                used.add(st.who)
            elif st[0] == "sql" and st[1] != GROUPS["all"]:
                used.update(st[1])
            elif st[0] in ("init", "save", "restore"):
                used.add(st[1])
            elif st[0] == "copy":
                used.update(st[1:3])
        for st in self.steps:
            if isinstance(st, Sync):
                used.add(st.server)
        for side, *_ in self.expect:
            if side != "all":
                used.update(GROUPS.get(side, (side,)))
        return tuple(d for d in DATABASES
                     if d in SIDES or d in used)

    @property
    def impl_keys(self):
        """The optional .impl keys the fixture needs."""
        keys = set()
        for st in self.steps:
            if isinstance(st, Sync):
                if st.policy is not None:
                    keys.add("policy_option")
                if st.retention is not None:
                    keys.add("retention_option")
                if st.full:
                    keys.add("full_option")
            elif st[0] == "init":
                keys.add("server_init" if st[1] in SERVERS else
                         "client_init")
        return frozenset(keys)

    def pair_keys(self, pair):
        """The optional .impl keys that depend on the backend pair, as
        (key, role) tuples: uncaptured_sql_BACKEND of the implementation
        whose database a `sql SIDE uncaptured:` step writes."""
        keys = set()
        for st in self.steps:
            if not isinstance(st, Sync) and st[0] == "sql" and st[5]:
                for side in st[1]:
                    role = "server" if side in SERVERS else "client"
                    backend = pair[1] if role == "server" else pair[0]
                    keys.add((f"uncaptured_sql_{backend}", role))
        return frozenset(keys)


class Sync:
    """A sync step: the client (or client2) syncs with the server. It
    indexes like the tuple ("sync", outcome, unchanged, lineno) the other
    steps resemble."""

    def __init__(self, who="client", outcome="ok", unchanged=False,
                 policy=None, retention=None, lineno=0, mode=None,
                 full=False, server="server"):
        self.who, self.outcome, self.unchanged = who, outcome, unchanged
        self.server = server
        self.policy, self.retention, self.lineno = policy, retention, lineno
        self.mode, self.full = mode, full

    def __getitem__(self, i):
        return ("sync", self.outcome, self.unchanged, self.lineno)[i]

    def __repr__(self):
        return (f"Sync({self.who} to {self.server}, {self.outcome}, "
                f"unchanged="
                f"{self.unchanged}, policy={self.policy}, retention="
                f"{self.retention}, mode={self.mode}, full={self.full}, "
                f"line {self.lineno})")


def parse_sync(words, err):
    """The words after `sync`: [client|client2] [expect OUTCOME]
    [unchanged] [policy P] [retention MS] [mode incremental|ranges]
    [full], in any order."""
    st = Sync()
    seen = set()
    i = 0
    while i < len(words):
        w = words[i]
        if w in seen:
            raise err(f"sync: {w} given twice")
        seen.add(w)
        if w in ("client", "client2"):
            if i > 0:
                raise err("sync: client or client2 comes first")
            st.who = w
        elif w == "unchanged":
            st.unchanged = True
        elif w == "full":
            st.full = True
        elif w in ("expect", "policy", "retention", "mode", "to"):
            if i + 1 >= len(words):
                raise err(f"sync: {w} wants a value")
            v = words[i + 1]
            i += 1
            if w == "expect":
                if not re.fullmatch(r"[a-z]+", v):
                    raise err(f"sync: bad outcome {v!r}")
                st.outcome = v
            elif w == "policy":
                if v not in POLICIES:
                    raise err(f"sync: policy is one of {', '.join(POLICIES)}")
                st.policy = v
            elif w == "to":
                if v not in SERVERS:
                    raise err(f"sync: to is one of {', '.join(SERVERS)}")
                st.server = v
            elif w == "mode":
                if v not in MODES:
                    raise err(f"sync: mode is one of {', '.join(MODES)}")
                st.mode = v
            else:
                if not re.fullmatch(r"[0-9]+", v):
                    raise err("sync: retention wants an integer number of "
                              "milliseconds")
                st.retention = int(v)
        else:
            raise err(f"sync: cannot read {w!r} (client|client2, to "
                      "server|server2, expect OUTCOME, unchanged, policy P, "
                      "retention MS, mode incremental|ranges, full)")
        i += 1
    if st.outcome == "any" and st.unchanged:
        raise err("sync: expect any and unchanged do not go together")
    return st


_TABLE = re.compile(r"table\s+(\S+?)(\s+@(client2|client|server2|server))?"
                    r"(\s+no-uuid)?\s*:(.*)$")
_BLOCK = re.compile(r"(client2|client|server2|server)\s+(\S+)\s*:\s*$")
_EXPECT = re.compile(r"expect\s+(client2|client|server2|server|both|all)\s+(\S+)"
                     r"\s*:\s*$")
_SYNC = re.compile(r"sync(\s.*)?$")
_SQL = re.compile(r"sql\s+(client2|client|server2|server|both|all)"
                  r"(\s+fails|\s+uncaptured)?\s*:\s*(.+)$")
_INIT = re.compile(r"init\s+(client2|client|server2|server)\s*$")
_SAVE = re.compile(r"(save|restore)\s+(client2|client|server2|server)\s+(\w+)\s*$")
_COPY = re.compile(r"copy\s+(client2|client|server2|server)\s+"
                   r"(client2|client|server2|server)\s*$")
_CITIES = re.compile(r"cities\s+(\d+):(\d+)((?:\s+\S+)*)$")
_ADJUST = re.compile(r"([a-z_]+)([+-])([0-9]+)$")
_REQ = re.compile(r"LS-[A-Z]+-[0-9]+")
CTYPES = set(DECLARED)


def parse_fixture(text, name, path=None):
    fx = Fixture(name, path)
    block = None            # (list to fill, table name, lineno)
    where = path or name
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        s = line.strip()
        if not s or s.startswith("#"):
            continue

        def err(msg):
            return FixtureError(f"{where}:{lineno}: {msg}")
        if raw[0].isspace():
            if block is None:
                raise err("indented line outside a rows block")
            rows, tname = block
            table = fx.tables[tname]
            m = _CITIES.match(s)
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                if not a <= b:
                    raise err("cities A:B wants A <= B")
                any_uuid, adjust = False, []
                for w in m.group(3).split():
                    am = _ADJUST.match(w)
                    if w == "any-uuid":
                        any_uuid = True
                    elif am:
                        names = [n for n, _ in CITY_SCHEMA]
                        if am.group(1) not in names or \
                                CITY_SCHEMA[names.index(am.group(1))][1] \
                                != "integer":
                            raise err(f"cities: {am.group(1)} is not an "
                                      "integer column of cities")
                        d = int(am.group(3))
                        adjust.append((names.index(am.group(1)),
                                       -d if am.group(2) == "-" else d))
                    else:
                        raise err(f"cities A:B: cannot read {w!r} (any-uuid"
                                  ", COL+N, COL-N)")
                rows.append(("cities", a, b, any_uuid, tuple(adjust)))
                continue
            try:
                words = V.split_words(s)
                uuid = V.parse_uuid(words[0])
                vals = tuple(V.parse_value(w) for w in words[1:])
            except V.NotationError as e:
                raise err(str(e)) from None
            ncols = {len(c) for c in table.columns.values() if c is not None}
            if len(vals) not in ncols:
                raise err(f"{len(vals)} values, table {tname} has "
                          f"{' or '.join(map(str, sorted(ncols)))} columns")
            rows.append((uuid, vals))
            continue
        block = None
        key, colon, value = s.partition(":")
        key = key.strip()
        if key in ("requirements", "level", "features", "backends",
                   "description", "pairs") and colon:
            value = value.strip()
            if key == "requirements":
                fx.requirements = value.replace(",", " ").split()
                for r in fx.requirements:
                    if not _REQ.fullmatch(r):
                        raise err(f"bad requirement ID {r!r}")
            elif key == "level":
                if value not in ("MUST", "SHOULD"):
                    raise err("level is MUST or SHOULD")
                fx.level = value
            elif key == "features":
                fx.features = frozenset(value.replace(",", " ").split())
            elif key == "backends":
                fx.backends = tuple(value.replace(",", " ").split())
                for b in fx.backends:
                    if b not in ("sqlite", "postgres"):
                        raise err(f"unknown backend {b!r}")
            elif key == "pairs":
                fx.pairs = set()
                for p in value.replace(",", " ").split():
                    c, dash, sv = p.partition("-")
                    if not dash or {c, sv} - {"sqlite", "postgres"}:
                        raise err(f"bad pair {p!r} (e.g. sqlite-postgres)")
                    fx.pairs.add((c, sv))
            else:
                fx.description = value
            continue
        m = _TABLE.match(s)
        if m:
            tname, side, nouuid, cols = (m.group(1), m.group(3),
                                         bool(m.group(4)), m.group(5).strip())
            if cols == "cities":
                columns = list(CITY_SCHEMA)
            elif cols == "absent":
                if not side:
                    raise err("only one side's table can be absent "
                              "(table NAME @client: absent)")
                columns = None
            else:
                columns = []
                for part in filter(None, (p.strip() for p in cols.split(","))):
                    bits = part.split()
                    if len(bits) != 2 or bits[1] not in CTYPES:
                        raise err(f"column {part!r}: want NAME TYPE, TYPE one "
                                  f"of {', '.join(sorted(CTYPES))}")
                    columns.append((bits[0], bits[1]))
            t = fx.tables.setdefault(tname, Table(tname))
            for sd in ([side] if side else DATABASES):
                if sd in t.columns:
                    raise err(f"table {tname} declared twice for {sd}")
                t.columns[sd] = columns
                t.with_uuid[sd] = not nouuid
            continue
        m = _BLOCK.match(s)
        if m:
            side, tname = m.groups()
            if tname not in fx.tables:
                raise err(f"table {tname} not declared")
            rows = fx.initial.setdefault((side, tname), [])
            block = (rows, tname)
            continue
        m = _EXPECT.match(s)
        if m:
            side, tname = m.groups()
            if tname not in fx.tables:
                raise err(f"table {tname} not declared")
            rows = []
            fx.expect.append((side, tname, rows, lineno))
            fx.steps.append(("expect", len(fx.expect) - 1, lineno))
            block = (rows, tname)
            continue
        m = _SYNC.match(s)
        if m:
            st = parse_sync((m.group(1) or "").split(), err)
            st.lineno = lineno
            fx.steps.append(st)
            continue
        m = _SQL.match(s)
        if m:
            sides = GROUPS.get(m.group(1), (m.group(1),))
            how = (m.group(2) or "").strip()
            fx.steps.append(("sql", sides, m.group(3), lineno,
                             how == "fails", how == "uncaptured"))
            continue
        m = _INIT.match(s)
        if m:
            fx.steps.append(("init", m.group(1), lineno))
            continue
        m = _SAVE.match(s)
        if m:
            what, side, name = m.groups()
            if what == "restore" and ("save", side, name) not in {
                    st[:3] for st in fx.steps if st[0] == "save"}:
                raise err(f"restore {side} {name}: no `save {side} "
                          f"{name}` before it")
            fx.steps.append((what, side, name, lineno))
            continue
        m = _COPY.match(s)
        if m:
            if m.group(1) == m.group(2):
                raise err("copy: two different databases")
            fx.steps.append(("copy", m.group(1), m.group(2), lineno))
            continue
        raise err(f"cannot read {s!r}")
    for t in fx.tables.values():
        for side in SIDES:
            if side not in t.columns:
                raise FixtureError(f"{where}: table {t.name} has no schema "
                                   f"for the {side}")
        for second, first in (("client2", "client"), ("server2", "server")):
            if second not in t.columns:
                t.columns[second] = t.columns[first]
                t.with_uuid[second] = t.with_uuid[first]
    for (side, tname), rows in fx.initial.items():
        if rows and fx.tables[tname].columns[side] is None:
            raise FixtureError(f"{where}: {side} {tname} is absent: it can "
                               "have no rows")
        for r in rows:
            if r[0] == "*":
                raise FixtureError(f"{where}: initial rows of {side} {tname} "
                                   "need a UUID (or - without _lipsync_uuid)")
            if r[0] != "cities" and (r[0] is None) == \
                    fx.tables[tname].with_uuid[side]:
                raise FixtureError(
                    f"{where}: {side} {tname}: rows "
                    + ("need a UUID" if r[0] is None else
                       "of a no-uuid table take - as UUID"))
    if not any(isinstance(st, Sync) for st in fx.steps):
        raise FixtureError(f"{where}: no step (sync)")
    if any(isinstance(st, Sync) and st.mode == INCREMENTAL
           for st in fx.steps) and INCREMENTAL not in fx.features:
        raise FixtureError(f"{where}: `sync ... mode {INCREMENTAL}` needs "
                           f"`features: {INCREMENTAL}`")
    if not fx.requirements:
        raise FixtureError(f"{where}: requirements: is missing")
    return fx


def expand_rows(rows, with_uuid=True):
    out = []
    for r in rows:
        if r[0] == "cities":
            data = cities(r[2])
            adjust = r[4] if len(r) > 4 else ()
            for i in range(r[1], r[2]):
                vals = data[i]
                if adjust:
                    vals = list(vals)
                    for col, d in adjust:
                        vals[col] = ("integer", vals[col][1] + d)
                    vals = tuple(vals)
                out.append(((("*" if r[3] else city_uuid(i)) if with_uuid
                             else None), vals))
        else:
            out.append(r)
    return out


def load_fixtures(directory=FIXTURES):
    out = []
    for p in sorted(Path(directory).glob("*.fixture")):
        out.append(parse_fixture(p.read_text(encoding="utf-8"), p.stem,
                                 str(p.relative_to(REPO)
                                     if p.is_relative_to(REPO) else p)))
    return out


# ---- comparison -----------------------------------------------------------

def compare_rows(expected, actual, exp_columns, act_columns):
    """Returns "" when |actual| matches |expected| (order-insensitive;
    expected UUID "*" matches any), else a readable diff."""
    if act_columns is None:
        return "table does not exist"
    if list(exp_columns) != list(act_columns):
        return (f"columns differ: expected {', '.join(exp_columns)}; "
                f"got {', '.join(act_columns)}")
    exact = Counter(r for r in expected if r[0] != "*")
    loose = Counter(r[1] for r in expected if r[0] == "*")
    extra = []
    for r in actual:
        if exact[r] > 0:
            exact[r] -= 1
        elif loose[r[1]] > 0 and r[0] is not None:
            loose[r[1]] -= 1
        else:
            extra.append(r)
    missing = list(exact.elements()) + [("*", v) for v in loose.elements()]
    if not missing and not extra:
        return ""
    lines = []
    if len(expected) > HASH_ABOVE or len(actual) > HASH_ABOVE:
        lines.append(f"expected {len(expected)} rows (sha256 "
                     f"{rows_digest(expected)[:16]}), got {len(actual)} rows "
                     f"(sha256 {rows_digest(actual)[:16]})")
    lines.append(f"{len(missing)} expected rows missing, {len(extra)} "
                 "unexpected rows (- expected, + actual; columns "
                 f"_lipsync_uuid {' '.join(exp_columns)}):")
    for sign, rows in (("-", missing), ("+", extra)):
        shown = sorted(format_row(r) for r in rows)
        for line in shown[:DIFF_LINES]:
            lines.append(f"  {sign} {line}")
        if len(shown) > DIFF_LINES:
            lines.append(f"  {sign} ... {len(shown) - DIFF_LINES} more")
    return "\n".join(lines)


# ---- running a fixture ------------------------------------------------------

def _tail(text, n=1500):
    text = (text or "").strip()
    return text if len(text) <= n else "..." + text[-n:]


def _pair_backend(ctx, side):
    return ctx.backend_pair[1 if side in SERVERS else 0]


def run_fixture(fx, ctx):
    client_impl = getattr(ctx, "client_impl", None) or ctx.impl
    server_impl = getattr(ctx, "server_impl", None) or ctx.peer or ctx.impl
    sides = fx.databases
    dbs = {side: ctx.database(_pair_backend(ctx, side), side)
           for side in sides}
    names = list(fx.tables)
    for side in sides:
        for t in fx.tables.values():
            if t.columns[side] is None:
                continue
            dbs[side].create_table(t.name, t.columns[side], t.with_uuid[side])
            rows = expand_rows(fx.initial.get((side, t.name), []),
                               t.with_uuid[side])
            dbs[side].insert(t.name, t.columns[side], rows)
            # The harness checks its own work: a backend that changed an
            # initial value makes the fixture wrong for this pair.
            cols = canonical_order(n for n, _ in t.columns[side])
            exp = [(u if u else "*", _reorder(v, t.columns[side], cols))
                   for u, v in rows]
            got = dbs[side].canonical_rows(t.name)
            if got is not None and not t.with_uuid[side]:
                got = (got[0], [("?", v) for _, v in got[1]])
            d = compare_rows(exp, got[1] if got else [], cols,
                             got[0] if got else None)
            if d:
                raise HarnessError(
                    f"fixture {fx.path or fx.name}: the {side}'s "
                    f"{dbs[side].backend} database does not hold the "
                    f"initial rows of {t.name} as given (restrict the "
                    f"fixture with backends: or pairs:):\n{d}")
    frames = []
    log = []
    for n, step in enumerate(fx.steps):
        if step[0] == "expect":
            bad = _check_expect(fx, ctx, dbs, fx.expect[step[1]], frames)
            if bad:
                return bad
            log.append(f"line {step[2]}: expectation met")
            continue
        if n:
            # Every write at a later millisecond than the writes before it
            # (versions are wall milliseconds << 16 | counter).
            time.sleep(STEP_GAP)
        if step[0] in ("save", "restore", "copy"):
            _copy_step(step, dbs)
            log.append(f"line {step[3]}: {' '.join(step[:3])}")
            continue
        if step[0] == "sql":
            _, on, stmt, lineno, must_fail, uncaptured = step
            on = tuple(side for side in on if side in dbs)
            for side in on:
                sql = stmt
                if uncaptured:
                    im = server_impl if side in SERVERS else client_impl
                    sql = im.uncaptured_sql(dbs[side].backend, stmt)
                try:
                    dbs[side].execute(sql)
                    error = None
                except Exception as e:   # noqa: BLE001 - sqlite3, psql
                    error = " ".join(str(e).split())
                if must_fail and error is None:
                    return failed(
                        f"sql {side} at line {lineno} succeeded; the "
                        "database must refuse it", expected="an error "
                        "(the implementation's capture refuses it)",
                        actual="the statement succeeded", frames=frames)
                if error is not None and not must_fail:
                    if not any(st[0] in ("sync", "init")
                               for st in fx.steps[:n]):
                        raise HarnessError(
                            f"fixture {fx.path or fx.name}:{lineno}: sql "
                            f"on the {side} failed: {error}")
                    # the implementation's triggers run in it by now
                    return failed(
                        f"sql {side} at line {lineno} failed once the "
                        "implementation had prepared the table: "
                        f"{error[:300]}", expected="the statement succeeds "
                        "(change capture must accept every write)",
                        actual=error, frames=frames)
            log.append(f"line {lineno}: sql on {'+'.join(on)}"
                       + (" (refused, as expected)" if must_fail else "")
                       + (" without capture" if uncaptured else ""))
            continue
        if step[0] == "init":
            _, side, lineno = step
            role = "server" if side in SERVERS else "client"
            im = server_impl if role == "server" else client_impl
            res = ctx.run_init(im, role, dbs[side], names)
            log.append(f"line {lineno}: init {side}: exit {res.status} in "
                       f"{res.seconds:.2f}s")
            if res.status != 0:
                return failed(
                    f"init {side} at line {lineno} failed (exit status "
                    f"{res.status})", expected=f"{role}_init exits 0",
                    actual=f"exit {res.status}\nstderr: {_tail(res.stderr)}",
                    frames=frames)
            continue
        who, want, unchanged, lineno = (step.who, step.outcome,
                                        step.unchanged, step.lineno)
        before = None
        if unchanged:
            before = {s: (dbs[s].snapshot() if want != "ok" else
                          _table_rows(fx, dbs, s)) for s in sides}
        skw = {} if step.retention is None else {
            "retention_ms": step.retention}
        ckw = {} if step.policy is None else {"policy": step.policy}
        if step.full:
            ckw["full"] = True
        if step.mode is not None:
            ckw["record"] = True
        server = ctx.start_server(server_impl, dbs[step.server], names,
                                  **skw)
        res = ctx.run_client(client_impl, dbs[who], server.address, names,
                             **ckw)
        frames = list(getattr(ctx, "last_frames", []) or [])
        if server.alive():
            server.stop()
        got = client_impl.outcome_of(res.status)
        opts = "".join(f" {k} {v}" for k, v in (("to", step.server if
                                                  step.server != "server"
                                                  else None),
                                                 ("policy", step.policy),
                                                 ("retention",
                                                  step.retention),
                                                 ("mode", step.mode))
                       if v is not None) + (" full" if step.full else "")
        log.append(f"line {lineno}: sync {who}{opts}: client exit "
                   f"{res.status} ({got}) in {res.seconds:.2f}s")
        codes = client_impl.exit_codes
        if want == "any":   # a sync the spec lets end either way
            ok = True
        elif want == "ok":
            ok = res.status == 0
        elif want in codes:
            ok = res.status == codes[want]
        else:               # "fail", or an outcome the .impl does not map
            ok = res.status != 0
        if not ok:
            return failed(
                f"sync {who} at line {lineno}: expected outcome {want}, got "
                f"{got} (client exit status {res.status})",
                expected=f"client outcome {want}"
                + (f" (exit {client_impl.exit_codes[want]})"
                   if want in client_impl.exit_codes else ""),
                actual=f"client exit {res.status}\nclient stderr: "
                f"{_tail(res.stderr)}\nserver stderr: "
                f"{_tail(server.stderr())}",
                frames=frames)
        if step.mode is not None:
            bad = _check_mode(step, len(names), frames)
            if bad:
                return bad
        if unchanged:
            for side in sides:
                after = (dbs[side].snapshot() if want != "ok" else
                         _table_rows(fx, dbs, side))
                if after != before[side]:
                    d = (_diff_side(fx, dbs, side, {}) if want != "ok" else
                         _diff_rows(before[side], after))
                    what = ("database" if want != "ok" else
                            "tables' rows")
                    return failed(
                        f"sync {who} at line {lineno} changed the {side}'s "
                        f"{what}; it must leave them unchanged",
                        expected=f"{side} {what} unchanged",
                        actual=f"{side} {what} changed", frames=frames,
                        diff=d)
    return passed("; ".join(log))


def _copy_step(step, dbs):
    """save SIDE NAME, restore SIDE NAME, copy FROM TO."""
    what, a, b, lineno = step
    if what == "save":
        dbs[a].save(b)
    elif what == "restore":
        dbs[a].restore(b)
    else:
        if dbs[a].backend != dbs[b].backend:
            raise HarnessError(f"line {lineno}: copy {a} {b}: a "
                               f"{dbs[a].backend} database cannot become "
                               f"a {dbs[b].backend} one (restrict the "
                               "fixture with pairs:)")
        dbs[b].copy_from(dbs[a])


def tables_opened(frames):
    """The TablesOpened (decoded) among recorded frames, or None."""
    for f in frames:
        if f.direction != "server->client" or len(f.raw) < 4:
            continue
        try:
            body, msg = pbwire.body_of(pbwire.decode_payload(f.raw[4:]))
        except pbwire.DecodeError:
            continue
        if body == "tables_opened":
            return msg
    return None


def _check_mode(step, ntables, frames):
    """`sync ... mode M`: every table of the session was listed in
    TablesOpened.incremental (incremental), or none was (ranges). None,
    or a failing Outcome."""
    opened = tables_opened(frames)
    want = list(range(ntables)) if step.mode == INCREMENTAL else []
    if opened is not None and sorted(opened["incremental"]) == want:
        return None
    return failed(
        f"sync {step.who} at line {step.lineno}: the session was not "
        f"{step.mode} for every table",
        expected=f"TablesOpened.incremental = {want} (spec 8.8.2)",
        actual=("no TablesOpened recorded" if opened is None else
                pbwire.render({"tables_opened": opened})),
        frames=frames)


def _check_expect(fx, ctx, dbs, expect, frames):
    """None when the tables hold what |expect| says now, else a failing
    Outcome."""
    side, tname, rows, lineno = expect
    group = tuple(d for d in GROUPS.get(side, (side,)) if d in dbs)
    actual = {sd: dbs[sd].canonical_rows(tname) for sd in group}
    t = fx.tables[tname]
    for sd in group:
        if t.columns[sd] is None:
            if actual[sd] is not None:
                return failed(f"table {tname} appeared on the {sd}, "
                              "which did not have it",
                              expected="no table", actual="a table",
                              frames=frames)
            continue
        exp_cols = canonical_order(n for n, _ in t.columns[sd])
        exp = [(u, _reorder(v, t.columns[sd], exp_cols))
               for u, v in expand_rows(rows, True)]
        act = actual[sd]
        diff = compare_rows(exp, act[1] if act else [], exp_cols,
                            act[0] if act else None)
        if diff:
            return failed(
                f"table {tname} on the {sd} ({_pair_backend(ctx, sd)}) "
                f"differs from the expectation at line {lineno}",
                expected=f"{len(exp)} rows", actual=(
                    f"{len(act[1])} rows" if act else "no table"),
                frames=frames, diff=f"table {tname}, {sd}:\n{diff}")
    if len(group) > 1:
        last = group[-1]                    # a server
        b = actual[last]
        for other in group[:-1]:
            a = actual[other]
            if a and b and Counter(a[1]) != Counter(b[1]):
                diff = compare_rows(b[1], a[1], b[0], a[0])
                return failed(
                    f"table {tname}: {other} and {last} hold different "
                    f"rows (UUIDs included) at line {lineno}",
                    expected="the same rows on " + " and ".join(group),
                    actual="different rows", frames=frames,
                    diff=f"- {last}, + {other}:\n" + diff)
    return None


def _table_rows(fx, dbs, side):
    """The rows of every fixture table of |side|, UUIDs included: what a
    successful `sync unchanged` must leave as it was (the sync itself
    records bookkeeping, such as the client's last_sync, so whole databases
    change)."""
    out = {}
    for t in fx.tables.values():
        got = dbs[side].canonical_rows(t.name)
        out[t.name] = None if got is None else (
            got[0], sorted(got[1], key=repr))
    return out


def _diff_rows(before, after):
    out = []
    for tname in before:
        a, b = before[tname], after.get(tname)
        if a == b:
            continue
        if a is None or b is None:
            out.append(f"table {tname}: "
                       + ("appeared" if a is None else "disappeared"))
            continue
        out.append(f"table {tname}, before (-) and after (+) the sync:\n"
                   + compare_rows(a[1], b[1], a[0], b[0]))
    return "\n".join(out)


def _diff_side(fx, dbs, side, _):
    out = []
    for t in fx.tables.values():
        if t.columns[side] is None:
            continue
        exp = expand_rows(fx.initial.get((side, t.name), []),
                          t.with_uuid[side])
        cols = canonical_order(n for n, _ in t.columns[side])
        act = dbs[side].canonical_rows(t.name)
        exp = [(u if u else ("*" if act and any(r[0] for r in act[1])
                             else None), v) for u, v in
               [(u, _reorder(v, t.columns[side], cols)) for u, v in exp]]
        d = compare_rows(exp, act[1] if act else [], cols,
                         act[0] if act else None)
        if d:
            out.append(f"table {t.name}, {side}, against its initial rows:"
                       f"\n{d}")
    return "\n".join(out) or "(the rows are unchanged; the schema or "\
        "something else in the database changed)"


def _reorder(vals, columns, order):
    pos = {n: i for i, (n, _) in enumerate(columns)}
    return tuple(vals[pos[n]] for n in order)


def fixture_tests(fixtures, pairs, prefix="data"):
    """One Test per fixture and backend pair: "data/<client>-<server>/<name>"."""
    tests = []
    for fx in fixtures:
        for cb, sb in pairs:
            if cb not in fx.backends or sb not in fx.backends:
                continue
            if fx.pairs is not None and (cb, sb) not in fx.pairs:
                continue
            def run(ctx, fx=fx):
                return run_fixture(fx, ctx)
            t = Test(name=f"{prefix}/{cb}-{sb}/{fx.name}",
                     requirements=tuple(fx.requirements), run=run,
                     level=fx.level, features=fx.features,
                     backends=tuple(sorted({cb, sb})), role="both",
                     description=fx.description)
            t.backend_pair = (cb, sb)
            t.impl_keys = fx.impl_keys | fx.pair_keys((cb, sb))
            t.fixture_backends = fx.backends
            tests.append(t)
    return tests

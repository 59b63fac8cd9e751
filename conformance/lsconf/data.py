"""The data plane: fixture files, and the tests that replay them through an
implementation's two programs on every pair of backends.

Fixture format (conformance/README.md, "Fixtures"): a text file, one
directive a line, `#` comments, indented lines belong to the block above.

  requirements: LS-RECON-4 LS-APPLY-1     IDs of spec/ the case checks
  level: MUST                              MUST (default) or SHOULD
  features: x-foo                          optional features it needs
  backends: sqlite postgres                backends every side may use
  pairs: sqlite-postgres                   only these client-server pairs
  description: one sentence

  table NAME[ @client|@server][ no-uuid]: COL TYPE, COL TYPE ...
  table NAME: cities                       the nine columns of cities.csv
  table NAME @client: absent               that side has no such table

  client NAME:                             initial rows (indented), each
    UUID VALUE VALUE ...                   UUID and one value per column
    cities A:B                             rows A..B-1 of cities.csv
  server NAME:

  sync [expect OUTCOME] [unchanged]        run one sync (OUTCOME: ok,
                                           fail, conflict, schema, ...)
  sql client|server|both: STATEMENT        run SQL on that side's database

  expect client|server|both NAME:          the final table (rows as above,
    ...                                    UUID * = any)
"""

import csv
import gzip
import hashlib
import io
import os
import re
import time
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path

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
SIDES = ("client", "server")
HASH_ABOVE = 200        # expected tables larger than this compare by hash
DIFF_LINES = 12


class FixtureError(Exception):
    pass


# ---- cities -----------------------------------------------------------------

_cities = []


def cities(stop):
    """The first |stop| data rows of cities.csv.gz as canonical values."""
    if len(_cities) < stop:
        if not CITIES_GZ.is_file():
            raise HarnessError(f"{CITIES_GZ} is missing")
        _cities.clear()
        with gzip.open(CITIES_GZ, "rt", encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            next(reader)
            for r in reader:
                _cities.append((
                    ("integer", int(r[0])), ("text", r[1]), ("text", r[2]),
                    ("text", r[3]), ("text", r[4]), ("text", r[5]),
                    ("integer", int(r[6])),
                    ("real", V.real_bits(float(r[7]))),
                    ("real", V.real_bits(float(r[8])))))
                if len(_cities) >= max(stop, 10000):
                    break
        if len(_cities) < stop:
            raise FixtureError(f"cities.csv has only {len(_cities)} rows")
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
        self.steps = []             # ("sync", outcome, unchanged, lineno)
                                    # ("sql", sides, statement, lineno)
        self.expect = []            # (side, table, [(uuid, vals)], lineno)


_TABLE = re.compile(r"table\s+(\S+?)(\s+@(client|server))?(\s+no-uuid)?\s*:"
                    r"(.*)$")
_BLOCK = re.compile(r"(client|server)\s+(\S+)\s*:\s*$")
_EXPECT = re.compile(r"expect\s+(client|server|both)\s+(\S+)\s*:\s*$")
_SYNC = re.compile(r"sync(\s+expect\s+([a-z]+))?(\s+unchanged)?\s*$")
_SQL = re.compile(r"sql\s+(client|server|both)\s*:\s*(.+)$")
_CITIES = re.compile(r"cities\s+(\d+):(\d+)(\s+any-uuid)?$")
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
                rows.append(("cities", a, b, bool(m.group(3))))
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
            for sd in ([side] if side else SIDES):
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
            block = (rows, tname)
            continue
        m = _SYNC.match(s)
        if m:
            fx.steps.append(("sync", m.group(2) or "ok", bool(m.group(3)),
                             lineno))
            continue
        m = _SQL.match(s)
        if m:
            sides = SIDES if m.group(1) == "both" else (m.group(1),)
            fx.steps.append(("sql", sides, m.group(2), lineno))
            continue
        raise err(f"cannot read {s!r}")
    for t in fx.tables.values():
        for side in SIDES:
            if side not in t.columns:
                raise FixtureError(f"{where}: table {t.name} has no schema "
                                   f"for the {side}")
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
    if not fx.steps:
        raise FixtureError(f"{where}: no step (sync)")
    if not fx.requirements:
        raise FixtureError(f"{where}: requirements: is missing")
    return fx


def expand_rows(rows, with_uuid=True):
    out = []
    for r in rows:
        if r[0] == "cities":
            data = cities(r[2])
            for i in range(r[1], r[2]):
                out.append(((("*" if r[3] else city_uuid(i)) if with_uuid
                             else None), data[i]))
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


def run_fixture(fx, ctx):
    cb, sb = ctx.backend_pair
    client_impl = getattr(ctx, "client_impl", None) or ctx.impl
    server_impl = getattr(ctx, "server_impl", None) or ctx.peer or ctx.impl
    dbs = {"client": ctx.database(cb, "client"),
           "server": ctx.database(sb, "server")}
    names = list(fx.tables)
    for side in SIDES:
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
    for step in fx.steps:
        if step[0] == "sql":
            _, sides, stmt, lineno = step
            for side in sides:
                dbs[side].execute(stmt)
            log.append(f"line {lineno}: sql on {'+'.join(sides)}")
            continue
        _, want, unchanged, lineno = step
        before = ({s: dbs[s].snapshot() for s in SIDES} if unchanged
                  else None)
        server = ctx.start_server(server_impl, dbs["server"], names)
        res = ctx.run_client(client_impl, dbs["client"], server.address,
                             names)
        frames = list(getattr(ctx, "last_frames", []) or [])
        status = server.stop() if server.alive() else None
        got = client_impl.outcome_of(res.status)
        log.append(f"line {lineno}: sync: client exit {res.status} "
                   f"({got}) in {res.seconds:.2f}s")
        codes = client_impl.exit_codes
        if want == "ok":
            ok = res.status == 0
        elif want in codes:
            ok = res.status == codes[want]
        else:               # "fail", or an outcome the .impl does not map
            ok = res.status != 0
        if not ok:
            return failed(
                f"sync at line {lineno}: expected outcome {want}, got {got} "
                f"(client exit status {res.status})",
                expected=f"client outcome {want}"
                + (f" (exit {client_impl.exit_codes[want]})"
                   if want in client_impl.exit_codes else ""),
                actual=f"client exit {res.status}\nclient stderr: "
                f"{_tail(res.stderr)}\nserver stderr: "
                f"{_tail(server.stderr())}",
                frames=frames)
        if unchanged:
            for side in SIDES:
                if dbs[side].snapshot() != before[side]:
                    d = _diff_side(fx, dbs, side, {})
                    return failed(
                        f"sync at line {lineno} changed the {side}'s "
                        "database; it must leave it unchanged",
                        expected=f"{side} database unchanged",
                        actual=f"{side} database changed", frames=frames,
                        diff=d)
    # final tables
    actual = {}
    for side in SIDES:
        for t in names:
            actual[(side, t)] = dbs[side].canonical_rows(t)
    for side, tname, rows, lineno in fx.expect:
        sides = SIDES if side == "both" else (side,)
        for sd in sides:
            t = fx.tables[tname]
            if t.columns[sd] is None:
                act = actual[(sd, tname)]
                if act is not None:
                    return failed(f"table {tname} appeared on the {sd}, "
                                  "which did not have it",
                                  expected="no table", actual="a table",
                                  frames=frames)
                continue
            exp_cols = canonical_order(n for n, _ in t.columns[sd])
            exp = [(u, _reorder(v, t.columns[sd], exp_cols))
                   for u, v in expand_rows(rows, True)]
            act = actual[(sd, tname)]
            diff = compare_rows(exp, act[1] if act else [], exp_cols,
                                act[0] if act else None)
            if diff:
                return failed(
                    f"table {tname} on the {sd} ({ctx.backend_pair[0 if sd == 'client' else 1]}) "
                    f"differs from the expectation at line {lineno}",
                    expected=f"{len(exp)} rows", actual=(
                        f"{len(act[1])} rows" if act else "no table"),
                    frames=frames, diff=f"table {tname}, {sd}:\n{diff}")
        if side == "both":
            a, b = actual[("client", tname)], actual[("server", tname)]
            if a and b and Counter(a[1]) != Counter(b[1]):
                diff = compare_rows(b[1], a[1], b[0], a[0])
                return failed(
                    f"table {tname}: client and server hold different rows "
                    "(UUIDs included) after the sync",
                    expected="the same rows on both sides",
                    actual="different rows", frames=frames,
                    diff="- server, + client:\n" + diff)
    return passed("; ".join(log))


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
            t.fixture_backends = fx.backends
            tests.append(t)
    return tests

"""Helpers for the end-to-end tests of lipsync-server and lipsync-client.

Standard library only. Where things live:
  LIPSYNC_BIN     directory holding the two binaries (default build/bin,
                  relative to the repository root)
  LIPSYNC_CITIES  the cities CSV (default ../shared/data/cities.csv,
                  relative to the repository root)
  LIPSYNC_PG_CONNINFO
                  a libpq keyword/value string for a PostgreSQL server on
                  which the tests may create and drop databases, as
                  tools/pgtest.sh sets it; the tests that need it fail
                  without it. PostgreSQL is driven through psql and pg_dump
                  (Python's standard library has no driver).
Secrets are passed by file (mode 0600) or by environment, never on a
command line.
"""

import csv
import hashlib
import math
import os
import re
import secrets
import selectors
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT / "conformance"))
from lsconf import pq  # noqa: E402


def _from_env(name, default):
    path = Path(os.environ.get(name, default))
    return path if path.is_absolute() else REPO_ROOT / path


BIN_DIR = _from_env("LIPSYNC_BIN", "build/bin")
CITIES_CSV = _from_env("LIPSYNC_CITIES", "../shared/data/cities.csv")
SERVER = BIN_DIR / "lipsync-server"
CLIENT = BIN_DIR / "lipsync-client"
# The fault-injection build (make build/fault/bin/lipsync-server
# build/fault/bin/lipsync-client), for the tests that kill or stall a
# program at a chosen point.
FAULT_BIN = _from_env("LIPSYNC_FAULT_BIN", "build/fault/bin")
FAULT_SERVER = FAULT_BIN / "lipsync-server"
FAULT_CLIENT = FAULT_BIN / "lipsync-client"

# Exit status of both programs (see --help).
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_SCHEMA = 4
EXIT_PEER = 5
EXIT_DATABASE = 6
EXIT_CONFLICT = 7
EXIT_BUSY = 8

UUID_COLUMN = "_lipsync_uuid"
CITY_COLUMNS = [
    ("city_id", "INTEGER"),
    ("name", "TEXT"),
    ("alt_name", "TEXT"),
    ("country", "TEXT"),
    ("feature_code", "TEXT"),
    ("admin_code", "TEXT"),
    ("population", "INTEGER"),
    ("lon", "REAL"),
    ("lat", "REAL"),
]
CITY_NAMES = [name for name, _ in CITY_COLUMNS]
SUMMARY_RE = re.compile(
    r"^(?P<table>\S+): sent (?P<sent>\d+) rows, received (?P<received>\d+) "
    r"rows, (?P<out>\d+) bytes out, (?P<in>\d+) bytes in, \d+\.\d\ds"
    r"(?: \(incremental\))?$"
)

# What AddressSanitizer, LeakSanitizer and UBSan print when they find a
# bug, for runs against sanitizer builds (LIPSYNC_BIN=build/san/bin).
SANITIZER_RE = r"(Sanitizer|runtime error:)"

_cities = None


def cities():
    """All rows of the cities CSV as typed tuples in CITY_COLUMNS order.

    Fails (never skips) when the file is missing: the tests that need it
    must not pass silently."""
    global _cities
    if _cities is None:
        if not CITIES_CSV.is_file():
            raise AssertionError(
                f"cities data not found at {CITIES_CSV}; set LIPSYNC_CITIES "
                "to the path of cities.csv"
            )
        with open(CITIES_CSV, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            _cities = [
                (
                    int(r["city_id"]),
                    r["name"],
                    r["alt_name"],
                    r["country"],
                    r["feature_code"],
                    r["admin_code"],
                    int(r["population"]),
                    float(r["lon"]),
                    float(r["lat"]),
                )
                for r in reader
            ]
    return _cities


# ---- databases ------------------------------------------------------------


def connect(path):
    # isolation_level=None: every statement commits on its own, and no
    # transaction stays open behind the test's back.
    return sqlite3.connect(path, isolation_level=None)


def create_cities_table(path, table="cities", rows=(), uuids=None,
                        columns=CITY_COLUMNS):
    """Creates |table| with the city columns and inserts |rows|. With
    |uuids| (one per row) the table gets a _lipsync_uuid column too."""
    defs = [f'"{n}" {t}' for n, t in columns]
    if uuids is not None:
        defs.append(f"{UUID_COLUMN} TEXT")
    with connect(path) as db:
        db.execute(f'CREATE TABLE "{table}" ({", ".join(defs)})')
        insert_cities(db, table, rows, uuids, columns)
    db.close()


def insert_cities(db, table, rows, uuids=None, columns=CITY_COLUMNS):
    names = [n for n, _ in columns]
    if uuids is not None:
        names.append(UUID_COLUMN)
        rows = [tuple(r) + (u,) for r, u in zip(rows, uuids)]
    marks = ", ".join("?" for _ in names)
    cols = ", ".join(f'"{n}"' for n in names)
    db.execute("BEGIN")
    db.executemany(f'INSERT INTO "{table}" ({cols}) VALUES ({marks})', rows)
    db.execute("COMMIT")


def add_cities(path, rows, table="cities"):
    db = connect(path)
    try:
        insert_cities(db, table, rows)
    finally:
        db.close()


def columns_of(db, table):
    return [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]


def typed_rows(path, table="cities"):
    """Every row as (uuid, typeof(c1), c1, typeof(c2), c2, ...), columns
    in name order, rows in UUID order: two synced tables compare equal."""
    db = connect(path)
    try:
        cols = sorted(c for c in columns_of(db, table) if c != UUID_COLUMN)
        parts = ", ".join(f'typeof("{c}"), "{c}"' for c in cols)
        return db.execute(
            f'SELECT {UUID_COLUMN}, {parts} FROM "{table}" '
            f"ORDER BY {UUID_COLUMN}"
        ).fetchall()
    finally:
        db.close()


def city_rows(path, table="cities"):
    """The city columns of every row, in city_id order, as stored."""
    db = connect(path)
    try:
        cols = ", ".join(f'"{n}"' for n in CITY_NAMES)
        return db.execute(
            f'SELECT {cols} FROM "{table}" ORDER BY city_id'
        ).fetchall()
    finally:
        db.close()


def uuids_of(path, table="cities"):
    db = connect(path)
    try:
        return [r[0] for r in db.execute(f'SELECT {UUID_COLUMN} FROM "{table}"')]
    finally:
        db.close()


def dump(path):
    """A digest of the full SQL dump: equal digests, equal databases."""
    db = connect(path)
    try:
        digest = hashlib.sha256()
        for line in db.iterdump():
            digest.update(line.encode("utf-8", "surrogatepass") + b"\n")
        return digest.hexdigest()
    finally:
        db.close()


def integrity_check(path):
    db = connect(path)
    try:
        return db.execute("PRAGMA integrity_check").fetchall()
    finally:
        db.close()


# ---- backends ---------------------------------------------------------------
#
# The same end-to-end tests run on every pair of backends. A table is
# described once, by canonical column types (spec 6.2 and the PostgreSQL
# mapping); each backend declares the columns with its own types, loads
# rows, and reads them back as canonical values: (kind, value) pairs where
# kind is the value's kind on the wire, so rows of two databases of either
# backend compare equal exactly when they hold the same values.

# canonical type -> (SQLite declared type, PostgreSQL type). decimal and
# json need TEXT affinity in SQLite to keep numeric-looking text as given.
DECLARED_TYPES = {
    "integer": ("INTEGER", "bigint"),
    "real": ("REAL", "double precision"),
    "text": ("TEXT", "text"),
    "blob": ("BLOB", "bytea"),
    "boolean": ("BOOLEAN", "boolean"),
    "decimal": ("DECIMAL TEXT", "numeric"),
    "date": ("DATE", "date"),
    "timestamp": ("TIMESTAMP", "timestamp"),
    "timestamptz": ("TIMESTAMPTZ", "timestamptz"),
    "json": ("JSON TEXT", "json"),
    "jsonb": ("JSONB TEXT", "jsonb"),
    "uuid": ("UUID", "uuid"),
}

# The kind on the wire of a non-NULL value of each canonical type, as
# PostgreSQL sends it.
WIRE_KIND = {"integer": "integer", "boolean": "integer", "real": "real",
             "blob": "blob"}

# PostgreSQL type (format_type without modifiers) -> canonical type.
PG_CANONICAL = {
    "smallint": "integer", "integer": "integer", "bigint": "integer",
    "real": "real", "double precision": "real",
    "text": "text", "character varying": "text", "character": "text",
    "name": "text", "bytea": "blob", "boolean": "boolean",
    "numeric": "decimal", "date": "date",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "json": "json", "jsonb": "jsonb", "uuid": "uuid",
}

CITY_SCHEMA = [
    ("city_id", "integer"),
    ("name", "text"),
    ("alt_name", "text"),
    ("country", "text"),
    ("feature_code", "text"),
    ("admin_code", "text"),
    ("population", "integer"),
    ("lon", "real"),
    ("lat", "real"),
]

CANONICAL_NAN = "7ff8000000000000"


def value_key(value):
    """A Python value as (wire kind, comparable payload): 1 and 1.0 differ,
    -0.0 and 0.0 differ, every NaN is one value (spec 7.2)."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("integer", int(value))
    if isinstance(value, int):
        return ("integer", value)
    if isinstance(value, float):
        bits = (CANONICAL_NAN if math.isnan(value)
                else struct.pack(">d", value).hex())
        return ("real", bits)
    if isinstance(value, str):
        return ("text", value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("blob", bytes(value))
    raise TypeError(f"no canonical kind for {value!r}")


def row_keys(rows):
    return [tuple(value_key(v) for v in row) for row in rows]


def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text):
    return "'" + text.replace("'", "''") + "'"


def split_table(name):
    """PostgreSQL reading of a --table name: schema.name split at the first
    dot, else schema public."""
    schema, dot, table = name.partition(".")
    return (schema, table) if dot else ("public", name)


# ---- PostgreSQL connection strings ----

PG_CONNINFO_VAR = "LIPSYNC_PG_CONNINFO"


def pg_admin_conninfo():
    """The conninfo of the test server, or a failure saying how to get one:
    tests that need PostgreSQL never skip."""
    conninfo = os.environ.get(PG_CONNINFO_VAR, "").strip()
    if not conninfo:
        raise AssertionError(
            f"{PG_CONNINFO_VAR} is not set: this test needs a PostgreSQL "
            "server. Run the tests through tools/pgtest.sh, which starts a "
            "throwaway one (sh tools/pgtest.sh python3 "
            "ref/tests/e2e/test_cli.py), or run make check")
    if "://" in conninfo:
        raise AssertionError(
            f"{PG_CONNINFO_VAR} must be a keyword/value string "
            "(host=... port=... dbname=... user=...), not a URI")
    return conninfo


def parse_conninfo(conninfo):
    """A libpq keyword/value string as an ordered dict."""
    result = {}
    pos, n = 0, len(conninfo)
    while True:
        while pos < n and conninfo[pos].isspace():
            pos += 1
        if pos == n:
            return result
        eq = conninfo.find("=", pos)
        if eq < 0:
            raise AssertionError(f"bad conninfo {conninfo!r}")
        key = conninfo[pos:eq].strip()
        pos = eq + 1
        while pos < n and conninfo[pos].isspace():
            pos += 1
        value = []
        if pos < n and conninfo[pos] == "'":
            pos += 1
            while pos < n and conninfo[pos] != "'":
                if conninfo[pos] == "\\" and pos + 1 < n:
                    pos += 1
                value.append(conninfo[pos])
                pos += 1
            pos += 1
        else:
            while pos < n and not conninfo[pos].isspace():
                if conninfo[pos] == "\\" and pos + 1 < n:
                    pos += 1
                value.append(conninfo[pos])
                pos += 1
        result[key] = "".join(value)


def make_conninfo(params):
    def quote(v):
        if v and not re.search(r"[\s'\\]", v):
            return v
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return " ".join(f"{k}={quote(v)}" for k, v in params.items())


def make_uri(params):
    """The same connection as a postgresql:// URI."""
    params = dict(params)
    user = params.pop("user", "")
    dbname = params.pop("dbname", "")
    auth = urllib.parse.quote(user, safe="") + "@" if user else ""
    query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    return (f"postgresql://{auth}/{urllib.parse.quote(dbname, safe='')}"
            + (f"?{query}" if query else ""))


# Every psql and pg_dump run sees the same session settings as the
# PostgreSQL backend: UTC, ISO dates, floats printed exactly. lock_timeout
# keeps a test from hanging behind a session that did not end.
PG_OPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO,YMD -c extra_float_digits=3 "
              "-c client_min_messages=warning -c lock_timeout=30s")


def pg_env():
    env = dict(os.environ)
    env["PGOPTIONS"] = PG_OPTIONS
    return env


def psql(conninfo, sql, stdin=None, extra=(), timeout=120):
    """Runs |sql| (one or more statements, or a COPY ... FROM STDIN fed
    |stdin| bytes) as psql -At would, after the commands of any "-c" in
    |extra| (each on its own, as psql runs them); returns the output as
    text. Fails on any error. Through libpq in this process (the
    conformance harness's lsconf.pq, a connection a call) unless |extra|
    asks for more of psql's own output than "-F" (display() does: it
    shows the rows through psql itself)."""
    words, sep, pre = list(extra), "|", []
    while len(words) >= 2 and words[0] in ("-F", "-c") and pq.available():
        if words[0] == "-F":
            sep = words[1]
        else:
            pre.append(words[1])
        words = words[2:]
    if not words and pq.available():
        out = []
        for i, statement in enumerate(pre + [sql]):
            try:
                rows = pq.execute(conninfo, statement, PG_OPTIONS,
                                  stdin if i == len(pre) else None,
                                  keep=False)
            except pq.PqError as e:
                raise AssertionError(
                    f"PostgreSQL failed on {statement[:300]!r}:\n{e}")
            out.append("".join(sep.join(r) + "\n" for r in rows))
        return "".join(out)
    if shutil.which("psql") is None:
        raise AssertionError("psql not found: install postgresql-client "
                             "(sh tools/deps.sh)")
    args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At",
            "-d", conninfo, *extra, "-c", sql]
    r = subprocess.run(args, input=stdin if stdin is not None else b"",
                       capture_output=True, env=pg_env(), timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(
            f"psql failed ({r.returncode}) on {sql[:300]!r}:\n"
            f"{r.stderr.decode(errors='replace')}")
    return r.stdout.decode("utf-8", "surrogateescape")


def copy_text_value(value, ctype):
    """|value| in COPY's text format, for a column of canonical |ctype|."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        if ctype == "boolean":
            return "true" if value else "false"
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, (bytes, bytearray)):
        return "\\\\x" + bytes(value).hex()
    if "\x00" in value:
        raise AssertionError("PostgreSQL text cannot hold NUL")
    return (value.replace("\\", "\\\\").replace("\t", "\\t")
            .replace("\n", "\\n").replace("\r", "\\r"))


# Expressions that print a value the same way on both backends, through
# each database's own command-line client: the exact bits of a double,
# booleans as 0/1, blobs in hex, everything else as its text.
def sqlite_display_expr(column, ctype):
    c = quote_ident(column)
    if ctype == "real":  # ieee754_to_blob() is the sqlite3 shell's
        return f"CASE WHEN {c} IS NOT NULL THEN hex(ieee754_to_blob({c})) END"
    if ctype == "blob":  # hex(NULL) is ''
        return f"CASE WHEN {c} IS NOT NULL THEN hex({c}) END"
    return c


def pg_display_expr(column, ctype):
    c = quote_ident(column)
    if ctype == "real":
        shown = f"upper(encode(float8send({c}::float8), 'hex'))"
    elif ctype == "blob":
        shown = f"upper(encode({c}, 'hex'))"
    elif ctype == "boolean":
        shown = f"{c}::int::text"
    else:  # concat() prints with the type's output function
        shown = f"concat({c})"
    return f"CASE WHEN {c} IS NOT NULL THEN {shown} END"


# Field and record separators for displayed rows: values may hold tabs and
# newlines, not these.
UNIT_SEP, RECORD_SEP, NULL_SHOWN = "\x1f", "\x1e", "<NULL>"


class SqliteDatabase:
    """A SQLite database file; --db is its path."""

    kind = "sqlite"

    def __init__(self, path):
        self.path = Path(path)
        self.dsn = str(path)
        connect(self.path).close()

    def __str__(self):
        return self.dsn

    def create_table(self, table, columns=CITY_SCHEMA, rows=(), uuids=None):
        """|columns|: (name, canonical type) pairs. With |uuids| (one per
        row) the table gets a _lipsync_uuid column too."""
        defs = [f"{quote_ident(n)} {DECLARED_TYPES[t][0]}"
                for n, t in columns]
        if uuids is not None:
            defs.append(f"{UUID_COLUMN} TEXT")
        db = connect(self.path)
        try:
            db.execute(f"CREATE TABLE {quote_ident(table)} "
                       f"({', '.join(defs)})")
        finally:
            db.close()
        self.insert(table, columns, rows, uuids)

    def execute(self, sql, params=()):
        db = connect(self.path)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def run_sql(self, statement):
        """Runs |statement| (a write an application might make, in SQL
        both backends accept) through a connection of its own."""
        self.execute(statement)

    def insert(self, table, columns, rows, uuids=None):
        names = [n for n, _ in columns]
        if uuids is not None:
            names.append(UUID_COLUMN)
            rows = [tuple(r) + (u,) for r, u in zip(rows, uuids)]
        db = connect(self.path)
        try:
            marks = ", ".join("?" for _ in names)
            cols = ", ".join(quote_ident(n) for n in names)
            db.execute("BEGIN")
            db.executemany(f"INSERT INTO {quote_ident(table)} ({cols}) "
                           f"VALUES ({marks})", rows)
            db.execute("COMMIT")
        finally:
            db.close()

    def column_names(self, table):
        return [r[1] for r in
                self.execute(f"PRAGMA table_info({quote_ident(table)})")]

    def rows(self, table):
        """(uuid, value keys...) of every row, columns in name order, rows
        in UUID order."""
        cols = sorted(c for c in self.column_names(table) if c != UUID_COLUMN)
        sel = ", ".join([UUID_COLUMN] + [quote_ident(c) for c in cols])
        got = self.execute(f"SELECT {sel} FROM {quote_ident(table)} "
                           f"ORDER BY {UUID_COLUMN}")
        return [(r[0],) + tuple(value_key(v) for v in r[1:]) for r in got]

    def select(self, table, names, order_by):
        """The columns |names| of every row as Python values."""
        cols = ", ".join(quote_ident(n) for n in names)
        return self.execute(f"SELECT {cols} FROM {quote_ident(table)} "
                            f"ORDER BY {quote_ident(order_by)}")

    def count(self, table):
        return self.execute(f"SELECT count(*) FROM {quote_ident(table)}")[0][0]

    def uuids(self, table):
        return [r[0] for r in self.execute(
            f"SELECT {UUID_COLUMN} FROM {quote_ident(table)}")]

    def delete(self, table, column, value):
        self.execute(f"DELETE FROM {quote_ident(table)} "
                     f"WHERE {quote_ident(column)} = ?", (value,))

    def snapshot(self):
        return dump(self.path)

    def capture_objects(self):
        """The tables and triggers under the reserved prefix _lipsync, as
        "table NAME", "trigger NAME", sorted."""
        return [r[0] for r in self.execute(
            "SELECT type || ' ' || name FROM sqlite_schema WHERE name LIKE"
            " '\\_lipsync%' ESCAPE '\\' AND type IN ('table', 'trigger')"
            " ORDER BY 1")]

    def check_readable(self, test):
        test.assertEqual(integrity_check(self.path), [("ok",)])

    def display(self, table, columns):
        """The rows as the sqlite3 command-line client shows them."""
        exprs = [UUID_COLUMN] + [sqlite_display_expr(n, t)
                                 for n, t in columns]
        sql = (f"SELECT {', '.join(exprs)} FROM {quote_ident(table)} "
               f"ORDER BY {UUID_COLUMN}")
        r = subprocess.run(
            ["sqlite3", "-batch", "-noheader", "-separator", UNIT_SEP,
             "-newline", RECORD_SEP, "-nullvalue", NULL_SHOWN,
             str(self.path), sql],
            capture_output=True, timeout=120)
        if r.returncode != 0 or r.stderr:
            raise AssertionError(f"sqlite3 failed: {r.stderr!r}")
        return _records(r.stdout)


class PgDatabase:
    """A fresh PostgreSQL database on the test server, created for one test
    and dropped after it; --db is a keyword/value conninfo (or, with
    |uri|, a postgresql:// URI)."""

    kind = "pg"

    def __init__(self, name, admin=None):
        """|admin|: the conninfo of another server than the shared test
        server's (pg_admin_conninfo)."""
        admin = admin or pg_admin_conninfo()
        self.admin = admin
        self.name = name
        params = parse_conninfo(admin)
        params["dbname"] = name
        self.conninfo = make_conninfo(params)
        self.uri = make_uri(params)
        self.dsn = self.conninfo
        psql(admin, f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0 "
             "ENCODING 'UTF8' LOCALE 'C'")

    def __str__(self):
        return self.dsn

    def drop(self):
        psql(self.admin,
             f"DROP DATABASE IF EXISTS {quote_ident(self.name)} WITH (FORCE)")

    def sql(self, statement, stdin=None, extra=()):
        return psql(self.conninfo, statement, stdin, extra)

    def run_sql(self, statement):
        self.sql(statement)

    @staticmethod
    def qualified(table):
        schema, name = split_table(table)
        return f"{quote_ident(schema)}.{quote_ident(name)}"

    def create_table(self, table, columns=CITY_SCHEMA, rows=(), uuids=None):
        schema, _ = split_table(table)
        defs = [f"{quote_ident(n)} {DECLARED_TYPES[t][1]}"
                for n, t in columns]
        if uuids is not None:
            defs.append(f"{UUID_COLUMN} uuid")
        self.sql(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}; "
                 f"CREATE TABLE {self.qualified(table)} ({', '.join(defs)})")
        self.insert(table, columns, rows, uuids)

    def insert(self, table, columns, rows, uuids=None):
        rows = list(rows)
        if not rows:
            return
        types = [t for _, t in columns]
        names = [n for n, _ in columns]
        if uuids is not None:
            names.append(UUID_COLUMN)
            types.append("uuid")
            rows = [tuple(r) + (u,) for r, u in zip(rows, uuids)]
        data = "".join(
            "\t".join(copy_text_value(v, t) for v, t in zip(row, types))
            + "\n" for row in rows)
        cols = ", ".join(quote_ident(n) for n in names)
        self.sql(f"COPY {self.qualified(table)} ({cols}) FROM STDIN",
                 stdin=data.encode("utf-8"))

    def columns(self, table):
        """(name, PostgreSQL type) of every column, in table order."""
        out = self.sql(
            "SELECT a.attname, format_type(a.atttypid, NULL) "
            "FROM pg_attribute a WHERE a.attrelid = "
            f"{quote_literal(self.qualified(table))}::regclass "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            extra=["-F", UNIT_SEP])
        return [tuple(line.split(UNIT_SEP)) for line in out.splitlines()]

    def column_names(self, table):
        return [n for n, _ in self.columns(table)]

    def canonical_columns(self, table):
        cols = []
        for name, pgtype in self.columns(table):
            if name != UUID_COLUMN:
                cols.append((name, PG_CANONICAL.get(pgtype, pgtype)))
        return cols

    @staticmethod
    def _read_expr(column, ctype):
        """Prints one value so that _decode() can rebuild it exactly: a
        real (float4 too) as the double it is, text through its type's
        output function (a cast to text would strip char(n)'s padding)."""
        c = quote_ident(column)
        if ctype == "blob":
            shown = f"encode({c}, 'hex')"
        elif ctype == "boolean":
            shown = f"{c}::int::text"
        elif ctype == "integer":
            shown = f"{c}::text"
        elif ctype == "real":
            shown = f"{c}::float8::text"
        else:
            shown = f"encode(convert_to(concat({c}), 'UTF8'), 'hex')"
        return f"CASE WHEN {c} IS NULL THEN 'N' ELSE 'v' || {shown} END"

    @staticmethod
    def _decode(field, ctype):
        if field == "N":
            return None
        field = field[1:]
        kind = WIRE_KIND.get(ctype, "text")
        if kind == "integer":
            return int(field)
        if kind == "real":
            return float(field)
        if kind == "blob":
            return bytes.fromhex(field)
        return bytes.fromhex(field).decode("utf-8")

    def _select(self, table, columns, order_by):
        exprs = [self._read_expr(n, t) for n, t in columns]
        out = self.sql(f"SELECT {', '.join(exprs)} FROM "
                       f"{self.qualified(table)} ORDER BY {order_by}",
                       extra=["-F", UNIT_SEP])
        return [tuple(self._decode(f, t) for f, (_, t)
                      in zip(line.split(UNIT_SEP), columns))
                for line in out.splitlines()]

    def rows(self, table):
        cols = sorted(self.canonical_columns(table))
        got = self._select(table, [(UUID_COLUMN, "uuid")] + cols,
                           UUID_COLUMN)
        return [(r[0],) + tuple(value_key(v) for v in r[1:]) for r in got]

    def select(self, table, names, order_by):
        types = dict(self.canonical_columns(table))
        return self._select(table, [(n, types[n]) for n in names],
                            quote_ident(order_by))

    def count(self, table):
        return int(self.sql(f"SELECT count(*) FROM {self.qualified(table)}"))

    def uuids(self, table):
        return self.sql(f"SELECT {UUID_COLUMN}::text FROM "
                        f"{self.qualified(table)}").split()

    def delete(self, table, column, value):
        self.sql(f"DELETE FROM {self.qualified(table)} WHERE "
                 f"{quote_ident(column)} = {value}")

    def uuid_column(self, table):
        """(type of _lipsync_uuid, whether a unique index covers exactly
        that column)."""
        out = self.sql(
            "SELECT format_type(a.atttypid, a.atttypmod), EXISTS ("
            " SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid"
            " AND i.indisunique AND i.indnkeyatts = 1"
            " AND i.indkey[0] = a.attnum AND i.indpred IS NULL)"
            " FROM pg_attribute a WHERE a.attrelid = "
            f"{quote_literal(self.qualified(table))}::regclass"
            f" AND a.attname = '{UUID_COLUMN}' AND NOT a.attisdropped",
            extra=["-F", UNIT_SEP]).strip()
        if not out:
            return None, False
        pgtype, unique = out.split(UNIT_SEP)
        return pgtype, unique == "t"

    def capture_objects(self):
        """The objects under the reserved prefix _lipsync: "schema NAME",
        "table NAME" (any schema), "function NAME", "trigger NAME on
        TABLE" (a partition's clones left out), sorted."""
        return self.sql(
            "SELECT o FROM (SELECT 'schema ' || nspname AS o"
            " FROM pg_namespace WHERE nspname LIKE '\\_lipsync%'"
            " UNION ALL SELECT 'table ' || c.relname FROM pg_class c"
            " WHERE c.relkind IN ('r', 'p') AND c.relname LIKE"
            " '\\_lipsync%'"
            " UNION ALL SELECT 'function ' || proname FROM pg_proc"
            " WHERE proname LIKE '\\_lipsync%'"
            " UNION ALL SELECT 'trigger ' || tgname || ' on ' ||"
            " tgrelid::regclass::text FROM pg_trigger WHERE tgname LIKE"
            " '\\_lipsync%' AND tgparentid = 0) x ORDER BY 1").splitlines()

    def snapshot(self):
        """A digest of pg_dump's output: schema and rows of every table."""
        r = subprocess.run(
            ["pg_dump", "--no-owner", "--no-privileges", "--lock-wait-timeout",
             "30s", "-d", self.conninfo],
            capture_output=True, env=pg_env(), timeout=120)
        if r.returncode != 0:
            raise AssertionError(
                f"pg_dump failed: {r.stderr.decode(errors='replace')}")
        # pg_dump's \restrict and \unrestrict lines carry a random key.
        lines = [line for line in r.stdout.split(b"\n")
                 if not re.match(rb"\\(un)?restrict ", line)]
        return hashlib.sha256(b"\n".join(lines)).hexdigest()

    def check_readable(self, test):
        """Every table can be read in full, and no session of this
        database is left in a transaction."""
        for line in self.sql(
                "SELECT format('%I.%I', schemaname, tablename) "
                "FROM pg_tables WHERE schemaname NOT IN "
                "('pg_catalog', 'information_schema')").splitlines():
            self.sql(f"SELECT count(*) FROM (SELECT * FROM {line}) t")

    def display(self, table, columns):
        """The rows as psql shows them."""
        exprs = [f"{UUID_COLUMN}::text"] + [pg_display_expr(n, t)
                                           for n, t in columns]
        out = self.sql(
            f"SELECT {', '.join(exprs)} FROM {self.qualified(table)} "
            f"ORDER BY {UUID_COLUMN}",
            extra=["-F", UNIT_SEP, "-R", RECORD_SEP,
                   "-P", f"null={NULL_SHOWN}"])
        return _records(out.encode("utf-8", "surrogateescape"))


def _records(output):
    """Splits displayed rows: sqlite3 ends each with the separator, psql
    puts it between rows and ends with a newline."""
    text = output.decode("utf-8", "surrogateescape")
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith(RECORD_SEP):
        text = text[:-1]
    return text.split(RECORD_SEP) if text else []


def new_pg_name(label):
    return f"lipsync_{secrets.token_hex(4)}_{label}".lower()


# ---- processes --------------------------------------------------------------


def clean_env(**extra):
    """The environment for a child: no secret unless the test gives one."""
    env = {k: v for k, v in os.environ.items() if k != "LIPSYNC_SECRET"}
    env.update(extra)
    return env


def write_secret(path, secret, newline="\n", mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", newline="") as f:
        f.write(secret + newline)
    os.chmod(path, mode)
    return path


def stop_process(proc, sig=signal.SIGTERM, timeout=10):
    """Stops |proc| with |sig|, then SIGKILL if it lingers. Returns its
    exit status."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def read_line(fd, timeout, proc=None):
    """Reads one line from the pipe |fd| within |timeout| seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"no line within {timeout}s: {data!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"stream closed after {data!r}")
            data += chunk
    return data.split(b"\n", 1)[0].decode()


class Server:
    """A running lipsync-server on 127.0.0.1, port chosen by the system."""

    def __init__(self, db, secret_file, tables=(), all_tables=False,
                 extra=(), env=None, listen="127.0.0.1:0", log_dir=None,
                 binary=None):
        """|binary|: another lipsync-server than SERVER (a fault build)."""
        args = [str(binary or SERVER), "--db", str(db), "--listen", listen]
        if secret_file is not None:
            args += ["--secret-file", str(secret_file)]
        for t in tables:
            args += ["--table", t]
        if all_tables:
            args.append("--all-tables")
        args += list(extra)
        self.log = tempfile.NamedTemporaryFile(
            prefix="server-", suffix=".log", dir=log_dir, delete=False)
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self.log, env=env if env is not None else clean_env())
        try:
            line = read_line(self.proc.stdout.fileno(), 10)
        except AssertionError as e:
            self.stop()
            raise AssertionError(f"server did not start: {e}\n{self.stderr()}")
        match = re.fullmatch(r"listening on (.+):(\d+)", line)
        if match is None:
            self.stop()
            raise AssertionError(f"unexpected first line {line!r}")
        self.host, self.port = match.group(1), int(match.group(2))
        self.address = f"{self.host}:{self.port}"

    def stderr(self):
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        status = stop_process(self.proc, sig, timeout)
        self.proc.stdout.close()
        self.log.close()
        return status

    def cleanup(self):
        """Stops the server; returns (was it running, exit status, log)."""
        was_alive = self.alive()
        status = self.stop()
        log = self.stderr()
        os.unlink(self.log.name)
        return was_alive, status, log


def client_args(db, address, tables, secret_file, extra=(), binary=None):
    """|binary|: another lipsync-client than CLIENT (a fault build)."""
    args = [str(binary or CLIENT), "--db", str(db), "--connect", address]
    if secret_file is not None:
        args += ["--secret-file", str(secret_file)]
    for t in tables:
        args += ["--table", t]
    return args + list(extra)


def run_client(db, address, tables, secret_file, extra=(), env=None,
               timeout=60, binary=None):
    return subprocess.run(
        client_args(db, address, tables, secret_file, extra, binary),
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        env=env if env is not None else clean_env(), timeout=timeout)


def parse_summary(stdout):
    """Maps each table of a client's summary to (sent, received)."""
    result = {}
    for line in stdout.splitlines():
        m = SUMMARY_RE.match(line)
        if m is None:
            raise AssertionError(f"bad summary line {line!r}")
        result[m.group("table")] = (int(m.group("sent")),
                                    int(m.group("received")))
    return result


class SyncTestCase(unittest.TestCase):
    """Gives each test a temporary directory, a secret file and helpers
    that always clean up the processes they start."""

    def setUp(self):
        for binary in (SERVER, CLIENT):
            if not os.access(binary, os.X_OK):
                self.fail(f"{binary} is missing: build it (make) or set "
                          "LIPSYNC_BIN")
        tmp = tempfile.TemporaryDirectory(prefix="lipsync-e2e-")
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.secret = secrets.token_hex(32)
        self.secret_file = write_secret(self.dir / "secret", self.secret)

    def path(self, name):
        return self.dir / name

    def new_database(self, kind, label):
        """A fresh empty database of backend |kind| ("sqlite" or "pg"),
        removed after the test."""
        if kind == "sqlite":
            return SqliteDatabase(self.path(f"{label}.db"))
        if kind == "pg":
            db = PgDatabase(new_pg_name(label))
            self.addCleanup(db.drop)
            return db
        raise ValueError(f"unknown backend {kind!r}")

    def start_server(self, db, tables=("cities",), **kwargs):
        kwargs.setdefault("secret_file", self.secret_file)
        server = Server(db, tables=tables, log_dir=self.dir, **kwargs)
        self.addCleanup(self._stop_server, server)
        return server

    def _stop_server(self, server):
        was_alive, status, log = server.cleanup()
        self.assertNotRegex(log, SANITIZER_RE, "the server reported a bug")
        if was_alive:
            self.assertEqual(status, 0, f"server exit status on SIGTERM\n{log}")

    def sync(self, db, server, tables=("cities",), expect=EXIT_OK, **kwargs):
        kwargs.setdefault("secret_file", self.secret_file)
        result = run_client(db, server.address, tables, **kwargs)
        self.assertNotRegex(result.stderr, SANITIZER_RE)
        self.assertEqual(
            result.returncode, expect,
            f"client exit {result.returncode}, expected {expect}\n"
            f"client stderr: {result.stderr}\nserver log: {server.stderr()}")
        return result

    def assertSynced(self, a, b, table="cities"):
        rows_a, rows_b = typed_rows(a, table), typed_rows(b, table)
        self.assertEqual(len(rows_a), len(rows_b))
        self.assertTrue(rows_a == rows_b, f"table {table} differs")
        uuids = [r[0] for r in rows_a]
        self.assertEqual(len(set(uuids)), len(uuids), "duplicate UUIDs")
        self.assertNotIn(None, uuids)

    def assertCities(self, path, expected, table="cities"):
        """|path| holds exactly the city rows |expected|, typed as given."""
        expected = sorted(expected)
        got = city_rows(path, table)
        self.assertEqual(len(got), len(expected))
        self.assertTrue(got == expected, f"table {table} has other rows")
        db = connect(path)
        try:
            types = db.execute(
                f'SELECT DISTINCT typeof(city_id), typeof(name), '
                f'typeof(admin_code), typeof(population), typeof(lon) '
                f'FROM "{table}"').fetchall()
        finally:
            db.close()
        if expected:
            self.assertEqual(types,
                             [("integer", "text", "text", "integer", "real")])


class PairTestBase(SyncTestCase):
    """Gives each test a client database on |client_backend| and a server
    database on |server_backend|, both empty, and the cities data."""

    client_backend = server_backend = None

    def setUp(self):
        super().setUp()
        self.cities = cities()
        self.client_db = self.new_database(self.client_backend, "client")
        self.server_db = self.new_database(self.server_backend, "server")

"""Databases the harness prepares and reads itself: SQLite through the
sqlite3 module, PostgreSQL through psql (LIPSYNC_PG_CONNINFO names a server
on which the harness may create and drop databases; tools/pgtest.sh starts
one). Every test gets a fresh SQLite file or a fresh PostgreSQL database,
removed after it.

Tables are described by canonical column types (spec 6.2); each backend
declares them with its own type, and reads rows back as canonical values
(lsconf.values), so two databases compare equal exactly when they hold the
same values.
"""

import hashlib
import math
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import time

from . import pq
from . import values as V

UUID_COLUMN = "_lipsync_uuid"
# canonical type -> (SQLite declared type, PostgreSQL type)
DECLARED = {
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
# The only kind of a non-NULL value in a PostgreSQL column (spec LS-TYPE-8).
PG_KIND = {"integer": "integer", "boolean": "integer", "real": "real",
           "blob": "blob"}
PG_CANONICAL = {
    "smallint": "integer", "integer": "integer", "bigint": "integer",
    "real": "real", "double precision": "real", "text": "text",
    "character varying": "text", "character": "text", "name": "text",
    "bytea": "blob", "boolean": "boolean", "numeric": "decimal",
    "date": "date", "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz", "json": "json",
    "jsonb": "jsonb", "uuid": "uuid",
}
PG_OPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO,YMD -c extra_float_digits=3 "
              "-c client_min_messages=warning -c lock_timeout=30s")
SEP = "\x1f"


class HarnessError(Exception):
    """The harness itself could not do its part (not the implementation's
    fault): exit status 2."""


def qi(name):
    return '"' + name.replace('"', '""') + '"'


def ql(text):
    return "'" + text.replace("'", "''") + "'"


def canonical_order(names):
    return sorted(names, key=lambda n: n.encode("utf-8"))


def rows_digest(rows):
    """SHA-256 over the canonical rows, sorted: equal digests, equal
    tables (order-insensitive)."""
    h = hashlib.sha256()
    for line in sorted(format_row(r) for r in rows):
        h.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


def format_row(row):
    uuid, vals = row
    return " ".join([uuid if uuid else "-"] + [V.format_value(v)
                                               for v in vals])


class Database:
    """create_table(table, [(name, canonical type)], with_uuid=True);
    insert(table, columns, [(uuid or None, canonical values)]) or
    insert(table, [[python values...]]) for a table made by create_table;
    rows(table) -> [{column: python value}] in table column order;
    canonical_rows(table) -> (canonical column names, [(uuid, values)]) or
    None; execute(sql); snapshot() -> digest of the whole database;
    save(name), restore(name): a backup and its restore, under the same
    {db}; copy_from(other): this database becomes a copy of |other|;
    spec() -> the {db} string; drop()."""
    backend = None

    def _remember(self, table, columns):
        self.__dict__.setdefault("_tables", {})[table] = list(columns)

    def _normalize(self, table, columns, rows):
        if rows is None:
            rows, columns = columns, self.__dict__.get("_tables", {}).get(table)
            if columns is None:
                raise HarnessError(f"insert into {table}: columns unknown")
            rows = [(None, tuple(v if isinstance(v, tuple) else
                                 V.from_python(v) for v in r)) for r in rows]
        return columns, rows

    def rows(self, table):
        got = self.canonical_rows(table, table_order=True)
        if got is None:
            return []
        names, rows = got
        out = []
        for u, vals in rows:
            d = {UUID_COLUMN: u} if u is not None else {}
            d.update((n, V.to_python(v)) for n, v in zip(names, vals))
            out.append(d)
        return out

    def spec(self):
        """What {db} becomes on a command line."""
        raise NotImplementedError

    def drop(self):
        pass


class SqliteDatabase(Database):
    backend = "sqlite"

    def __init__(self, path):
        self.path = str(path)
        self._conn().close()

    @staticmethod
    def _backup(src_path, dst_path):
        """Copies the database |src_path| into |dst_path| page by page
        (sqlite3's online backup: consistent whatever the journal mode)."""
        src = sqlite3.connect(src_path, timeout=30)
        dst = sqlite3.connect(dst_path, timeout=30)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()

    def _saved(self, name):
        return f"{self.path}.saved-{name}"

    def save(self, name):
        self._backup(self.path, self._saved(name))

    def restore(self, name):
        """Puts the saved database back into this file, in place: the same
        file (inode), as a restore from a backup does."""
        saved = self._saved(name)
        if not os.path.exists(saved):
            raise HarnessError(f"restore: {name} was never saved")
        self._backup(saved, self.path)

    def copy_from(self, other):
        """A copy of |other|'s file becomes this database: a new file."""
        tmp = self.path + ".copy"
        self._backup(other.path, tmp)
        for ext in ("-wal", "-shm", "-journal"):
            if os.path.exists(self.path + ext):
                os.remove(self.path + ext)
        os.replace(tmp, self.path)

    def spec(self):
        return self.path

    def _conn(self):
        c = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        c.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
        return c

    def execute(self, sql, params=()):
        c = self._conn()
        try:
            if params or ";" not in sql.strip().rstrip(";"):
                return c.execute(sql, params).fetchall()
            c.executescript(sql)
            return []
        finally:
            c.close()

    def create_table(self, table, columns, with_uuid=True):
        self._remember(table, columns)
        defs = [f"{qi(n)} {DECLARED[t][0]}" for n, t in columns]
        if with_uuid:
            defs.append(f"{UUID_COLUMN} TEXT UNIQUE")
        self.execute(f"CREATE TABLE {qi(table)} ({', '.join(defs)})")

    def insert(self, table, columns, rows=None):
        """|rows|: (uuid or None, values) in |columns| order."""
        columns, rows = self._normalize(table, columns, rows)
        if not rows:
            return
        names = [n for n, _ in columns]
        withu = rows[0][0] is not None
        if withu:
            names = [UUID_COLUMN] + names
        marks = ", ".join("?" for _ in names)
        sql = (f"INSERT INTO {qi(table)} ({', '.join(map(qi, names))}) "
               f"VALUES ({marks})")
        c = self._conn()
        try:
            c.execute("BEGIN")
            c.executemany(sql, [((u,) if withu else ())
                                + tuple(V.to_python(v) for v in vals)
                                for u, vals in rows])
            c.execute("COMMIT")
        finally:
            c.close()

    def table_columns(self, table):
        """[(name, declared type)] or None if the table does not exist."""
        got = self.execute(f"PRAGMA table_info({qi(table)})")
        return [(r[1], r[2]) for r in got] or None

    def canonical_rows(self, table, table_order=False):
        """(column names in canonical order, [(uuid, values)]) or None."""
        cols = self.table_columns(table)
        if cols is None:
            return None
        names = [n for n, _ in cols if n != UUID_COLUMN]
        if not table_order:
            names = canonical_order(names)
        has_u = any(n == UUID_COLUMN for n, _ in cols)
        sel = ([f"CAST({UUID_COLUMN} AS TEXT)"] if has_u else ["NULL"]) + \
            [qi(n) for n in names]
        c = self._conn()
        try:
            got = c.execute(f"SELECT {', '.join(sel)} FROM {qi(table)}")
            return names, [(r[0], tuple(V.from_python(v) for v in r[1:]))
                           for r in got]
        finally:
            c.close()

    def snapshot(self):
        c = self._conn()
        try:
            h = hashlib.sha256()
            for line in c.iterdump():
                h.update(line.encode("utf-8", "surrogateescape") + b"\n")
            return h.hexdigest()
        finally:
            c.close()


def pg_admin_conninfo():
    conninfo = os.environ.get("LIPSYNC_PG_CONNINFO", "").strip()
    if not conninfo:
        raise HarnessError(
            "LIPSYNC_PG_CONNINFO is not set: the postgres backend needs a "
            "PostgreSQL server on which the harness may create databases. "
            "Run under `sh tools/pgtest.sh`, or pass --backends sqlite")
    return conninfo


def _pg_env():
    env = dict(os.environ)
    env["PGOPTIONS"] = PG_OPTIONS
    return env


def psql(conninfo, sql, stdin=None, check=True):
    """Runs sql, through libpq in this process when it loads (lsconf.pq),
    else through psql; returns the rows as psql -At prints them."""
    if pq.available():
        try:
            rows = pq.execute(conninfo, sql, PG_OPTIONS, stdin)
        except pq.PqError as e:
            if check:
                raise HarnessError(f"PostgreSQL failed on {sql[:200]!r}: {e}")
            return ""
        return "".join(SEP.join(row) + "\n" for row in rows)
    if shutil.which("psql") is None:
        raise HarnessError("neither libpq nor psql found: install libpq5 or "
                           "postgresql-client")
    r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At",
                        "-F", SEP, "-d", conninfo, "-c", sql],
                       input=stdin or b"", capture_output=True,
                       env=_pg_env(), timeout=120)
    if r.returncode != 0 and check:
        raise HarnessError(f"psql failed on {sql[:200]!r}: "
                           f"{r.stderr.decode(errors='replace').strip()}")
    return r.stdout.decode("utf-8", "surrogateescape")


def _close(dbname):
    """This thread's connections to dbname end: a database is dropped, or
    used as a template, only without sessions."""
    if pq.available():
        pq.close(dbname)


def _with_dbname(conninfo, name):
    # A later keyword overrides an earlier one in a libpq conninfo.
    return f"{conninfo} dbname={name}"


def _copy_value(v, ctype, where):
    kind = v[0]
    if kind == "null":
        return "\\N"
    want = PG_KIND.get(ctype, "text")
    if kind != want:
        raise HarnessError(
            f"{where}: PostgreSQL column of canonical type {ctype} holds "
            f"only {want} values, not {V.format_value(v)}; restrict the "
            "fixture to `backends sqlite`")
    if kind == "integer":
        if ctype == "boolean":
            if v[1] not in (0, 1):
                raise HarnessError(f"{where}: boolean must be int:0 or int:1")
            return "true" if v[1] else "false"
        return str(v[1])
    if kind == "real":
        x = V.bits_real(v[1])
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "Infinity" if x > 0 else "-Infinity"
        return repr(x)
    if kind == "blob":
        return "\\\\x" + v[1].hex()
    s = v[1]
    if "\0" in s:
        raise HarnessError(f"{where}: PostgreSQL text cannot hold U+0000")
    return (s.replace("\\", "\\\\").replace("\t", "\\t")
            .replace("\n", "\\n").replace("\r", "\\r"))


class PgDatabase(Database):
    backend = "postgres"

    def __init__(self, label):
        self.admin = pg_admin_conninfo()
        self.name = f"lsconf_{secrets.token_hex(5)}_{label}"[:60].lower()
        self.name = re.sub(r"[^a-z0-9_]", "_", self.name)
        self.conninfo = _with_dbname(self.admin, self.name)
        psql(self.admin, f"CREATE DATABASE {qi(self.name)} TEMPLATE "
                         "template0 ENCODING 'UTF8' LOCALE 'C'")

    def spec(self):
        return self.conninfo

    def drop(self):
        for name in [self.name] + list(getattr(self, "_saves", {}).values()):
            _close(name)
            psql(self.admin, f"DROP DATABASE IF EXISTS {qi(name)} "
                             "WITH (FORCE)", check=False)

    def _clone(self, source, target):
        """CREATE DATABASE target TEMPLATE source; a template must have no
        other session, so a moment's connection (autovacuum) is waited
        out."""
        _close(source)
        for attempt in range(20):
            try:
                return psql(self.admin, f"CREATE DATABASE {qi(target)} "
                                        f"TEMPLATE {qi(source)}")
            except HarnessError:
                if attempt == 19:
                    raise
                time.sleep(0.25)

    def save(self, name):
        saves = self.__dict__.setdefault("_saves", {})
        if name in saves:
            psql(self.admin, f"DROP DATABASE {qi(saves[name])} WITH (FORCE)")
        saves[name] = f"lsconf_{secrets.token_hex(5)}_saved"
        self._clone(self.name, saves[name])

    def restore(self, name):
        """Drops this database and creates it again, under its name, from
        the saved one (a restore from a backup: a new database object)."""
        saved = getattr(self, "_saves", {}).get(name)
        if saved is None:
            raise HarnessError(f"restore: {name} was never saved")
        _close(self.name)
        psql(self.admin, f"DROP DATABASE {qi(self.name)} WITH (FORCE)")
        self._clone(saved, self.name)

    def copy_from(self, other):
        _close(self.name)
        psql(self.admin, f"DROP DATABASE {qi(self.name)} WITH (FORCE)")
        self._clone(other.name, self.name)

    def execute(self, sql):
        return [tuple(line.split(SEP))
                for line in psql(self.conninfo, sql).splitlines()]

    def create_table(self, table, columns, with_uuid=True):
        self._remember(table, columns)
        defs = [f"{qi(n)} {DECLARED[t][1]}" for n, t in columns]
        if with_uuid:
            defs.append(f"{UUID_COLUMN} uuid UNIQUE")
        psql(self.conninfo, f"CREATE TABLE {qi(table)} ({', '.join(defs)})")

    def insert(self, table, columns, rows=None):
        columns, rows = self._normalize(table, columns, rows)
        if not rows:
            return
        names = [n for n, _ in columns]
        withu = rows[0][0] is not None
        lines = []
        for u, vals in rows:
            fields = [_copy_value(v, t, f"table {table}, column {n}")
                      for v, (n, t) in zip(vals, columns)]
            lines.append("\t".join(([u] if withu else []) + fields) + "\n")
        cols = ([UUID_COLUMN] if withu else []) + names
        psql(self.conninfo, f"COPY {qi(table)} ({', '.join(map(qi, cols))})"
                            " FROM STDIN",
             stdin="".join(lines).encode("utf-8"))

    def table_columns(self, table):
        out = psql(self.conninfo,
                   "SELECT a.attname, format_type(a.atttypid, NULL) FROM "
                   "pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                   "JOIN pg_namespace s ON s.oid = c.relnamespace WHERE "
                   f"s.nspname = 'public' AND c.relname = {ql(table)} AND "
                   "a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum")
        cols = [tuple(line.split(SEP)) for line in out.splitlines()]
        return cols or None

    def canonical_rows(self, table, table_order=False):
        cols = self.table_columns(table)
        if cols is None:
            return None
        types = {n: PG_CANONICAL.get(t, t) for n, t in cols}
        names = [n for n, _ in cols if n != UUID_COLUMN]
        if not table_order:
            names = canonical_order(names)
        has_u = UUID_COLUMN in types
        exprs = [f"coalesce({UUID_COLUMN}::text, '')" if has_u else "'-'"]
        for n in names:
            c, t = qi(n), types[n]
            if t == "blob":
                shown = f"encode({c}, 'hex')"
            elif t == "boolean":
                shown = f"{c}::int::text"
            elif t == "integer":
                shown = f"{c}::text"
            elif t == "real":
                shown = f"encode(float8send({c}::float8), 'hex')"
            else:
                shown = f"encode(convert_to(concat({c}), 'UTF8'), 'hex')"
            exprs.append(f"CASE WHEN {c} IS NULL THEN 'N' ELSE 'v' || "
                         f"{shown} END")
        # One text a row, its fields joined by SEP: fewer values to fetch.
        out = psql(self.conninfo, "SELECT concat_ws(chr(31), "
                   f"{', '.join(exprs)}) FROM {qi(table)}")
        rows = []
        for line in out.splitlines():
            f = line.split(SEP)
            u = None if f[0] == "-" or f[0] == "" else f[0]
            vals = []
            for field, n in zip(f[1:], names):
                if field == "N":
                    vals.append(V.NULL)
                    continue
                field, kind = field[1:], PG_KIND.get(types[n], "text")
                if kind == "integer":
                    vals.append(("integer", int(field)))
                elif kind == "real":
                    vals.append(("real", V.canon_bits(int(field, 16))))
                elif kind == "blob":
                    vals.append(("blob", bytes.fromhex(field)))
                else:
                    vals.append(("text", bytes.fromhex(field).decode(
                        "utf-8", "surrogateescape")))
            rows.append((u, tuple(vals)))
        return names, rows

    def snapshot(self):
        r = subprocess.run(["pg_dump", "--no-owner", "--no-privileges",
                            "-d", self.conninfo], capture_output=True,
                           env=_pg_env(), timeout=120)
        if r.returncode != 0:
            raise HarnessError("pg_dump failed: "
                               + r.stderr.decode(errors="replace"))
        lines = [line for line in r.stdout.split(b"\n")
                 if not re.match(rb"\\(un)?restrict ", line)]
        return hashlib.sha256(b"\n".join(lines)).hexdigest()


def new_database(backend, workdir, label):
    if backend == "sqlite":
        return SqliteDatabase(workdir / f"{label}.db")
    if backend == "postgres":
        return PgDatabase(label)
    raise HarnessError(f"unknown backend {backend!r}")

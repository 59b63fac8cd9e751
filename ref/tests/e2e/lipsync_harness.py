"""Helpers for the end-to-end tests of lipsync-server and lipsync-client.

Standard library only. Where things live:
  LIPSYNC_BIN     directory holding the two binaries (default build/bin,
                  relative to the repository root)
  LIPSYNC_CITIES  the cities CSV (default ../shared/data/cities.csv,
                  relative to the repository root)
Secrets are passed by file (mode 0600) or by environment, never on a
command line.
"""

import csv
import hashlib
import os
import re
import secrets
import selectors
import signal
import sqlite3
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def _from_env(name, default):
    path = Path(os.environ.get(name, default))
    return path if path.is_absolute() else REPO_ROOT / path


BIN_DIR = _from_env("LIPSYNC_BIN", "build/bin")
CITIES_CSV = _from_env("LIPSYNC_CITIES", "../shared/data/cities.csv")
SERVER = BIN_DIR / "lipsync-server"
CLIENT = BIN_DIR / "lipsync-client"

# Exit status of both programs (see --help).
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_SCHEMA = 4
EXIT_PEER = 5
EXIT_DATABASE = 6
EXIT_CONFLICT = 7

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
    r"rows, (?P<out>\d+) bytes out, (?P<in>\d+) bytes in, \d+\.\d\ds$"
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
                 extra=(), env=None, listen="127.0.0.1:0", log_dir=None):
        args = [str(SERVER), "--db", str(db), "--listen", listen]
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


def client_args(db, address, tables, secret_file, extra=()):
    args = [str(CLIENT), "--db", str(db), "--connect", address]
    if secret_file is not None:
        args += ["--secret-file", str(secret_file)]
    for t in tables:
        args += ["--table", t]
    return args + list(extra)


def run_client(db, address, tables, secret_file, extra=(), env=None,
               timeout=60):
    return subprocess.run(
        client_args(db, address, tables, secret_file, extra),
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

#!/usr/bin/env python3
"""The LipSync load test: one lipsync-server, many clients syncing at once.

Each scenario gives N clients a SQLite database of their own, with K places
of their own in table cities, and starts one lipsync-client process for
each, all at once, in rounds:

  sqlite server    one lipsync-server on a SQLite database holding R places
                   from cities.csv. Round 1: every client syncs. Round 2:
                   every client syncs again, so that the clients that synced
                   early get the rows of those that synced later; then the
                   server holds R + N*K rows and every client's table must
                   equal it. Round 3: every client syncs once more, with
                   nothing to do: no row may move, and every table must
                   still be equal.
  postgres server  the same, with the server's table in PostgreSQL.
  two servers      two lipsync-server processes on one PostgreSQL database,
                   the clients alternating between them, while a writer
                   updates, inserts and deletes rows of the PostgreSQL table
                   directly (one change per transaction, a few a second)
                   during rounds 1 and 2. After the writer stops, a final
                   round; then every client's table must equal the
                   PostgreSQL table.

The servers' tables start without LipSync's change capture, so that the
clients of round 1 are all the table's first syncs at once. The servers get
--max-clients 128 (or N, if more), so that they serve every client at once,
and a --timeout long enough for a session to wait its turn for the
database: sessions that write to one SQLite database take turns.

For each round it prints the wall time, the syncs per second, the longest
and median time of one client (from its start to its exit), the retries the
clients made (their lines "syncing again"), and peak RSS. Every client must
exit 0 and every table must be equal; the closing line counts the scenarios
that passed and failed, and the exit status is non-zero if any failed.

Tables are equal when their rows are, all columns and _lipsync_uuid
included: each table is read in the order of _lipsync_uuid (LipSync keeps
it unique, so that order sorts the rows) as Python values (int, float, str,
None) and digested. SQLite gives those values itself; PostgreSQL's rows
come from COPY and are parsed into the same ones.

The PostgreSQL scenarios need LIPSYNC_PG_CONNINFO, a server on which they
may create and drop databases (make check and make bench run under
tools/pgtest.sh, which sets it); without it they are skipped.

The places come from the GeoNames gazetteer (https://www.geonames.org,
CC BY 4.0).
"""

import argparse
import concurrent.futures
import csv
import ctypes
import hashlib
import itertools
import os
import random
import re
import resource
import secrets
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CITIES = os.environ.get(
    "LIPSYNC_CITIES", str(ROOT.parent / "shared" / "data" / "cities.csv"))
DEFAULT_BIN = os.environ.get("LIPSYNC_BIN", str(ROOT / "build" / "bin"))

TABLE = "cities"
UUID_COLUMN = "_lipsync_uuid"
# Each column: name, SQLite type, PostgreSQL type, Python type.
COLUMNS = (
    ("city_id", "INTEGER", "bigint", int),
    ("name", "TEXT", "text", str),
    ("alt_name", "TEXT", "text", str),
    ("country", "TEXT", "text", str),
    ("feature_code", "TEXT", "text", str),
    ("admin_code", "TEXT", "text", str),
    ("population", "INTEGER", "bigint", int),
    ("lon", "REAL", "double precision", float),
    ("lat", "REAL", "double precision", float),
)
COLUMN_NAMES = [c[0] for c in COLUMNS]
# What a synced table is compared on: every column, then the UUID.
COMPARED = ", ".join(COLUMN_NAMES + [UUID_COLUMN])
COMPARED_TYPES = [c[3] for c in COLUMNS] + [str]

# Ids of made-up places: past every GeoNames id.
OWN_ID_BASE = 1_000_000_000     # the clients' own places
WRITER_ID_BASE = 2_000_000_000  # the places the writer inserts

# The start of the line the client prints for the table.
SUMMARY = re.compile(rf"^{TABLE}: sent (\d+) rows, received (\d+) rows,",
                     re.M)

MIN_MAX_CLIENTS = 128     # --max-clients of the servers, at least
STARTUP_TIMEOUT_S = 30    # how long a server may take to say where it is
RSS_BASE_MIB = 64         # a server before any session (--rss-per-session)
STOP_TIMEOUT_S = 30       # how long a server may take to stop on SIGTERM
# A client waits this much longer than the servers' --timeout, so that one
# queued behind other writers hears the server's answer "busy, sync again"
# (and syncs again) rather than giving up first.
CLIENT_PATIENCE_S = 60
# Clients still running after this many times their --timeout are killed:
# enough for every attempt that --retries (3 by default) allows.
ROUND_DEADLINE_TIMEOUTS = 5
WRITER_INTERVAL_S = 0.25  # one change this often
PR_SET_CHILD_SUBREAPER = 36


class LoadError(Exception):
    pass


# ---- data ------------------------------------------------------------------

def read_cities(path, limit):
    """Yields the first |limit| places of the cities CSV (all of them when
    |limit| is None), as tuples of Python values in the order of COLUMNS."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            if next(reader, None) != COLUMN_NAMES:
                raise LoadError(f"{path}: the header is not"
                                f" {','.join(COLUMN_NAMES)}")
            for record in itertools.islice(reader, limit):
                yield tuple(kind(value) if value or kind is str else None
                            for (_, _, _, kind), value
                            in zip(COLUMNS, record))
    except OSError as e:
        raise LoadError(f"cannot read the cities data: {e}; use --cities"
                        " PATH or set LIPSYNC_CITIES") from e


def count_cities(path, limit):
    """How many places read_cities(|path|, |limit|) yields."""
    return sum(1 for _ in read_cities(path, limit))


def own_places(client, k):
    """The |k| places client number |client| starts with: made up, none
    like another client's, with non-ASCII names, NULLs, empty strings and
    floats that need all their digits."""
    rng = random.Random(client)
    for j in range(k):
        yield (OWN_ID_BASE + client * k + j, f"Łąka {client}-{j}",
               None if j % 2 else "", "ZZ", "PPL", f"{j % 100:02d}",
               rng.randrange(1000, 1_000_000), rng.uniform(-180, 180),
               rng.uniform(-90, 90))


def create_sqlite(path, rows):
    """Creates SQLite database |path| with table cities holding |rows|."""
    db = sqlite3.connect(path)
    try:
        db.execute(f"CREATE TABLE {TABLE} ("
                   + ", ".join(f"{name} {sqlite_type}"
                               for name, sqlite_type, _, _ in COLUMNS) + ")")
        with db:
            db.executemany(f"INSERT INTO {TABLE} VALUES"
                           f" ({', '.join('?' * len(COLUMNS))})", rows)
    finally:
        db.close()


# ---- comparing tables ----------------------------------------------------
#
# These run in worker processes, several tables at once.

def digest(rows):
    """(row count, SHA-256) of |rows|, tuples of Python values, in order."""
    h = hashlib.sha256()
    count = 0
    for row in rows:
        h.update(repr(row).encode())
        h.update(b"\n")
        count += 1
    return count, h.hexdigest()


def sqlite_digest(path):
    """The digest of the synced table in SQLite database |path|."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return digest(db.execute(f"SELECT {COMPARED} FROM {TABLE}"
                                 f" ORDER BY {UUID_COLUMN}"))
    finally:
        db.close()


def pg_digest(conninfo):
    """The digest of the synced table in PostgreSQL database |conninfo|,
    its rows parsed to the values SQLite's would have."""
    text = psql(conninfo, f"COPY (SELECT {COMPARED} FROM {TABLE} ORDER BY"
                f' {UUID_COLUMN}::text COLLATE "C") TO STDOUT')
    # Only "\n" ends a row: COPY escapes the ones inside values.
    return digest(parse_copy_row(line) for line in text.split("\n")[:-1])


# ---- PostgreSQL ------------------------------------------------------------

def psql(conninfo, command):
    """Runs |command| (SQL) with psql; returns what it printed."""
    r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                        "-d", conninfo, "-c", command],
                       stdin=subprocess.DEVNULL, capture_output=True)
    if r.returncode != 0:
        raise LoadError("psql failed: "
                        + r.stderr.decode(errors="replace").strip())
    return r.stdout.decode()


def database_conninfo(conninfo, dbname):
    """|conninfo|, a URI or keyword/value string, naming database
    |dbname| instead."""
    if re.match(r"postgres(ql)?://", conninfo):
        return urllib.parse.urlunsplit(
            urllib.parse.urlsplit(conninfo)._replace(path="/" + dbname))
    return f"{conninfo} dbname={dbname}"  # the last dbname counts


def pg_create_database(conninfo, dbname):
    """Creates database |dbname| afresh; returns its conninfo."""
    pg_drop_database(conninfo, dbname)
    psql(conninfo, f'CREATE DATABASE "{dbname}"')
    return database_conninfo(conninfo, dbname)


def pg_drop_database(conninfo, dbname):
    """Drops database |dbname|, if it exists."""
    psql(conninfo, f'DROP DATABASE IF EXISTS "{dbname}"')


def copy_field(value):
    """|value| as a field of COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back exactly
    return (str(value).replace("\\", "\\\\").replace("\t", "\\t")
            .replace("\n", "\\n").replace("\r", "\\r"))


COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                "v": "\v"}


def parse_copy_field(field, kind):
    """A field of COPY's text format as a Python value of type |kind|."""
    if field == "\\N":
        return None
    if "\\" in field:
        field = re.sub(r"\\(.)",
                       lambda m: COPY_ESCAPES.get(m.group(1), m.group(1)),
                       field)
    return kind(field)


def parse_copy_row(line):
    """A row of COPY's text format as a tuple of the COMPARED columns."""
    return tuple(parse_copy_field(f, kind)
                 for f, kind in zip(line.split("\t"), COMPARED_TYPES))


def pg_create_table(conninfo, rows):
    """Creates table cities holding |rows|, with COPY."""
    psql(conninfo, f"CREATE TABLE {TABLE} ("
         + ", ".join(f"{name} {pg_type}" for name, _, pg_type, _ in COLUMNS)
         + ")")
    copy = subprocess.Popen(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c",
         f"\\copy {TABLE} FROM pstdin"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:
        for row in rows:
            copy.stdin.write(("\t".join(map(copy_field, row)) + "\n")
                             .encode())
    except BrokenPipeError:
        pass  # psql failed: its message follows
    finally:
        copy.stdin.close()
    error = copy.stderr.read().decode(errors="replace").strip()
    if copy.wait() != 0:
        raise LoadError(f"COPY into PostgreSQL failed: {error}")


class Writer:
    """Changes the PostgreSQL table directly while clients sync: every
    WRITER_INTERVAL_S an UPDATE of a place's population, an INSERT of a new
    place or a DELETE of a place, in turn, each in its own transaction,
    through one psql process fed by a thread of ours."""

    KINDS = ("update", "insert", "delete")

    def __init__(self, conninfo, ids, log_path):
        self.conninfo = conninfo
        self.ids = list(ids)
        self.log_path = log_path
        self.counts = dict.fromkeys(self.KINDS, 0)
        self._stopping = threading.Event()
        self._psql = None
        self._thread = None

    def start(self):
        with open(self.log_path, "wb") as log:
            self._psql = subprocess.Popen(
                ["psql", "-X", "-q", "-d", self.conninfo],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _statements(self):
        """Endless (kind, SQL): the changes, in turn."""
        rng = random.Random(0)
        doomed = rng.sample(self.ids, len(self.ids))
        for n in itertools.count():
            yield "update", (
                f"UPDATE {TABLE} SET population = population + 1"
                f" WHERE city_id = {rng.choice(self.ids)};\n")
            place = (WRITER_ID_BASE + n, f"Nowe Miasto {n}", None, "ZZ",
                     "PPL", "01", rng.randrange(1000, 1_000_000),
                     rng.uniform(-180, 180), rng.uniform(-90, 90))
            yield "insert", (
                f"INSERT INTO {TABLE} ({', '.join(COLUMN_NAMES)}) VALUES ("
                + ", ".join(sql_literal(v) for v in place) + ");\n")
            if doomed:
                yield "delete", (f"DELETE FROM {TABLE}"
                                 f" WHERE city_id = {doomed.pop()};\n")

    def _run(self):
        for kind, sql in self._statements():
            if self._stopping.wait(WRITER_INTERVAL_S):
                return
            try:
                self._psql.stdin.write(sql.encode())
                self._psql.stdin.flush()
            except BrokenPipeError:
                return
            self.counts[kind] += 1

    def stop(self):
        """Stops writing and waits until psql has run every change sent.
        Returns the errors psql reported (a list of lines)."""
        if self._psql is None:
            return []
        self._stopping.set()
        self._thread.join()
        self._psql.stdin.close()
        status = self._psql.wait()
        self._psql = None
        errors = [line for line in self.log_path.read_text(
            errors="replace").splitlines() if "ERROR" in line]
        if status != 0 and not errors:
            errors.append(f"psql exited with status {status}")
        return errors

    def describe(self):
        return ", ".join(f"{self.counts[k]:,} {k}s" for k in self.KINDS)


def sql_literal(value):
    """|value| as an SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


# ---- processes -------------------------------------------------------------

def become_subreaper():
    """Makes this process adopt the orphans of its children (see spawn)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise LoadError("prctl(PR_SET_CHILD_SUBREAPER): "
                        + os.strerror(ctypes.get_errno()))


def raise_open_files_limit():
    """Lets the servers hold a socket and a database connection for each of
    many clients: the soft limit of open files up to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def spawn(argv, out, err):
    """Starts |argv| with its stdout to file |out| and its stderr to file
    |err|; returns its pid.

    The program is forked by a short-lived sh, and becomes our child when
    that sh exits (we are a subreaper), so that its ru_maxrss counts only
    its own pages: Linux carries the peak RSS of the process that forks a
    program across exec, and this one is larger than a client may be."""
    r = subprocess.run(
        ["sh", "-c", 'o=$1 e=$2; shift 2; "$@" </dev/null >"$o" 2>"$e" &'
         ' echo $!', "sh", str(out), str(err)] + [str(a) for a in argv],
        stdin=subprocess.DEVNULL, capture_output=True)
    if r.returncode != 0 or not r.stdout.strip().isdigit():
        raise LoadError(f"cannot start {argv[0]}: "
                        + r.stderr.decode(errors="replace"))
    return int(r.stdout)


def peak_rss(pid):
    """The peak RSS of running process |pid| in bytes (VmHWM), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Server:
    """A lipsync-server on 127.0.0.1, on a port of the system's choosing,
    logging to a file."""

    def __init__(self, bindir, db, secret, log_path, max_clients, timeout):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(Path(bindir) / "lipsync-server"), "--db", str(db),
                 "--listen", "127.0.0.1:0", "--secret-file", str(secret),
                 "--table", TABLE, "--max-clients", str(max_clients),
                 "--timeout", str(timeout)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        ready, _, _ = select.select([self.proc.stdout], [], [],
                                    STARTUP_TIMEOUT_S)
        line = self.proc.stdout.readline().decode() if ready else ""
        m = re.fullmatch(r"listening on (\S+)\n", line)
        if not m:
            self.stop()
            raise LoadError("the server did not report its address:\n"
                            + self.log())
        self.address = m.group(1)

    def peak_rss(self):
        return peak_rss(self.proc.pid)

    def log(self):
        return indent(self.log_path.read_text(errors="replace"))

    def stop(self):
        """Stops the server with SIGTERM (SIGKILL if it takes too long);
        returns its exit status."""
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        return self.proc.returncode


@dataclass
class ClientRun:
    """One run of lipsync-client: client number |client|, from its start
    (time.monotonic) to its exit."""
    client: int
    pid: int
    started: float
    out: Path
    err: Path
    seconds: float = None
    status: int = None
    rss: int = None

    def finish(self, ended, wait_status, usage):
        self.seconds = ended - self.started
        self.status = os.waitstatus_to_exitcode(wait_status)
        self.rss = usage.ru_maxrss * 1024  # KiB on Linux

    def stderr(self):
        return self.err.read_text(errors="replace")

    def retries(self):
        return self.stderr().count("syncing again")

    def rows_moved(self):
        """(rows sent, rows received) as the client reported them, or None."""
        m = SUMMARY.search(self.out.read_text(errors="replace"))
        return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass
class Round:
    """The figures of one round: every client synced once, all at once."""
    label: str
    seconds: float
    runs: list
    server_rss: list = field(default_factory=list)

    def failures(self):
        return [r for r in self.runs if r.status != 0]

    def rate(self):
        return len(self.runs) / self.seconds

    def longest(self):
        return max(r.seconds for r in self.runs)

    def median(self):
        return statistics.median(r.seconds for r in self.runs)

    def retries(self):
        return sum(r.retries() for r in self.runs)

    def rows_moved(self):
        """Rows sent and received by all the clients that succeeded."""
        moved = [r.rows_moved() or (0, 0) for r in self.runs
                 if r.status == 0]
        return sum(s for s, _ in moved), sum(r for _, r in moved)


def run_round(label, bindir, secret, timeout, clients, addresses, work):
    """Starts lipsync-client (with --timeout |timeout|) on every database in
    |clients| as fast as processes start, client i on server
    addresses[i % len(addresses)], and waits for every one; returns the
    Round. Each client's time runs from its start to its exit, which a
    pidfd per client reports as it comes."""
    client_bin = str(Path(bindir) / "lipsync-client")
    deadline_s = ROUND_DEADLINE_TIMEOUTS * timeout
    running = {}  # pidfd -> ClientRun
    finished = []
    poller = select.poll()
    tag = label.replace(" ", "-")
    started = time.monotonic()
    try:
        for i, db in enumerate(clients):
            out = work / f"client-{i:03d}.{tag}.out"
            err = work / f"client-{i:03d}.{tag}.err"
            spawned = time.monotonic()
            pid = spawn([client_bin, "--db", db, "--connect",
                         addresses[i % len(addresses)], "--secret-file",
                         secret, "--table", TABLE, "--timeout", timeout],
                        out, err)
            pidfd = os.pidfd_open(pid)
            running[pidfd] = ClientRun(i, pid, spawned, out, err)
            poller.register(pidfd, select.POLLIN)
            reap(poller, running, finished, 0)
        deadline = started + deadline_s
        while running and time.monotonic() < deadline:
            reap(poller, running, finished,
                 max(0, int((deadline - time.monotonic()) * 1000)))
        for run in running.values():
            with open(run.err, "a") as f:
                f.write(f"load: killed, still running after {deadline_s}"
                        " s\n")
    finally:
        kill(running)  # past the deadline, or on an error of ours
        reap(poller, running, finished, None)
    seconds = time.monotonic() - started
    return Round(label, seconds, sorted(finished, key=lambda r: r.client))


def reap(poller, running, finished, timeout_ms):
    """Moves the runs that exited within |timeout_ms| (None: until every
    run has exited) from |running| to |finished|."""
    while running:
        ready = poller.poll(timeout_ms)
        ended = time.monotonic()
        for pidfd, _ in ready:
            run = running.pop(pidfd)
            poller.unregister(pidfd)
            os.close(pidfd)
            _, wait_status, usage = os.wait4(run.pid, 0)
            run.finish(ended, wait_status, usage)
            finished.append(run)
        if timeout_ms is not None:
            return


def kill(running):
    """Kills the runs still going (reap() then collects them)."""
    for run in running.values():
        try:
            os.kill(run.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---- scenarios -----------------------------------------------------------

@dataclass
class Context:
    """What every scenario shares."""
    args: argparse.Namespace
    work: Path
    secret: Path
    pool: concurrent.futures.Executor
    places: int  # how many places the servers start with


class Scenario:
    """One scenario: its servers, clients, rounds and what went wrong.
    Subclasses make the servers' database and run the rounds."""

    name = ""
    server_name = "the server"
    nservers = 1

    def __init__(self, ctx):
        self.ctx = ctx
        self.work = ctx.work / re.sub(r"\W+", "-", self.name)
        self.work.mkdir()
        self.clients = []
        self.servers = []
        self.rounds = []
        self.problems = []
        self.equal = None  # how many tables the last check found equal

    # -- what subclasses provide

    def prepare(self):
        """Creates the servers' database; returns what --db names it."""
        raise NotImplementedError

    def reference(self):
        """(function, argument): the digest of the servers' table."""
        raise NotImplementedError

    def drive(self):
        """Runs the rounds and checks."""
        raise NotImplementedError

    def cleanup(self):
        """Removes what prepare() made outside the work directory."""

    # -- the common parts

    def run(self):
        """Runs the scenario and prints its figures; returns whether it
        passed."""
        args = self.ctx.args
        print(f"\n{self.name}:")
        started = time.monotonic()
        try:
            db = self.prepare()
            self.clients = self.make_clients()
            for n in range(self.nservers):
                self.servers.append(Server(
                    args.bin, db, self.ctx.secret,
                    self.work / f"server-{n + 1}.log",
                    max(MIN_MAX_CLIENTS, args.clients), args.timeout))
            self.drive()
        except (LoadError, OSError, sqlite3.Error) as e:
            self.problems.append(str(e))
        finally:
            self.stop_servers()
            if not args.keep:
                self.cleanup()
                shutil.rmtree(self.work, ignore_errors=True)
        for problem in self.problems:
            print(f"  problem: {problem}")
        print(f"  {time.monotonic() - started:.1f} s in all, with preparing"
              " the databases")
        print(self.summary())
        return not self.problems

    def make_clients(self):
        """Creates the clients' databases; returns their paths."""
        paths = []
        for i in range(self.ctx.args.clients):
            path = self.work / f"client-{i:03d}.db"
            create_sqlite(path, own_places(i, self.ctx.args.own))
            paths.append(path)
        return paths

    def stop_servers(self):
        """Stops the servers; one that fails to exit 0 is a problem."""
        for n, server in enumerate(self.servers):
            status = server.stop()
            if status != 0:
                self.problems.append(f"server {n + 1} exited with status"
                                     f" {status}:\n{server.log()}")
        self.servers = []

    def sync_round(self, label):
        """One round: every client syncs, all at once; prints its
        figures and notes each client that failed."""
        args = self.ctx.args
        r = run_round(label, args.bin, self.ctx.secret,
                      args.timeout + CLIENT_PATIENCE_S, self.clients,
                      [s.address for s in self.servers], self.work)
        r.server_rss = [s.peak_rss() for s in self.servers]
        self.rounds.append(r)
        print_round(r)
        bound = rss_bound(args)
        for n, rss in enumerate(r.server_rss):
            if bound and rss is not None and rss > bound:
                self.problems.append(
                    f"{label}: server {n + 1} peaked at {mb(rss)} RSS, above"
                    f" the bound of {mb(bound)} ({RSS_BASE_MIB} MiB and"
                    f" {args.rss_per_session} MiB a session)")
        # Each failure with its stderr; clients that failed alike, once.
        alike = {}
        for run in r.failures():
            alike.setdefault((run.status, run.stderr()), []).append(
                str(run.client))
        for (status, stderr), clients in alike.items():
            self.problems.append(
                f"{label}: client{'s' if len(clients) > 1 else ''}"
                f" {', '.join(clients)} exited with status {status}:\n"
                + indent(stderr))
        return r

    def check_no_rows_moved(self, r):
        """No client may have sent or received a row in round |r|."""
        moved = []
        for run in r.runs:
            rows = run.rows_moved()
            if run.status == 0 and rows != (0, 0):
                moved.append(f"client {run.client} " + (
                    "printed no summary" if rows is None else
                    f"sent {rows[0]:,} and received {rows[1]:,}"))
        if moved:
            self.problems.append(
                f"{r.label} had nothing to do, but {len(moved)} clients"
                " moved rows: " + "; ".join(moved[:10])
                + ("; ..." if len(moved) > 10 else ""))

    def check_tables(self, when, expected_rows=None):
        """Every client's table must equal the servers' (and hold
        |expected_rows| rows, when given)."""
        started = time.monotonic()
        function, argument = self.reference()
        reference = self.ctx.pool.submit(function, argument)
        digests = [self.ctx.pool.submit(sqlite_digest, c)
                   for c in self.clients]
        try:
            rows, want = reference.result()
        except (LoadError, sqlite3.Error) as e:
            self.problems.append(f"{when}: cannot read the table of"
                                 f" {self.server_name}: {e}")
            return
        if expected_rows is not None and rows != expected_rows:
            self.problems.append(f"{when}: {self.server_name} holds"
                                 f" {rows:,} rows, expected"
                                 f" {expected_rows:,}")
        differ = []
        for i, future in enumerate(digests):
            try:
                count, got = future.result()
            except (sqlite3.Error, OSError) as e:
                differ.append(f"client {i}: {e}")
                continue
            if got != want:
                differ.append(f"client {i}: {count:,} rows"
                              + (", other values" if count == rows else ""))
        self.equal = len(self.clients) - len(differ)
        print(f"  {when}: {self.equal} of {len(self.clients)} tables equal"
              f" {self.server_name}'s ({rows:,} rows; compared in"
              f" {time.monotonic() - started:.1f} s)")
        if differ:
            self.problems.append(
                f"{when}: {len(differ)} tables differ from"
                f" {self.server_name}'s ({rows:,} rows): "
                + "; ".join(differ[:10])
                + ("; ..." if len(differ) > 10 else ""))

    def summary(self):
        failures = sum(len(r.failures()) for r in self.rounds)
        parts = [f"{self.ctx.args.clients} clients"]
        parts += [f"{r.label} {r.seconds:.1f} s ({r.rate():.1f} syncs/s,"
                  f" longest {r.longest():.1f} s)" for r in self.rounds]
        parts += self.extra_summary()
        parts.append(f"{failures} failures")
        if self.equal is not None:
            n = len(self.clients)
            parts.append(f"all {n} tables equal" if self.equal == n
                         else f"{n - self.equal} of {n} tables differ")
        verdict = "" if not self.problems else "FAILED: "
        return f"load: {self.name}: {verdict}" + ", ".join(parts)

    def extra_summary(self):
        return []


class Converge(Scenario):
    """Rounds 1 to 3 against one server (see the module's comment)."""

    def drive(self):
        args = self.ctx.args
        self.sync_round("round 1")
        self.sync_round("round 2")
        self.check_tables("after round 2",
                          self.ctx.places + args.clients * args.own)
        self.check_no_rows_moved(self.sync_round("no-op round"))
        self.check_tables("after the no-op round")


class SqliteServer(Converge):
    name = "sqlite server"

    def prepare(self):
        path = self.work / "server.db"
        create_sqlite(path, read_cities(self.ctx.args.cities,
                                        self.ctx.args.rows))
        return path

    def reference(self):
        return sqlite_digest, self.work / "server.db"


class PostgresDatabase:
    """A scenario's own PostgreSQL database, holding the places."""

    server_name = "PostgreSQL"
    dbname = ""

    def prepare(self):
        base = os.environ["LIPSYNC_PG_CONNINFO"]
        self.conninfo = pg_create_database(base, self.dbname)
        pg_create_table(self.conninfo, read_cities(self.ctx.args.cities,
                                                   self.ctx.args.rows))
        return self.conninfo

    def reference(self):
        return pg_digest, self.conninfo

    def cleanup(self):
        try:
            pg_drop_database(os.environ["LIPSYNC_PG_CONNINFO"], self.dbname)
        except LoadError as e:
            self.problems.append(str(e))


class PostgresServer(PostgresDatabase, Converge):
    name = "postgres server"
    dbname = "lipsync_load_postgres"


class TwoServers(PostgresDatabase, Scenario):
    """Two servers on one PostgreSQL database, and a writer changing it
    during rounds 1 and 2."""

    name = "two servers on one postgres database"
    dbname = "lipsync_load_two_servers"
    nservers = 2

    def __init__(self, ctx):
        super().__init__(ctx)
        self.writer = None

    def drive(self):
        ids = (row[0] for row in read_cities(self.ctx.args.cities,
                                             self.ctx.args.rows))
        self.writer = Writer(self.conninfo, ids, self.work / "writer.log")
        self.writer.start()
        try:
            self.sync_round("round 1")
            self.sync_round("round 2")
        finally:
            errors = self.writer.stop()
        print(f"  the writer made {self.writer.describe()}")
        if errors:
            self.problems.append("the writer's changes failed: "
                                 + "; ".join(errors[:5]))
        self.sync_round("final round")
        self.check_tables("after the final round")

    def extra_summary(self):
        if self.writer is None:
            return []
        return [f"writer: {self.writer.describe()}"]


# ---- report ----------------------------------------------------------------

def mb(nbytes):
    return "?" if nbytes is None else f"{nbytes / 1e6:.1f} MB"


def indent(text, limit=40):
    """|text|'s last |limit| lines, indented."""
    lines = text.rstrip("\n").splitlines()[-limit:]
    return "\n".join("    " + line for line in lines)


def rss_bound(args):
    """The peak RSS a server may reach with args.clients sessions at
    once, in bytes; 0: not checked."""
    if not args.rss_per_session:
        return 0
    return (RSS_BASE_MIB + args.rss_per_session * args.clients) << 20


def print_round(r):
    sent, received = r.rows_moved()
    rss = [run.rss for run in r.runs]
    print(f"  {r.label}: {len(r.runs)} clients in {r.seconds:.1f} s"
          f" ({r.rate():.1f} syncs/s); one client: longest"
          f" {r.longest():.1f} s, median {r.median():.1f} s;"
          f" {len(r.failures())} failed, {r.retries()} retries")
    print(f"    rows sent {sent:,}, received {received:,}; peak RSS:"
          f" server{'s' if len(r.server_rss) > 1 else ''}"
          f" {' / '.join(mb(x) for x in r.server_rss)}, clients up to"
          f" {mb(max(rss))} (median {mb(statistics.median(rss))})")


# ---- main ------------------------------------------------------------------

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=100, metavar="N",
                    help="clients syncing at once (default 100)")
    ap.add_argument("--rows", type=int, metavar="R",
                    help="places the servers start with, the first R of the"
                    " cities CSV (default all)")
    ap.add_argument("--own", type=int, default=5, metavar="K",
                    help="places each client starts with of its own"
                    " (default 5)")
    ap.add_argument("--backend", choices=("sqlite", "postgres", "both"),
                    default="both", help="the servers' database: sqlite"
                    " runs the sqlite server scenario, postgres the"
                    " postgres server and two servers scenarios (default"
                    " both: all three)")
    ap.add_argument("--timeout", type=int, default=600, metavar="SECONDS",
                    help="the servers' --timeout: how long a session may"
                    " wait for the database lock, which other sessions"
                    " writing hold (default 600); the clients'"
                    f" is {CLIENT_PATIENCE_S} s longer")
    ap.add_argument("--bin", default=DEFAULT_BIN, metavar="DIR",
                    help="where lipsync-server and lipsync-client are"
                    " (default %(default)s)")
    ap.add_argument("--cities", default=DEFAULT_CITIES, metavar="CSV",
                    help="the GeoNames cities CSV (default %(default)s)")
    ap.add_argument("--rss-per-session", type=int, default=8, metavar="MIB",
                    help="fail a scenario whose server's peak RSS passes"
                    f" {RSS_BASE_MIB} MiB plus MIB for each client (default"
                    " %(default)s; 0: do not check, for builds whose"
                    " memory is not the release build's, as under a"
                    " sanitizer)")
    ap.add_argument("--keep", metavar="DIR",
                    help="make the databases and logs in DIR (which must"
                    " not exist) and keep them, and the PostgreSQL"
                    " databases too")
    args = ap.parse_args()
    if (args.clients < 1 or args.own < 0 or (args.rows or 0) < 0
            or args.timeout < 1):
        ap.error("--clients and --timeout must be at least 1, --rows and"
                 " --own at least 0")
    for b in ("lipsync-server", "lipsync-client"):
        if not os.access(Path(args.bin) / b, os.X_OK):
            ap.error(f"{Path(args.bin) / b} not found; run 'make' first")
    if args.keep and Path(args.keep).exists():
        ap.error(f"--keep {args.keep}: already exists")
    args.bin = str(Path(args.bin).resolve())
    return args


def write_secret(work):
    """The shared secret, in a file only we can read: never in argv."""
    path = work / "secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


def scenarios(backend):
    """The scenario classes to run, and those skipped for want of a
    PostgreSQL server."""
    chosen = [SqliteServer] if backend in ("sqlite", "both") else []
    postgres = [PostgresServer, TwoServers]
    if backend in ("postgres", "both"):
        if not os.environ.get("LIPSYNC_PG_CONNINFO"):
            return chosen, postgres
        chosen += postgres
    return chosen, []


def main():
    args = parse_args()
    chosen, skipped = scenarios(args.backend)
    try:
        places = count_cities(args.cities, args.rows)
        versions = f"SQLite {sqlite3.sqlite_version}"
        if PostgresServer in chosen:
            versions += ", PostgreSQL " + psql(
                os.environ["LIPSYNC_PG_CONNINFO"], "SHOW server_version")
        raise_open_files_limit()
        become_subreaper()
    except LoadError as e:
        print(f"load: {e}", file=sys.stderr)
        return 1
    if args.keep:
        work = Path(args.keep).resolve()
        work.mkdir(parents=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="lipsync-load."))
    print(f"LipSync load test: {args.clients} clients syncing at once,"
          f" servers start with {places:,} places of cities.csv (GeoNames,"
          f" CC BY 4.0), each client with {args.own} of its own")
    print(f"  binaries in {args.bin}; {versions.strip()}; work in {work}")
    if skipped:
        print(f"  {len(skipped)} PostgreSQL scenarios skipped:"
              " LIPSYNC_PG_CONNINFO is not set (run under sh"
              " tools/pgtest.sh)")
    passed = failed = 0
    try:
        secret = write_secret(work)
        with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:
            ctx = Context(args, work, secret, pool, places)
            for scenario in chosen:
                if scenario(ctx).run():
                    passed += 1
                else:
                    failed += 1
    finally:
        if args.keep:
            print(f"  databases and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load: {passed} passed, {failed} failed"
          + (f", {len(skipped)} skipped" if skipped else ""))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

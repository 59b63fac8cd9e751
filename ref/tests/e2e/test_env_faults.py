#!/usr/bin/env python3
"""End-to-end tests of lipsync-server and lipsync-client when the
environment fails under them: the PostgreSQL server restarts mid-sync, a
filesystem fills up, a database is read-only, a table is dropped or a
column added on one side between two syncs. Every failure must end in a
clear error and leave both databases exactly as they were; the server
keeps serving, and the next sync, once the cause is gone, succeeds.

Run from the repository root, with a throwaway PostgreSQL server:

    sh tools/pgtest.sh python3 -m unittest ref/tests/e2e/test_env_faults.py -v

What each part needs:
- PostgresRestartTest starts a PostgreSQL cluster of its own, since it
  stops and starts it (the shared test server must stay up for the other
  tests): initdb into a temporary directory, fsync off, a Unix socket in
  that directory and no TCP; as root the cluster belongs to the system user
  postgres, as in tools/pgtest.sh. It stops PostgreSQL while the server
  sleeps at a chosen point of the sync, so it runs the fault-injection
  build of the server (build/fault/bin, or $LIPSYNC_FAULT_BIN: make
  build/fault/bin/lipsync-server). It fails, never skips, when either is
  missing.
- DiskFullTest mounts size-limited tmpfs filesystems, and ReadOnlyTest, as
  root (who writes through chmod), a tmpfs it remounts read-only: they
  skip, saying why, where mounting is not allowed; DiskFullTest skips when
  not root, and ReadOnlyTest then uses chmod 0444 instead.
- The tests with a server on PostgreSQL (SchemaChangeTest_pg,
  ReadOnlyTest.test_postgres_server_database_read_only) use the shared test
  server of $LIPSYNC_PG_CONNINFO and fail without it, like the other
  end-to-end tests.
The binaries under test come from $LIPSYNC_BIN (default build/bin). With
LIPSYNC_SHOW_ERRORS=1 each test prints the client's error on stderr.
"""

import difflib
import glob
import hashlib
import os
import platform
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lipsync_harness import (  # noqa: E402
    CITY_SCHEMA, EXIT_DATABASE, EXIT_SCHEMA, SANITIZER_RE,
    FAULT_SERVER, PgDatabase, SqliteDatabase, SyncTestCase, cities, clean_env,
    client_args, integrity_check, new_pg_name,
    parse_summary, pg_env, psql, quote_ident, quote_literal,
    run_client, stop_process)


# How long the fault build's server sleeps at the chosen point
# (LIPSYNC_FAULT_STALL): long enough to stop PostgreSQL in the meantime.
STALL_MS = 3000


def file_hash(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def wait_for_log(test, server, pattern, timeout=10):
    """Waits until the server's log matches |pattern|: a session is logged
    once it has ended on the server (its database closed), which may be
    after the client exits."""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, server.stderr()):
        if time.monotonic() > deadline:
            test.fail(f"log does not match {pattern!r}:\n{server.stderr()}")
        time.sleep(0.02)


def wait_for_sessions(test, server, count, timeout=10):
    """Waits until the server has logged the end of |count| sessions."""
    deadline = time.monotonic() + timeout
    while len(re.findall(r"(?m)^\S+Z lipsync-server: 127\.0\.0\.1:\d+ \[",
                         server.stderr())) < count:
        if time.monotonic() > deadline:
            test.fail(f"the server did not log {count} sessions:\n"
                      f"{server.stderr()}")
        time.sleep(0.02)


def pg_dump_lines(db):
    """pg_dump's output (schema and rows of every table) as lines, for a
    readable difference when a database changed. Without the positions of
    sequences: nextval() is never rolled back, so a failed session may
    move them (the clock of the change capture, for one)."""
    r = subprocess.run(
        ["pg_dump", "--no-owner", "--no-privileges", "--lock-wait-timeout",
         "30s", "-d", db.conninfo],
        capture_output=True, env=pg_env(), timeout=120)
    if r.returncode != 0:
        raise AssertionError(
            f"pg_dump failed: {r.stderr.decode(errors='replace')}")
    # pg_dump's \restrict and \unrestrict lines carry a random key.
    return [line for line in r.stdout.decode("utf-8", "replace").split("\n")
            if not re.match(r"\\(un)?restrict |SELECT pg_catalog\.setval\(",
                            line)]


# ---- a PostgreSQL cluster of our own -------------------------------------


def pg_bindir():
    """The directory of the newest PostgreSQL server programs (Debian keeps
    them off PATH), or None."""
    def version(d):
        m = re.search(r"/(\d+)(?:\.(\d+))?/bin$", d)
        return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version,
                    reverse=True):
        if all(os.access(os.path.join(d, p), os.X_OK)
               for p in ("initdb", "pg_ctl")):
            return d
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


class PgCluster:
    """A throwaway PostgreSQL cluster for tests that stop and start it:
    initdb into a temporary directory (as root, as the system user
    postgres, which must own the cluster), fsync off, listening only on a
    Unix socket in that directory. destroy() stops it and removes it."""

    def __init__(self):
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise AssertionError(
                "no PostgreSQL server programs (initdb, pg_ctl) found under "
                "/usr/lib/postgresql/*/bin or on PATH: install the package "
                "postgresql (sh tools/deps.sh)")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise AssertionError(
                    "running as root, but there is no system user postgres "
                    "to own the test's PostgreSQL cluster") from None
        # A Unix socket path may not exceed 107 bytes: keep it short.
        base = os.environ.get("TMPDIR", "/tmp")
        if len(base) > 60 or not os.path.isdir(base):
            base = "/tmp"
        self.dir = tempfile.mkdtemp(prefix="lipsync-envpg.", dir=base)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.running = False

    def owner_run(self, *args, timeout=120):
        """Runs a server program as the cluster's owner."""
        cmd = [os.path.join(self.bindir, args[0]), *args[1:]]
        if self.as_root and shutil.which("runuser"):
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        elif self.as_root:
            cmd = ["su", "postgres", "-s", "/bin/sh", "-c", '"$0" "$@"',
                   "--", *cmd]
        return subprocess.run(cmd, cwd=self.dir, capture_output=True,
                              text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def _fail(self, what, r):
        log = ""
        if os.path.exists(self.log):
            with open(self.log, errors="replace") as f:
                log = f.read()[-4000:]
        raise AssertionError(f"{what} failed ({r.returncode}): "
                             f"{r.stdout}{r.stderr}\nserver log:\n{log}")

    def create(self):
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
            os.chmod(self.dir, 0o755)
        r = self.owner_run("initdb", "-D", self.data, "-A", "trust", "-U",
                           "postgres", "--no-sync", "-E", "UTF8",
                           "--locale=C")
        if r.returncode != 0:
            self._fail("initdb", r)
        # Only a Unix socket: the port just names the socket file. Take one
        # no TCP listener uses, to keep clear of anything keyed on it.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"""
# test_env_faults.py: a throwaway cluster, stopped and started by the tests
listen_addresses = ''
unix_socket_directories = '{self.dir}'
port = {self.port}
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
max_connections = 50
log_min_messages = warning
log_line_prefix = '%m [%p] '
""")
        self.conninfo = (f"host={self.dir} port={self.port} "
                         "dbname=postgres user=postgres")
        self.start()

    def start(self):
        r = self.owner_run("pg_ctl", "-D", self.data, "-l", self.log, "-w",
                           "-t", "60", "start")
        self.running = True
        if r.returncode != 0:
            self._fail("pg_ctl start", r)
        isready = os.path.join(self.bindir, "pg_isready")
        if not os.access(isready, os.X_OK):
            isready = "pg_isready"
        deadline = time.monotonic() + 30
        while subprocess.run([isready, "-q", "-d", self.conninfo],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError("the test's PostgreSQL cluster accepts "
                                     "no connection after pg_ctl start")
            time.sleep(0.05)

    def stop(self, mode="fast"):
        r = self.owner_run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t",
                           "60", "stop")
        if r.returncode != 0:
            self._fail(f"pg_ctl stop -m {mode}", r)
        self.running = False

    def ensure_running(self):
        if not self.running:
            self.start()

    def destroy(self):
        if os.path.isdir(self.data):
            self.owner_run("pg_ctl", "-D", self.data, "-m", "immediate",
                           "-w", "stop")
        self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)


# Syscalls a thread sleeping in nanosleep() is in, by machine.
NANOSLEEP_SYSCALLS = {"x86_64": {"35", "230"}, "aarch64": {"101", "115"}}


def sleeping_in_nanosleep(pid):
    """Whether a thread of process |pid| sleeps in nanosleep(): the fault
    build's stall (the server sleeps nowhere else while serving a
    PostgreSQL database)."""
    calls = NANOSLEEP_SYSCALLS.get(platform.machine(), set())
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            with open(f"{task}/wchan") as f:
                if "nanosleep" in f.read():
                    return True
            with open(f"{task}/syscall") as f:
                if f.read().split(" ", 1)[0] in calls:
                    return True
        except OSError:
            pass
    return False


# ---- size-limited and read-only filesystems ------------------------------


class Tmpfs:
    """A tmpfs mounted for one test at |path|, unmounted in its cleanup
    (also when the test fails). Skips the test when it cannot be mounted."""

    def __init__(self, test, path, size):
        if os.geteuid() != 0:
            test.skipTest(f"mounting a tmpfs needs root; running as uid "
                          f"{os.geteuid()}")
        if shutil.which("mount") is None or shutil.which("umount") is None:
            test.skipTest("no mount and umount commands to mount a tmpfs")
        self.path = Path(path)
        self.path.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
             "lipsync-test", str(self.path)],
            capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            test.skipTest(f"cannot mount a tmpfs at {self.path} (needs root "
                          "and permission to mount, e.g. CAP_SYS_ADMIN in a "
                          f"container): {r.stderr.strip()}")
        test.addCleanup(self.unmount)

    def remount(self, options):
        r = subprocess.run(["mount", "-o", f"remount,{options}",
                            str(self.path)],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise AssertionError(f"mount -o remount,{options} {self.path} "
                                 f"failed: {r.stderr.strip()}")

    def used(self):
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def unmount(self):
        r = subprocess.run(["umount", str(self.path)], capture_output=True,
                           text=True, timeout=30)
        if r.returncode != 0:
            # Busy (a process of a failed test still holds a file): detach
            # it now, the kernel frees it when the last file closes.
            subprocess.run(["umount", "-l", str(self.path)],
                           capture_output=True, timeout=30)


# ---- the tests ----------------------------------------------------------


class EnvFaultTestCase(SyncTestCase):
    """Helpers: the state of a database that a failed sync must leave as it
    was, and the client's error."""

    def setUp(self):
        super().setUp()
        self.cities = cities()

    def first_sync(self, client, server_db):
        """Gives each side 100 places of its own and syncs them once, so
        that capture is installed; returns the server, still running."""
        client.create_table("cities", rows=self.cities[:100])
        server_db.create_table("cities", rows=self.cities[100:200])
        server = self.start_server(server_db)
        self.sync(client, server)
        wait_for_sessions(self, server, 1)
        return server

    def sqlite_state(self, db, table="cities"):
        """Everything a failed sync must not change in a SQLite database:
        the table (every column, _lipsync_uuid included, each value with its
        type, in UUID order; None when the table is gone), the integrity
        check, and a digest of the whole dump (bookkeeping tables too)."""
        names = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {"rows": db.rows(table) if table in names else None,
                "integrity": integrity_check(db.path),
                "dump": db.snapshot()}

    def pg_state(self, db, table="cities"):
        """The same for a PostgreSQL database: the table's rows (None when
        it is gone) and pg_dump's output (every table, bookkeeping too;
        sequence positions left out, as no rollback undoes them)."""
        exists = db.sql(f"SELECT to_regclass({quote_literal(table)})")
        return {"rows": db.rows(table) if exists.strip() else None,
                "dump": pg_dump_lines(db)}

    def state(self, db, table="cities"):
        if db.kind == "sqlite":
            return self.sqlite_state(db, table)
        return self.pg_state(db, table)

    def assertUnchanged(self, db, before, what, table="cities", whole=True):
        """|db| is as |before| says: its table (and, if |whole|, every other
        table) unchanged, and intact."""
        after = self.state(db, table)
        if db.kind == "sqlite":
            self.assertEqual(after["integrity"], [("ok",)],
                             f"{what}: integrity check")
        self.assertTrue(after["rows"] == before["rows"],
                        f"{what}: table {table} changed")
        if not whole or after["dump"] == before["dump"]:
            return
        if db.kind == "sqlite":
            self.fail(f"{what}: the database changed (its dump differs)")
        diff = "\n".join(list(difflib.unified_diff(
            before["dump"], after["dump"], "before", "after",
            lineterm=""))[:60])
        self.fail(f"{what}: the database changed:\n{diff}")

    def assertSynced(self, a, b, table="cities"):
        rows_a, rows_b = a.rows(table), b.rows(table)
        self.assertEqual(len(rows_a), len(rows_b))
        self.assertTrue(rows_a == rows_b, f"table {table} differs")
        self.assertNotIn(None, [r[0] for r in rows_a])

    def try_sync(self, client, server, tables=("cities",)):
        """Runs the client against |server|; returns its CompletedProcess,
        whatever its exit status."""
        return run_client(client.path, server.address, tables,
                          self.secret_file)

    def assertClientError(self, r, status):
        """The client failed with |status|, printing nothing on stdout and
        one line of error; returns that line."""
        self.assertNotRegex(r.stderr, SANITIZER_RE)
        self.assertEqual(r.returncode, status,
                         f"client exit {r.returncode}, expected {status}\n"
                         f"stderr: {r.stderr}")
        self.assertEqual(r.stdout, "")
        self.assertRegex(r.stderr, r"^lipsync-client: .+\n$")
        if os.environ.get("LIPSYNC_SHOW_ERRORS"):
            print(f"\n{self.id()}: exit {r.returncode}: {r.stderr!r}",
                  file=sys.stderr)
        return r.stderr


class PostgresRestartTest(EnvFaultTestCase):
    """The PostgreSQL server behind a lipsync-server restarts (pg_ctl stop
    -m fast, then start) in the middle of a sync with a SQLite client: the
    client fails (exit status 6, EXIT_DATABASE) with a message saying the
    server's database failed; neither database keeps any part of the sync
    (the client's table, integrity and whole dump; once PostgreSQL is back,
    its table and whole dump but for sequence positions); the
    lipsync-server process survives the outage, and the next sync through
    it converges.

    The moment is chosen with the fault build's LIPSYNC_FAULT_STALL: the
    server sleeps at a point of the sync, the test sees it asleep and stops
    PostgreSQL before it wakes up. The cluster is this class's own (the
    shared test server must stay up for the other tests)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cluster = PgCluster()
        cls.addClassCleanup(cls.cluster.destroy)
        cls.cluster.create()

    def setUp(self):
        super().setUp()
        if not os.access(FAULT_SERVER, os.X_OK):
            self.fail(f"{FAULT_SERVER} is missing: build the fault-injection "
                      "binaries (make build/fault/bin/lipsync-server "
                      "build/fault/bin/lipsync-client) or set "
                      "LIPSYNC_FAULT_BIN")
        # A test that failed half-way may have left it stopped.
        self.cluster.ensure_running()

    def new_cluster_database(self, label):
        db = PgDatabase(new_pg_name(label), admin=self.cluster.conninfo)

        def drop():
            self.cluster.ensure_running()
            db.drop()
        self.addCleanup(drop)
        return db

    def stop_postgres_during(self, point, hit=1):
        """Syncs once, changes rows on both sides, then syncs through the
        fault build's server, stopping PostgreSQL while that server sleeps
        the |hit|-th time it passes |point|. Returns the client's error."""
        pg = self.new_cluster_database("restart")
        client = SqliteDatabase(self.path("client.db"))
        pg.create_table("cities", rows=self.cities[:1000])
        client.create_table("cities", rows=self.cities[1000:2000])
        server = self.start_server(pg)
        self.sync(client, server)
        self.assertEqual(server.stop(), 0)
        pg.insert("cities", CITY_SCHEMA, self.cities[2000:2500])
        pg.run_sql("UPDATE cities SET population = population + 1 "
                   "WHERE city_id IN (SELECT city_id FROM cities "
                   "ORDER BY city_id LIMIT 20)")
        client.insert("cities", CITY_SCHEMA, self.cities[2500:3500])
        client.run_sql(f"DELETE FROM cities WHERE city_id = "
                       f"{self.cities[1500][0]}")
        client_before, pg_before = self.state(client), self.state(pg)

        env = clean_env(LIPSYNC_FAULT_STALL=f"{point}:{hit}:{STALL_MS}")
        server = self.start_server(pg, env=env, binary=FAULT_SERVER)
        proc = subprocess.Popen(
            client_args(client.path, server.address, ["cities"],
                        self.secret_file),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=clean_env())
        self.addCleanup(stop_process, proc)
        deadline = time.monotonic() + 60
        while not sleeping_in_nanosleep(server.proc.pid):
            if proc.poll() is not None or time.monotonic() > deadline:
                out, err = proc.communicate()
                self.fail(f"the server never stalled at {point}:{hit} "
                          f"(client exit {proc.returncode}: {out}{err})\n"
                          f"server log: {server.stderr()}")
            time.sleep(0.005)
        self.cluster.stop("fast")
        # PostgreSQL went down while the server slept at the point.
        self.assertTrue(sleeping_in_nanosleep(server.proc.pid),
                        f"pg_ctl stop outlasted the {STALL_MS} ms stall")
        out, err = proc.communicate(timeout=120)
        message = self.assertClientError(
            subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
            EXIT_DATABASE)
        self.assertUnchanged(client, client_before, "client database")
        # The server logs the session's end, and survives the outage.
        wait_for_log(self, server, r"127\.0\.0\.1:\d+ \[cities\] ")
        self.assertTrue(server.alive(), server.stderr())
        self.cluster.start()
        self.assertUnchanged(pg, pg_before, "PostgreSQL database")
        # The next sync, through the same server, converges.
        r = self.sync(client, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (1001, 520)})
        self.assertSynced(client, pg)
        self.assertEqual(pg.count("cities"), 3499)
        # The error says that the server's database failed.
        self.assertRegex(message, r"(?i)\b(server|peer)\b")
        self.assertRegex(message, r"(?i)\b(database|postgres(ql)?)\b",
                         "the error does not say the server's database "
                         "failed")
        return message

    def test_postgres_stops_while_rows_are_written(self):
        """PostgreSQL stops while the server writes the client's rows: the
        server sleeps at its first row write (point "write")."""
        self.stop_postgres_during("write")

    def test_postgres_stops_before_commit(self):
        """PostgreSQL stops after both Verify frames agreed, just before
        the server commits (point "commit"): the commit fails, and the
        client, told so, does not commit either."""
        self.stop_postgres_during("commit")


    def test_idle_connections_are_kept_and_outlive_a_restart(self):
        """The server keeps the PostgreSQL connection of a finished
        session for the next one (--idle-connections): syncs in a row use
        one PostgreSQL backend. PostgreSQL restarts while it is kept: the
        next session makes it again and syncs. A connection kept unused
        for --idle-timeout is closed; with --idle-connections 0 none is
        kept."""
        pg = self.new_cluster_database("idle")
        client = SqliteDatabase(self.path("client.db"))
        pg.create_table("cities", rows=self.cities[:200])
        client.create_table("cities", rows=self.cities[200:400])

        def backends():
            return pg.sql("SELECT pid FROM pg_stat_activity WHERE"
                          " application_name = 'lipsync' AND datname ="
                          " current_database() ORDER BY pid").split()

        def wait_for_backends(count, within):
            deadline = time.monotonic() + within
            while len(backends()) != count:
                if time.monotonic() > deadline:
                    self.fail(f"{len(backends())} connections of the"
                              f" server, not {count}, after {within} s")
                time.sleep(0.1)

        server = self.start_server(pg, extra=("--idle-connections", "2",
                                              "--idle-timeout", "4"))
        self.sync(client, server)
        wait_for_sessions(self, server, 1)
        kept = backends()
        self.assertEqual(len(kept), 1)
        for n in (2, 3):
            client.run_sql(f"UPDATE cities SET population = {n}"
                           f" WHERE city_id = {self.cities[200][0]}")
            self.sync(client, server)
            wait_for_sessions(self, server, n)
            self.assertEqual(backends(), kept, "the connection was not kept")
        self.cluster.stop("fast")
        self.cluster.start()
        self.assertEqual(backends(), [])
        client.run_sql(f"UPDATE cities SET population = 4"
                       f" WHERE city_id = {self.cities[200][0]}")
        r = self.sync(client, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (1, 0)})
        self.assertSynced(client, pg)
        wait_for_sessions(self, server, 4)
        self.assertEqual(len(backends()), 1)
        self.assertNotEqual(backends(), kept)
        started = time.monotonic()
        wait_for_backends(0, 15)
        self.assertGreater(time.monotonic() - started, 1.0,
                           "the connection was closed at once")
        self.assertEqual(server.stop(), 0)

        server = self.start_server(pg, extra=("--idle-connections", "0"))
        self.sync(client, server)
        wait_for_sessions(self, server, 1)
        wait_for_backends(0, 5)
        self.assertTrue(server.alive())


class DiskFullTest(EnvFaultTestCase):
    """A SQLite database on a small filesystem (a size-limited tmpfs) that
    fills up while the rows a side received are written: the sync fails
    (exit status 6, EXIT_DATABASE) with an error saying the database or
    disk is full; the database file is byte for byte unchanged, intact, its
    table unchanged, and no file is left next to it; the other side's table
    is unchanged too; the server keeps running, and once the filesystem is
    larger the same sync through it succeeds."""

    ROWS = 5000  # rows to receive: far more than the free space holds
    MARGIN = 128 * 1024  # free space left: the -shm file and a little WAL

    def fill_up(self, small_side):
        """|small_side| ("client" or "server") has its database on a tmpfs;
        after a first sync the other side gets ROWS new rows and the tmpfs
        shrinks to what is used plus MARGIN. Returns the client's error."""
        fs = Tmpfs(self, self.path("small"), "8m")
        dbs = {side: SqliteDatabase(
            (fs.path if side == small_side else self.dir) / f"{side}.db")
            for side in ("client", "server")}
        client, server_db = dbs["client"], dbs["server"]
        server = self.first_sync(client, server_db)
        big_side = "server" if small_side == "client" else "client"
        dbs[big_side].insert("cities", CITY_SCHEMA,
                             self.cities[200:200 + self.ROWS])
        small = dbs[small_side]
        fs.remount(f"size={fs.used() + self.MARGIN}")
        before = {side: self.state(db) for side, db in dbs.items()}
        small_hash = file_hash(small.path)

        r = self.try_sync(client, server)
        message = self.assertClientError(r, EXIT_DATABASE)
        self.assertRegex(message, r"(?i)(disk|database)\b.*\bfull\b")
        wait_for_sessions(self, server, 2)
        self.assertTrue(server.alive(), server.stderr())
        self.assertEqual(file_hash(small.path), small_hash,
                         f"the {small_side}'s database file changed")
        self.assertUnchanged(small, before[small_side],
                             f"{small_side} database")
        self.assertEqual(sorted(os.listdir(fs.path)), [small.path.name],
                         "files left next to the database")
        # When the client's disk is full, the server has committed first
        # (spec LS-COMMIT-2, LS-COMMIT-6): it received no row, so its table
        # is unchanged, but its bookkeeping of the session may be recorded.
        self.assertUnchanged(dbs[big_side], before[big_side],
                             f"{big_side} database",
                             whole=small_side == "server")

        # Room again: the same sync succeeds, through the same server.
        fs.remount("size=64m")
        r = self.sync(client, server)
        expected = (0, self.ROWS) if small_side == "client" else \
            (self.ROWS, 0)
        self.assertEqual(parse_summary(r.stdout), {"cities": expected})
        self.assertSynced(client, server_db)
        self.assertEqual(integrity_check(small.path), [("ok",)])
        return message

    def test_client_database_fills_up(self):
        """The client's filesystem fills up as it writes the server's
        rows."""
        self.fill_up("client")

    def test_server_database_fills_up(self):
        """The server's filesystem fills up as it writes the client's rows:
        the server reports it to the client and keeps running."""
        self.fill_up("server")


class ReadOnlyTest(EnvFaultTestCase):
    """A database that became read-only between two syncs, each side with
    rows to receive: the sync fails (exit status 6, EXIT_DATABASE) with an
    error saying the database is read-only; the read-only database file is
    byte for byte unchanged, and both databases are unchanged and intact;
    the server keeps serving, and once the database is writable again the
    same sync succeeds.

    SQLite: as root, who writes through chmod, the database lives on a tmpfs
    remounted read-only; otherwise the file is made mode 0444. PostgreSQL
    (the shared test server): ALTER DATABASE ... SET
    default_transaction_read_only."""

    def read_only_place(self):
        """The directory for the database that make_read_only() and
        make_writable() switch."""
        if os.geteuid() == 0:
            self.fs = Tmpfs(self, self.path("ro"), "16m")
            return self.fs.path
        self.fs = None
        place = self.path("ro")
        place.mkdir()
        return place

    def make_read_only(self, db):
        if self.fs is not None:
            self.fs.remount("ro")
        else:
            os.chmod(db.path, 0o444)

    def make_writable(self, db):
        if self.fs is not None:
            self.fs.remount("rw")
            return
        # A connection that opened the database read-only leaves its -wal
        # and -shm files behind, with the database file's mode.
        for path in [db.path] + glob.glob(f"{db.path}-*"):
            os.chmod(path, 0o644)

    def sqlite_read_only(self, side):
        place = self.read_only_place()
        dbs = {s: SqliteDatabase((place if s == side else self.dir)
                                 / f"{s}.db")
               for s in ("client", "server")}
        client, server_db = dbs["client"], dbs["server"]
        server = self.first_sync(client, server_db)
        client.insert("cities", CITY_SCHEMA, self.cities[200:300])
        server_db.insert("cities", CITY_SCHEMA, self.cities[300:400])
        ro = dbs[side]
        before = {s: self.state(db) for s, db in dbs.items()}
        ro_hash = file_hash(ro.path)
        self.make_read_only(ro)
        r = self.try_sync(client, server)
        message = self.assertClientError(r, EXIT_DATABASE)
        if side == "server":
            wait_for_sessions(self, server, 2)
        self.assertTrue(server.alive(), server.stderr())
        self.assertEqual(file_hash(ro.path), ro_hash,
                         f"the {side}'s database file changed")
        self.make_writable(ro)
        for s, db in dbs.items():
            self.assertUnchanged(db, before[s], f"{s} database")
        r = self.sync(client, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (100, 100)})
        self.assertSynced(client, server_db)
        self.assertRegex(message, r"(?i)read-?only",
                         "the error does not say the database is read-only")
        return message

    def test_client_database_read_only(self):
        """The client's SQLite database is read-only."""
        self.sqlite_read_only("client")

    def test_server_database_read_only(self):
        """The server's SQLite database is read-only: the client is told,
        the server keeps serving."""
        self.sqlite_read_only("server")

    def test_postgres_server_database_read_only(self):
        """The server's PostgreSQL database refuses writes."""
        client = SqliteDatabase(self.path("client.db"))
        pg = PgDatabase(new_pg_name("readonly"))
        self.addCleanup(pg.drop)
        client.create_table("cities", rows=self.cities[:100])
        pg.create_table("cities", rows=self.cities[100:200])
        server = self.start_server(pg)
        self.sync(client, server)
        client.insert("cities", CITY_SCHEMA, self.cities[200:300])
        pg.insert("cities", CITY_SCHEMA, self.cities[300:400])
        before = {"client": self.state(client), "server": self.state(pg)}
        pg.sql(f"ALTER DATABASE {quote_ident(pg.name)} "
               "SET default_transaction_read_only = on")
        # The setting reaches new connections only, as for any client
        # that keeps one: the server's kept connection is ended, and made
        # again for the next session.
        psql(pg.admin, "SELECT pg_catalog.pg_terminate_backend(pid) FROM"
             " pg_catalog.pg_stat_activity WHERE application_name ="
             f" 'lipsync' AND datname = '{pg.name}'")
        r = self.try_sync(client, server)
        message = self.assertClientError(r, EXIT_DATABASE)
        self.assertTrue(server.alive(), server.stderr())
        self.assertUnchanged(client, before["client"], "client database")
        # From another database: every session of this one is read-only.
        psql(pg.admin, f"ALTER DATABASE {quote_ident(pg.name)} "
             "RESET default_transaction_read_only")
        self.assertUnchanged(pg, before["server"], "server database")
        r = self.sync(client, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (100, 100)})
        self.assertSynced(client, pg)
        self.assertRegex(message, r"(?i)read-?only")


class SchemaChangeTests:
    """A synced table dropped, or given a new column, on one side only
    before the next sync, with rows to carry each way: the sync fails (exit
    status 4, EXIT_SCHEMA) with an error naming the table (and the column),
    neither database changes, the server keeps serving."""

    def setUp(self):
        super().setUp()
        self.client = SqliteDatabase(self.path("client.db"))
        self.server_db = self.new_database(self.server_backend, "server")
        self.client.create_table("cities", rows=self.cities[:100])
        self.server_db.create_table("cities", rows=self.cities[100:200])
        self.server = self.start_server(self.server_db)
        self.sync(self.client, self.server)
        self.client.insert("cities", CITY_SCHEMA, self.cities[200:250])
        self.server_db.insert("cities", CITY_SCHEMA, self.cities[250:300])

    def expect_failure(self, status=EXIT_SCHEMA):
        before = {"client": self.state(self.client),
                  "server": self.state(self.server_db)}
        r = self.try_sync(self.client, self.server)
        message = self.assertClientError(r, status)
        self.assertTrue(self.server.alive(), self.server.stderr())
        self.assertUnchanged(self.client, before["client"], "client database")
        self.assertUnchanged(self.server_db, before["server"],
                             "server database")
        return message

    def test_table_dropped_on_client(self):
        """The client's table is gone: its error names the table."""
        self.client.run_sql("DROP TABLE cities")
        message = self.expect_failure()
        self.assertRegex(message, r"\bcities\b")

    def test_table_dropped_on_server(self):
        """The server's table is gone (it still offers it): the server
        tells the client, naming the table."""
        self.server_db.run_sql("DROP TABLE cities")
        message = self.expect_failure()
        self.assertRegex(message, r"\bcities\b")
        self.assertRegex(message, r"(?i)\b(server|peer)\b")

    def test_column_added_on_client(self):
        """The client's table has a column the server's lacks: the error
        names the table and the column."""
        self.client.run_sql("ALTER TABLE cities ADD COLUMN note TEXT")
        message = self.expect_failure()
        self.assertRegex(message, r"\bcities\b.*\bnote\b")

    def test_column_added_on_server(self):
        """The server's table has a column the client's lacks: the error
        names the table and the column."""
        self.server_db.run_sql("ALTER TABLE cities ADD COLUMN note TEXT")
        message = self.expect_failure()
        self.assertRegex(message, r"\bcities\b.*\bnote\b")


def _schema_class(name, server_backend):
    doc = (f"{SchemaChangeTests.__doc__.strip()} SQLite client, server on "
           f"{'PostgreSQL' if server_backend == 'pg' else 'SQLite'}.")
    return type(name, (SchemaChangeTests, EnvFaultTestCase),
                {"server_backend": server_backend, "__doc__": doc,
                 "__module__": __name__})


SchemaChangeTest_sqlite = _schema_class("SchemaChangeTest_sqlite", "sqlite")
SchemaChangeTest_pg = _schema_class("SchemaChangeTest_pg", "pg")


if __name__ == "__main__":
    unittest.main()

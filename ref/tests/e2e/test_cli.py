#!/usr/bin/env python3
"""End-to-end tests of lipsync-server and lipsync-client.

Run from the repository root, with a throwaway PostgreSQL server:

    sh tools/pgtest.sh python3 ref/tests/e2e/test_cli.py -v

The data tests run on every pair of backends (SyncTest_sqlite_pg: SQLite
client, PostgreSQL server); those with a PostgreSQL side fail without
$LIPSYNC_PG_CONNINFO, which tools/pgtest.sh sets. The binaries come from
$LIPSYNC_BIN (default build/bin), the cities data from $LIPSYNC_CITIES
(default ../shared/data/cities.csv).
"""

import contextlib
import os
import random
import re
import select
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lipsync_harness import (  # noqa: E402
    CITY_NAMES, CITY_SCHEMA, CLIENT, EXIT_AUTH, EXIT_BUSY, EXIT_DATABASE,
    EXIT_CONFLICT,
    EXIT_INTERNAL, EXIT_PEER, EXIT_SCHEMA, EXIT_USAGE, SANITIZER_RE, SERVER,
    PairTestBase,
    UUID_COLUMN, SyncTestCase, add_cities, cities, clean_env, client_args,
    connect, create_cities_table, dump, parse_summary, quote_literal,
    row_keys, stop_process, write_secret)


class CommandLineTest(SyncTestCase):
    """Options, help, version and usage errors."""

    def run_bin(self, binary, *args, env=None):
        return subprocess.run([str(binary), *args], capture_output=True,
                              text=True, timeout=10,
                              env=env if env is not None else clean_env())

    def test_help(self):
        for binary in (SERVER, CLIENT):
            r = self.run_bin(binary, "--help")
            self.assertEqual(r.returncode, 0)
            self.assertIn("Usage:", r.stdout)
            self.assertIn("Exit status:", r.stdout)
            for code in range(8):
                self.assertRegex(r.stdout, rf"(?m)^  {code}  ")
            self.assertEqual(r.stderr, "")

    def test_version(self):
        for binary in (SERVER, CLIENT):
            r = self.run_bin(binary, "--version")
            self.assertEqual(r.returncode, 0)
            self.assertEqual(r.stdout, f"{binary.name} 0.1.0 (protocol 1)\n")

    def test_server_needs_tables(self):
        db = self.path("s.db")
        create_cities_table(db)
        r = self.run_bin(SERVER, "--db", str(db), "--listen", "127.0.0.1:0",
                         "--secret-file", str(self.secret_file))
        self.assertEqual(r.returncode, EXIT_USAGE)
        self.assertIn("Usage:", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_usage_errors(self):
        db = str(self.path("c.db"))
        secret = str(self.secret_file)
        cases = [
            (SERVER, ["--bogus"]),
            (SERVER, ["--db", db, "--secret-file", secret, "--all-tables"]),
            (SERVER, ["--db", db, "--listen", "127.0.0.1:0", "--secret-file",
                      secret, "--table", "t", "--all-tables"]),
            (SERVER, ["--db", db, "--listen", "127.0.0.1", "--secret-file",
                      secret, "--all-tables"]),
            (SERVER, ["--db", db, "--listen", "127.0.0.1:0", "--secret-file",
                      secret, "--all-tables", "--max-clients", "0"]),
            (SERVER, ["--db", db, "--listen", "127.0.0.1:0", "--secret-file",
                      secret, "--all-tables", "--idle-connections", "-1"]),
            (SERVER, ["--db", db, "--listen", "127.0.0.1:0", "--secret-file",
                      secret, "--all-tables", "--idle-timeout", "0"]),
            (CLIENT, ["--db", db, "--connect", "127.0.0.1:1",
                      "--secret-file", secret]),
            (CLIENT, ["--db", db, "--connect", "127.0.0.1:0",
                      "--secret-file", secret, "--table", "t"]),
            (CLIENT, ["--db", db, "--connect", "::1:5", "--secret-file",
                      secret, "--table", "t"]),
            (CLIENT, ["--db", db, "--connect", "127.0.0.1:9", "--secret-file",
                      secret, "--table", "t", "--timeout", "soon"]),
            (CLIENT, ["--db", db, "--connect", "127.0.0.1:9", "--secret-file",
                      secret, "--table", "t", "--table", "t"]),
            (CLIENT, ["--connect", "127.0.0.1:9", "--secret-file", secret,
                      "--table", "t", "extra"]),
            (CLIENT, ["--db", db, "--connect", "127.0.0.1:9", "--secret-file",
                      secret, "--table", "t", "--policy", "newest"]),
            (CLIENT, ["--db", db, "--init"]),
            (SERVER, ["--db", db, "--listen", "127.0.0.1:0", "--secret-file",
                      secret, "--all-tables", "--tombstone-retention",
                      "5 weeks"]),
            (SERVER, ["--db", db, "--listen", "127.0.0.1:0", "--secret-file",
                      secret, "--all-tables", "--tombstone-retention", "-1"]),
            (SERVER, ["--db", db, "--init"]),
            (SERVER, ["--db", db, "--drop-capture"]),
            (SERVER, ["--db", db, "--init", "--drop-capture",
                      "--all-tables"]),
            (CLIENT, ["--db", db, "--drop-capture"]),
            (CLIENT, ["--db", db, "--init", "--drop-capture", "--table",
                      "t"]),
            (CLIENT, ["--db", db, "--drop-capture", "--table", "t",
                      "--all-tables"]),
            (CLIENT, ["--db", db, "--connect", "127.0.0.1:9", "--secret-file",
                      secret, "--all-tables"]),
        ]
        for binary, args in cases:
            with self.subTest(binary=binary.name, args=args):
                r = self.run_bin(binary, *args)
                self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
                self.assertIn("Usage:", r.stderr)

    def test_secret_problems(self):
        db = self.path("c.db")
        create_cities_table(db)
        empty = write_secret(self.path("empty"), "", newline="\n")
        base = ["--db", str(db), "--connect", "127.0.0.1:9", "--table",
                "cities"]
        # No secret at all, an empty file, a missing file, an empty variable.
        for extra, env in [([], None),
                           (["--secret-file", str(empty)], None),
                           (["--secret-file", str(self.path("none"))], None),
                           ([], clean_env(LIPSYNC_SECRET=""))]:
            with self.subTest(extra=extra, env=env is not None):
                r = self.run_bin(CLIENT, *base, *extra, env=env)
                self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
                self.assertIn("secret", r.stderr)

    def test_server_startup_failures(self):
        db = self.path("s.db")
        create_cities_table(db)
        base = ["--secret-file", str(self.secret_file), "--all-tables"]
        r = self.run_bin(SERVER, "--db", str(self.path("none.db")),
                         "--listen", "127.0.0.1:0", *base)
        self.assertEqual(r.returncode, EXIT_DATABASE, r.stderr)
        self.assertFalse(self.path("none.db").exists())
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            r = self.run_bin(SERVER, "--db", str(db), "--listen",
                             f"127.0.0.1:{port}", *base)
        self.assertEqual(r.returncode, EXIT_INTERNAL, r.stderr)
        self.assertIn("cannot listen", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_group_readable_secret_warns(self):
        loose = write_secret(self.path("loose"), self.secret, mode=0o644)
        client_db, server_db = self.path("c.db"), self.path("s.db")
        create_cities_table(client_db)
        create_cities_table(server_db)
        server = self.start_server(server_db, secret_file=loose)
        r = self.sync(client_db, server, secret_file=loose)
        self.assertIn("readable by other users", r.stderr)
        self.assertIn("readable by other users", server.stderr())


class SyncTest(SyncTestCase):
    """Syncs that succeed, between two SQLite databases: dynamic typing,
    secrets, --quiet. The data tests of every pair of backends are in
    SyncPairTests."""

    def setUp(self):
        super().setUp()
        self.cities = cities()
        self.client_db = self.path("client.db")
        self.server_db = self.path("server.db")

    def test_all_tables_and_awkward_values(self):
        # SQLite is dynamically typed: every value must arrive with its own
        # type and bytes, whatever the declared column type.
        values = [
            (1, None, b"\x00\x01\xff", "plain"),
            (2, 9223372036854775807, b"", "tab\there"),
            (3, -9223372036854775808, None, "nul\x00inside"),
            (4, 0.1, "text in a blob column", "日本語"),
            (5, 1e308, 42, ""),
            (6, "007", -1.5, "0042"),
            (7, float("inf"), b"x" * 100000, "emoji \U0001F600"),
        ]
        for db, rows in ((self.client_db, values[:4]),
                         (self.server_db, values[4:])):
            conn = connect(db)
            conn.execute("CREATE TABLE misc (id INTEGER, anything, "
                         "data BLOB, label VARCHAR(20))")
            conn.executemany("INSERT INTO misc VALUES (?, ?, ?, ?)", rows)
            conn.close()
        server = self.start_server(self.server_db, tables=(),
                                   all_tables=True)
        self.sync(self.client_db, server, tables=("misc",))
        self.assertSynced(self.client_db, self.server_db, "misc")
        conn = connect(self.client_db)
        got = conn.execute("SELECT id, anything, data, label FROM misc "
                           "ORDER BY id").fetchall()
        conn.close()
        self.assertEqual(got, values)

    def test_secret_from_environment(self):
        create_cities_table(self.client_db, rows=self.cities[:100])
        create_cities_table(self.server_db, rows=self.cities[100:200])
        env = clean_env(LIPSYNC_SECRET=self.secret)
        server = self.start_server(self.server_db, secret_file=None, env=env)
        self.sync(self.client_db, server, secret_file=None, env=env)
        self.assertSynced(self.client_db, self.server_db)
        # The server wiped the variable: other processes of the same user
        # cannot read the secret from its environment.
        environ = f"/proc/{server.proc.pid}/environ"
        if os.path.exists(environ):
            with open(environ, "rb") as f:
                self.assertNotIn(self.secret.encode(), f.read())
        # A secret file ending in CRLF holds the same secret.
        crlf = write_secret(self.path("crlf"), self.secret, newline="\r\n")
        add_cities(self.client_db, self.cities[200:210])
        self.sync(self.client_db, server, secret_file=crlf)
        self.assertCities(self.server_db, self.cities[:210])

    def test_quiet_client_prints_nothing(self):
        create_cities_table(self.client_db, rows=self.cities[:10])
        create_cities_table(self.server_db)
        server = self.start_server(self.server_db, extra=["--quiet"])
        r = self.sync(self.client_db, server, extra=["--quiet"])
        self.assertEqual((r.stdout, r.stderr), ("", ""))
        self.assertEqual(server.stderr(), "")

class FailureTest(SyncTestCase):
    """Syncs that fail, between two SQLite databases: the exit status, and
    neither database changes. More in FailurePairTests."""

    def setUp(self):
        super().setUp()
        self.cities = cities()
        self.client_db = self.path("client.db")
        self.server_db = self.path("server.db")

    def snapshot(self):
        return dump(self.client_db), dump(self.server_db)

    def expect_failure(self, server, status, tables=("cities",), **kwargs):
        before = self.snapshot()
        r = self.sync(self.client_db, server, tables=tables, expect=status,
                      **kwargs)
        self.assertEqual(r.stdout, "")
        self.assertRegex(r.stderr, r"(?m)^lipsync-client: .+")
        self.assertEqual(self.snapshot(), before, "a database changed")
        return r

    def test_wrong_secret(self):
        create_cities_table(self.client_db, rows=self.cities[:100])
        create_cities_table(self.server_db, rows=self.cities[100:200])
        server = self.start_server(self.server_db)
        wrong = write_secret(self.path("wrong"), self.secret + "x")
        self.expect_failure(server, EXIT_AUTH, secret_file=wrong)
        # A client with the right secret is still served.
        self.sync(self.client_db, server)

    def test_table_not_offered(self):
        create_cities_table(self.client_db, "private", rows=self.cities[:10])
        create_cities_table(self.server_db, "private")
        create_cities_table(self.server_db)
        server = self.start_server(self.server_db)
        self.expect_failure(server, EXIT_SCHEMA, tables=("private",))

    def test_table_missing_on_client(self):
        create_cities_table(self.client_db)
        create_cities_table(self.server_db, "other", rows=self.cities[:10])
        server = self.start_server(self.server_db, tables=("other",))
        self.expect_failure(server, EXIT_SCHEMA, tables=("other",))

    def test_missing_database(self):
        create_cities_table(self.server_db)
        server = self.start_server(self.server_db)
        r = self.sync(self.path("nowhere.db"), server, expect=EXIT_DATABASE)
        self.assertFalse(self.path("nowhere.db").exists())
        self.assertIn("nowhere.db", r.stderr)

    def test_connection_refused(self):
        create_cities_table(self.client_db, rows=self.cities[:10])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        before = dump(self.client_db)
        r = subprocess.run(
            client_args(self.client_db, f"127.0.0.1:{port}", ["cities"],
                        self.secret_file),
            capture_output=True, text=True, timeout=30, env=clean_env())
        self.assertEqual(r.returncode, EXIT_PEER, r.stderr)
        self.assertIn("cannot connect", r.stderr)
        self.assertEqual(dump(self.client_db), before)

    def test_silent_server_times_out(self):
        create_cities_table(self.client_db, rows=self.cities[:10])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            start = time.monotonic()
            r = run_client_at(self, f"127.0.0.1:{port}",
                              extra=["--timeout", "0.5"])
            elapsed = time.monotonic() - start
        self.assertEqual(r.returncode, EXIT_PEER, r.stderr)
        self.assertLess(elapsed, 10)

class ServerLifecycleTest(SyncTestCase):
    """Signals, --once, --max-clients and misbehaving clients."""

    def setUp(self):
        super().setUp()
        self.cities = cities()
        self.client_db = self.path("client.db")
        self.server_db = self.path("server.db")
        create_cities_table(self.client_db, rows=self.cities[:50])
        create_cities_table(self.server_db, rows=self.cities[50:100])

    def test_sigterm_when_idle(self):
        server = self.start_server(self.server_db)
        start = time.monotonic()
        self.assertEqual(server.stop(signal.SIGTERM), 0)
        self.assertLess(time.monotonic() - start, 3)

    def test_sigint_when_idle(self):
        server = self.start_server(self.server_db)
        self.assertEqual(server.stop(signal.SIGINT), 0)

    def test_sigterm_ends_sessions_in_progress(self):
        server = self.start_server(self.server_db)
        before = dump(self.server_db)
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            # The session waits for a ClientHello that never comes.
            time.sleep(0.3)
            start = time.monotonic()
            self.assertEqual(server.stop(signal.SIGTERM), 0)
            self.assertLess(time.monotonic() - start, 5)
            # The session ends (an Error frame, then the connection closes).
            s.settimeout(5)
            while s.recv(4096):
                pass
        self.assertIn("shutting down", server.stderr().lower())
        self.assertEqual(dump(self.server_db), before)

    def test_sigterm_during_transfer(self):
        add_cities(self.client_db, self.cities[100:40000])
        before = dump(self.client_db), dump(self.server_db)
        server = self.start_server(self.server_db)
        proc, progress = start_with_terminal(
            client_args(self.client_db, server.address, ["cities"],
                        self.secret_file))
        self.addCleanup(stop_process, proc, signal.SIGKILL)
        wait_for_rows_sent(proc, progress, timeout=60)
        self.assertEqual(server.stop(signal.SIGTERM), 0)
        self.assertEqual(proc.wait(10), EXIT_PEER)
        shown = read_all(progress)
        self.assertIn("shutting down", shown)
        self.assertEqual((dump(self.client_db), dump(self.server_db)), before)

    def test_sigterm_while_waiting_for_database_lock(self):
        # Another program holds the server database's write lock, so the
        # session waits inside the store (up to 30 s), not in its poll loop:
        # shutdown must still end it at once.
        server = self.start_server(self.server_db)
        holder = sqlite3.connect(self.server_db, isolation_level=None)
        self.addCleanup(holder.close)
        holder.execute("BEGIN IMMEDIATE")
        proc = subprocess.Popen(
            client_args(self.client_db, server.address, ["cities"],
                        self.secret_file),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
        self.addCleanup(stop_process, proc, signal.SIGKILL)
        time.sleep(1.0)
        self.assertIsNone(proc.poll(), "the client should be waiting")
        start = time.monotonic()
        self.assertEqual(server.stop(signal.SIGTERM), 0)
        self.assertLess(time.monotonic() - start, 3)
        _, err = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, EXIT_PEER)
        self.assertIn("stopping", err.decode())
        holder.execute("ROLLBACK")

    def test_lock_wait_ends_in_busy_and_changes_nothing(self):
        # Another program keeps the server database's write lock for longer
        # than --timeout: the session that must write gives up with
        # TRY_AGAIN (exit code 8), changing nothing; a session with nothing
        # to write does not wait at all; once the lock is free the same
        # sync succeeds.
        server = self.start_server(self.server_db, extra=["--timeout", "1"])
        self.sync(self.client_db, server)
        holder = sqlite3.connect(self.server_db, isolation_level=None)
        self.addCleanup(holder.close)
        holder.execute("BEGIN IMMEDIATE")
        r = self.sync(self.client_db, server)
        self.assertIn("(incremental)", r.stdout)
        self.assertEqual(parse_summary(r.stdout), {"cities": (0, 0)})
        add_cities(self.client_db, self.cities[100:110])
        before = dump(self.client_db)
        r = self.sync(self.client_db, server, expect=EXIT_BUSY,
                      extra=["--retries", "0"])
        self.assertRegex(r.stderr, r"locked for 0\.5 s; nothing was changed")
        self.assertEqual(dump(self.client_db), before)
        holder.execute("ROLLBACK")
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (10, 0)})

    def test_client_retries_after_a_lock_wait(self):
        # The lock is released while the client pauses between attempts.
        server = self.start_server(self.server_db, extra=["--timeout", "1"])
        holder = sqlite3.connect(self.server_db, isolation_level=None)
        self.addCleanup(holder.close)
        holder.execute("BEGIN IMMEDIATE")
        proc = subprocess.Popen(
            client_args(self.client_db, server.address, ["cities"],
                        self.secret_file, ["--retries", "5"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=clean_env())
        self.addCleanup(stop_process, proc, signal.SIGKILL)
        time.sleep(1.5)
        holder.execute("ROLLBACK")
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn("syncing again (attempt 2 of 6)", err)
        self.assertEqual(parse_summary(out), {"cities": (50, 50)})

    def test_first_open_waits_for_a_writer_like_any_sync(self):
        # A database LipSync never opened keeps its rollback journal, and
        # SQLite refuses the switch to WAL at once while another program
        # writes: the sync must not fail on opening but wait for the lock
        # as any sync does (half of --timeout), give up with TRY_AGAIN
        # having changed nothing, and succeed, in WAL, once the lock is free.
        server = self.start_server(self.server_db)
        holder = sqlite3.connect(self.client_db, isolation_level=None)
        self.addCleanup(holder.close)
        self.assertEqual(
            holder.execute("PRAGMA journal_mode").fetchone()[0], "delete")
        holder.execute("BEGIN IMMEDIATE")
        before = dump(self.client_db)
        r = self.sync(self.client_db, server, expect=EXIT_BUSY,
                      extra=["--timeout", "1", "--retries", "0"])
        self.assertRegex(r.stderr, r"locked for 0\.5 s; nothing was changed")
        holder.execute("ROLLBACK")
        self.assertEqual(dump(self.client_db), before)
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (50, 50)})
        with contextlib.closing(sqlite3.connect(self.client_db)) as db:
            self.assertEqual(
                db.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def test_capture_tools_wait_for_a_lock_at_most_timeout(self):
        # --init and --drop-capture wait for another writer's lock for the
        # whole of --timeout (no peer waits on them), not a fixed minute,
        # then fail with TRY_AGAIN having changed nothing.
        holder = sqlite3.connect(self.client_db, isolation_level=None)
        self.addCleanup(holder.close)
        for program in (CLIENT, SERVER):
            self.assertEqual(capture_tool(program, self.client_db, "--init",
                                          "--table", "cities").returncode, 0)
            holder.execute("BEGIN IMMEDIATE")
            before = dump(self.client_db)
            for action in ("--init", "--drop-capture"):
                start = time.monotonic()
                r = capture_tool(program, self.client_db, action, "--table",
                                 "cities", "--timeout", "1")
                self.assertLess(time.monotonic() - start, 30)
                self.assertEqual(r.returncode, EXIT_BUSY, r.stderr)
                self.assertIn("locked for 1.0 s; nothing was changed",
                              r.stderr)
            holder.execute("ROLLBACK")
            self.assertEqual(dump(self.client_db), before)
            r = capture_tool(program, self.client_db, "--drop-capture",
                             "--table", "cities", "--timeout", "1")
            self.assertEqual((r.returncode, r.stdout),
                             (0, "change capture removed from 1 table\n"))

    def test_once_exits_with_session_status(self):
        server = self.start_server(self.server_db, extra=["--once"])
        self.sync(self.client_db, server)
        self.assertEqual(server.proc.wait(10), 0)
        self.assertSynced(self.client_db, self.server_db)
        server = self.start_server(self.server_db, extra=["--once"])
        wrong = write_secret(self.path("wrong"), "not the secret")
        self.sync(self.client_db, server, secret_file=wrong, expect=EXIT_AUTH)
        self.assertEqual(server.proc.wait(10), EXIT_AUTH)

    def test_survives_garbage(self):
        server = self.start_server(self.server_db)
        # A frame longer than the limit, then a frame that is not protobuf,
        # then a client that connects and leaves at once.
        for junk in (struct.pack(">I", 0xFFFFFFFF),
                     struct.pack(">I", 5) + b"\xff\xff\xff\xff\xff",
                     b""):
            with socket.create_connection(("127.0.0.1", server.port)) as s:
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(10)
                while s.recv(4096):
                    pass
        self.assertTrue(server.alive())
        self.sync(self.client_db, server)
        self.assertSynced(self.client_db, self.server_db)

    def test_max_clients_bounds_authenticated_sessions(self):
        server = self.start_server(self.server_db,
                                   extra=["--max-clients", "1"])
        with socket.create_connection(("127.0.0.1", server.port)):
            # A silent connection has not authenticated: it holds no
            # session permit and no database connection, so the one
            # permit goes to the real client at once.
            time.sleep(0.2)
            start = time.monotonic()
            self.sync(self.client_db, server)
            self.assertLess(time.monotonic() - start, 3)
        self.assertSynced(self.client_db, self.server_db)
        # Two real clients at once with one permit: the second waits for
        # the first to end, and both succeed.
        other = self.path("other.db")
        create_cities_table(other, rows=self.cities[200:260])
        procs = [subprocess.Popen(
            client_args(db, server.address, ["cities"], self.secret_file),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=clean_env()) for db in (self.client_db, other)]
        for p in procs:
            out, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0, err)
        self.sync(self.client_db, server)
        self.assertSynced(self.client_db, self.server_db)
        self.assertSynced(other, self.server_db)

    def test_connections_that_never_authenticate(self):
        """200 connections that send nothing and 20 that send a byte a
        second do not keep a real client from syncing within seconds
        (spec LS-SEC-2): at most --max-unauthenticated of them are kept
        (the oldest goes for a new one) and none past --auth-timeout."""
        server = self.start_server(
            self.server_db, extra=["--max-unauthenticated", "32",
                                   "--auth-timeout", "2"])
        idle = [socket.create_connection(("127.0.0.1", server.port))
                for _ in range(200)]
        self.addCleanup(lambda: [s.close() for s in idle])
        slow = [socket.create_connection(("127.0.0.1", server.port))
                for _ in range(20)]
        self.addCleanup(lambda: [s.close() for s in slow])
        stop = threading.Event()
        self.addCleanup(stop.set)

        def drip():
            while not stop.wait(1):
                for s in slow:
                    try:
                        s.send(b"\x16")
                    except OSError:
                        pass
        threading.Thread(target=drip, daemon=True).start()
        time.sleep(0.5)
        before = dump(self.server_db)
        start = time.monotonic()
        self.sync(self.client_db, server)
        self.assertLess(time.monotonic() - start, 5, "the client waited")
        self.assertSynced(self.client_db, self.server_db)
        self.assertNotEqual(dump(self.server_db), before)
        # Every hostile connection is closed by the server: evicted, or
        # cut off after --auth-timeout.
        deadline = time.monotonic() + 10
        for s in idle + slow:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                while s.recv(4096):
                    pass
            except socket.timeout:
                self.fail("a connection that never authenticated was kept")
            except OSError:
                pass
        log = server.stderr()
        self.assertIn("too many connections waiting to authenticate", log)
        self.assertIn("did not authenticate in time", log)
        self.assertTrue(server.alive())

    def test_ipv6_loopback(self):
        if not socket.has_ipv6:
            self.skipTest("no IPv6 support in this Python")
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
        except OSError:
            self.skipTest("no IPv6 loopback here")
        server = self.start_server(self.server_db, listen="[::1]:0")
        self.assertEqual(server.host, "[::1]")
        self.sync(self.client_db, server)
        self.assertSynced(self.client_db, self.server_db)


# ---- the same tests on every pair of backends -------------------------------
#
# Each mixin below holds tests written once against the harness's database
# abstraction (SqliteDatabase, PgDatabase); the classes after it run them
# with the client's database on one backend and the server's on another:
# SyncTest_sqlite_pg is a SQLite client syncing with a PostgreSQL server.
# Each PostgreSQL database is created for its test and dropped after it.


def capture_tool(program, db, *args):
    """Runs |program| --db |db| with |args| (--init, --drop-capture)."""
    return subprocess.run([str(program), "--db", str(db), *args],
                          capture_output=True, text=True, env=clean_env(),
                          timeout=60)


class PairTestCase(PairTestBase):
    """A client and a server database (PairTestBase), compared through
    each database's own client."""

    def backends(self):
        return {self.client_backend, self.server_backend}

    def assertSynced(self, a, b, table="cities"):
        rows_a, rows_b = a.rows(table), b.rows(table)
        self.assertEqual(len(rows_a), len(rows_b))
        self.assertTrue(rows_a == rows_b, f"table {table} differs")
        uuids = [r[0] for r in rows_a]
        self.assertEqual(len(set(uuids)), len(uuids), "duplicate UUIDs")
        self.assertNotIn(None, uuids)

    def assertCities(self, db, expected, table="cities"):
        """|db| holds exactly the city rows |expected|, each value of the
        kind given (admin_code "02" stays text, lon stays real)."""
        got = db.select(table, CITY_NAMES, "city_id")
        self.assertEqual(len(got), len(expected))
        self.assertTrue(row_keys(got) == row_keys(sorted(expected)),
                        f"table {table} of the {db.kind} database has "
                        "other rows")

    def snapshot(self):
        return self.client_db.snapshot(), self.server_db.snapshot()

    def expect_failure(self, server, status, tables=("cities",), **kwargs):
        before = self.snapshot()
        r = self.sync(self.client_db, server, tables=tables, expect=status,
                      **kwargs)
        self.assertEqual(r.stdout, "")
        self.assertRegex(r.stderr, r"(?m)^lipsync-client: .+")
        self.assertEqual(self.snapshot(), before, "a database changed")
        return r


class SyncPairTests:
    """Syncs that succeed, and what they leave in both databases."""

    def test_disjoint_rows(self):
        mine, theirs = self.cities[:2000], self.cities[2000:4000]
        self.client_db.create_table("cities", rows=mine)
        self.server_db.create_table("cities", rows=theirs)
        server = self.start_server(self.server_db)
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (2000, 2000)})
        self.assertCities(self.client_db, mine + theirs)
        self.assertCities(self.server_db, mine + theirs)
        self.assertSynced(self.client_db, self.server_db)
        # The session is logged with its peer, tables and outcome.
        wait_for_log(self, server, r"127\.0\.0\.1:\d+ \[cities\] ok; "
                     r"2000 rows in, 2000 rows out, \d+ bytes in")

    def test_overlapping_rows(self):
        self.client_db.create_table("cities", rows=self.cities[:1000])
        self.server_db.create_table("cities", rows=self.cities[1000:2000])
        server = self.start_server(self.server_db)
        self.sync(self.client_db, server)
        self.client_db.insert("cities", CITY_SCHEMA, self.cities[2000:2300])
        self.server_db.insert("cities", CITY_SCHEMA, self.cities[2300:2500])
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (300, 200)})
        self.assertCities(self.client_db, self.cities[:2500])
        self.assertCities(self.server_db, self.cities[:2500])
        self.assertSynced(self.client_db, self.server_db)
        # A third sync finds nothing to do.
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (0, 0)})

    def test_client_empty(self):
        self.client_db.create_table("cities")
        self.server_db.create_table("cities", rows=self.cities[:1500])
        server = self.start_server(self.server_db)
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (0, 1500)})
        self.assertCities(self.client_db, self.cities[:1500])
        self.assertSynced(self.client_db, self.server_db)

    def test_server_empty(self):
        self.client_db.create_table("cities", rows=self.cities[:1500])
        self.server_db.create_table("cities")
        server = self.start_server(self.server_db)
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (1500, 0)})
        self.assertCities(self.server_db, self.cities[:1500])
        self.assertSynced(self.client_db, self.server_db)

    def test_both_empty(self):
        self.client_db.create_table("cities")
        self.server_db.create_table("cities")
        server = self.start_server(self.server_db)
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (0, 0)})
        self.assertEqual(self.client_db.rows("cities"), [])
        self.assertEqual(self.server_db.rows("cities"), [])

    def test_updates_and_deletes_travel(self):
        self.client_db.create_table("cities", rows=self.cities[:500])
        self.server_db.create_table("cities", rows=self.cities[500:1000])
        server = self.start_server(self.server_db)
        self.sync(self.client_db, server)
        ids = [r[0] for r in self.cities[:1000]]
        # The client updates 10 rows and deletes 5 that came from the
        # server; the server updates 3 others and deletes 4 of the client's.
        self.client_db.run_sql(
            "UPDATE cities SET population = population + 7 WHERE city_id IN "
            f"({', '.join(map(str, ids[:10]))})")
        self.client_db.run_sql(
            f"DELETE FROM cities WHERE city_id IN "
            f"({', '.join(map(str, ids[500:505]))})")
        self.server_db.run_sql(
            "UPDATE cities SET name = name || ' (renamed)' WHERE city_id IN "
            f"({', '.join(map(str, ids[600:603]))})")
        self.server_db.run_sql(
            f"DELETE FROM cities WHERE city_id IN "
            f"({', '.join(map(str, ids[20:24]))})")
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (15, 7)})
        expected = []
        for c in self.cities[:1000]:
            if c[0] in ids[500:505] or c[0] in ids[20:24]:
                continue
            if c[0] in ids[:10]:
                c = c[:6] + (c[6] + 7,) + c[7:]
            if c[0] in ids[600:603]:
                c = c[:1] + (c[1] + " (renamed)",) + c[2:]
            expected.append(c)
        self.assertCities(self.client_db, expected)
        self.assertCities(self.server_db, expected)
        self.assertSynced(self.client_db, self.server_db)
        # Nothing comes back, and nothing moves twice.
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (0, 0)})

    def test_delete_and_reinsert_under_a_unique_key(self):
        # The server deletes 40 rows and inserts them again (new UUIDs). Its
        # 560 items split into 16 ranges of 35: where the client lacks a new
        # row, it holds 34 or fewer and answers with an item list, so the new
        # row comes in the server's next turn; where it still holds a
        # deleted row, it holds 35 and splits again, so the tombstone comes
        # two turns later. The client must delete before it inserts.
        rows = self.cities[:520]
        for db in (self.client_db, self.server_db):
            db.create_table("cities")
            db.run_sql("CREATE UNIQUE INDEX cities_city_id ON cities (city_id)")
        self.server_db.insert("cities", CITY_SCHEMA, rows)
        server = self.start_server(self.server_db)
        self.sync(self.client_db, server)
        ids = ", ".join(str(r[0]) for r in rows[::13])  # 40 rows
        self.server_db.run_sql(f"DELETE FROM cities WHERE city_id IN ({ids})")
        self.server_db.insert("cities", CITY_SCHEMA, rows[::13])
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (0, 80)})
        self.assertCities(self.client_db, rows)
        self.assertSynced(self.client_db, self.server_db)

    def test_conflict_policies(self):
        self.client_db.create_table("cities", rows=self.cities[:50])
        self.server_db.create_table("cities")
        server = self.start_server(self.server_db)
        self.sync(self.client_db, server)
        first, second = self.cities[0][0], self.cities[1][0]

        def edit(db, city, value):
            db.run_sql(f"UPDATE cities SET population = {value} "
                       f"WHERE city_id = {city}")
            time.sleep(0.01)  # distinct, ordered clocks

        def population(db, city):
            return [r[6] for r in db.select("cities", CITY_NAMES, "city_id")
                    if r[0] == city][0]

        # lww (the default): the later change wins, whichever side made it.
        edit(self.server_db, first, 111)
        edit(self.client_db, first, 222)
        edit(self.client_db, second, 333)
        edit(self.server_db, second, 444)
        self.sync(self.client_db, server)
        for db in (self.client_db, self.server_db):
            self.assertEqual(population(db, first), 222)
            self.assertEqual(population(db, second), 444)
        # server-wins and client-wins: the named side, whatever the order.
        for policy, winner in (("server-wins", self.server_db),
                               ("client-wins", self.client_db)):
            edit(self.server_db, first, 1)
            edit(self.client_db, first, 2)
            edit(self.client_db, second, 3)
            edit(self.server_db, second, 4)
            self.sync(self.client_db, server, extra=("--policy", policy))
            want = (1, 4) if winner is self.server_db else (2, 3)
            for db in (self.client_db, self.server_db):
                self.assertEqual((population(db, first),
                                  population(db, second)), want, policy)
        self.assertSynced(self.client_db, self.server_db)

    def test_changes_the_rows_cause_travel_at_the_next_sync(self):
        # What a database does in response to the rows a sync applies (an
        # ON DELETE CASCADE, or a trigger doing the same, that the peer
        # lacks) is a local change of its own (spec LS-CAPTURE-10): the
        # next sync carries it, without a failed verification; in a table
        # the sync did not include, it is an ordinary change. Once with
        # the cascade on the server, once on the client.
        for role in ("server", "client"):
            with self.subTest(cascade_on=role):
                self.check_rows_cause_changes(role)

    def check_rows_cause_changes(self, role):
        here = self.server_db if role == "server" else self.client_db
        other = self.client_db if role == "server" else self.server_db
        parent, child = f"parent_{role}", f"child_{role}"
        parents = [("id", "integer")]
        children = [("id", "integer"), ("parent", "integer")]
        for db in (here, other):
            db.create_table(parent, parents)
            db.create_table(child, children)
        if here.kind == "pg":
            here.sql(f"ALTER TABLE {parent} ADD PRIMARY KEY (id); ALTER"
                     f" TABLE {child} ADD FOREIGN KEY (parent) REFERENCES"
                     f" {parent} (id) ON DELETE CASCADE")
        elif role == "server":  # SQLite's own foreign key, enforced
            here.run_sql(f"CREATE UNIQUE INDEX {parent}_id ON {parent} (id)")
            here.run_sql(f"DROP TABLE {child}")
            here.run_sql(f"CREATE TABLE {child} (id INTEGER, parent INTEGER"
                         f" REFERENCES {parent} (id) ON DELETE CASCADE)")
        else:  # a trigger doing the same
            here.run_sql(f"CREATE TRIGGER cascade_{role} AFTER DELETE ON"
                         f" {parent} BEGIN DELETE FROM {child} WHERE"
                         f" parent = old.id; END")
        other.insert(parent, parents, [(1,), (2,), (3,), (4,)])
        other.insert(child, children,
                     [(10, 1), (20, 2), (21, 2), (30, 3), (40, 4)])
        tables = (parent, child)
        server = self.start_server(self.server_db, tables=tables)
        self.sync(self.client_db, server, tables=tables)

        def children_of(db):
            return [r[0] for r in db.select(child, ["id"], "id")]

        # The peer deletes a parent alone: its children go here only.
        other.run_sql(f"DELETE FROM {parent} WHERE id = 2")
        self.sync(self.client_db, server, tables=tables)
        self.assertEqual(children_of(here), [10, 30, 40])
        self.assertEqual(children_of(other), [10, 20, 21, 30, 40])
        r = self.sync(self.client_db, server, tables=tables)
        self.assertNotIn("again", r.stderr)
        self.assertEqual(children_of(other), [10, 30, 40])
        self.assertSynced(self.client_db, self.server_db, child)

        # Both deleted on the peer: the child is deleted here first (the
        # parents are named first), so the cascade finds nothing to do,
        # and the next sync of the children goes by their changes.
        other.run_sql(f"DELETE FROM {parent} WHERE id = 1")
        other.run_sql(f"DELETE FROM {child} WHERE id = 10")
        self.sync(self.client_db, server, tables=tables)
        r = self.sync(self.client_db, server, tables=tables)
        self.assertNotIn("again", r.stderr)
        self.assertRegex(r.stdout, rf"(?m)^{child}: .*\(incremental\)$")
        self.assertEqual(children_of(here), [30, 40])
        self.assertSynced(self.client_db, self.server_db, child)
        r = self.sync(self.client_db, server, tables=tables)
        self.assertEqual(parse_summary(r.stdout), {parent: (0, 0),
                                                   child: (0, 0)})

        # A sync of the parents alone: the children it deletes here are a
        # change of their table, which its own sync carries.
        other.run_sql(f"DELETE FROM {parent} WHERE id = 3")
        self.sync(self.client_db, server, tables=(parent,))
        self.assertEqual(children_of(here), [40])
        self.sync(self.client_db, server, tables=(child,))
        self.assertEqual(children_of(other), [40])
        self.assertSynced(self.client_db, self.server_db, child)
        server.stop()

        # A trigger that stamps the very row applied is part of applying
        # it: the stamp stays here, and nothing travels back and forth.
        stamped = f"stamped_{role}"
        for db in (here, other):
            db.create_table(stamped, [("id", "integer"), ("note", "text")])
        if here.kind == "pg":
            here.sql(f"CREATE FUNCTION stamp_{role}() RETURNS trigger"
                     f" LANGUAGE plpgsql AS $$ BEGIN UPDATE {stamped} SET"
                     f" note = 'stamped' WHERE id = NEW.id; RETURN NULL;"
                     f" END $$; CREATE TRIGGER stamp AFTER INSERT ON"
                     f" {stamped} FOR EACH ROW WHEN (pg_trigger_depth() < 1)"
                     f" EXECUTE FUNCTION stamp_{role}()")
        else:
            here.run_sql(f"CREATE TRIGGER stamp_{role} AFTER INSERT ON"
                         f" {stamped} BEGIN UPDATE {stamped} SET note ="
                         f" 'stamped' WHERE id = new.id; END")
        other.insert(stamped, [("id", "integer"), ("note", "text")],
                     [(1, "plain")])
        server = self.start_server(self.server_db, tables=(stamped,))
        self.sync(self.client_db, server, tables=(stamped,))
        self.assertEqual([tuple(r) for r in here.select(stamped, ["note"],
                                                        "id")],
                         [("stamped",)])
        for _ in range(2):
            r = self.sync(self.client_db, server, tables=(stamped,))
            self.assertEqual(parse_summary(r.stdout), {stamped: (0, 0)})
        self.assertEqual([tuple(r) for r in other.select(stamped, ["note"],
                                                         "id")],
                         [("plain",)])
        server.stop()

    def test_foreign_keys_hold_for_the_result(self):
        # A foreign key between two synced tables (SQLite's, enforced on
        # the connection a sync opens; PostgreSQL's, made DEFERRABLE) is
        # checked once, for the state the sync leaves (spec LS-VALUE-9):
        # children and parents travel in any order, a parent deleted with
        # its children goes through, and a state that leaves a child
        # without its parent fails before either side commits, both
        # databases unchanged, until the data is fixed.
        parents = [("id", "integer")]
        children = [("id", "integer"), ("parent", "integer")]
        for db in (self.client_db, self.server_db):
            if db.kind == "pg":
                db.create_table("parent", parents)
                db.create_table("child", children)
                db.sql("ALTER TABLE parent ADD PRIMARY KEY (id); ALTER TABLE"
                       " child ADD FOREIGN KEY (parent) REFERENCES parent"
                       " (id) DEFERRABLE")
            else:
                db.run_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
                db.run_sql("CREATE TABLE child (id INTEGER, parent INTEGER"
                           " REFERENCES parent (id))")
        self.server_db.insert("parent", parents, [(1,), (2,), (3,)])
        self.server_db.insert("child", children, [(10, 1), (20, 2), (30, 3)])
        tables = ("child", "parent")
        server = self.start_server(self.server_db, tables=tables)

        def children_of(db):
            return [tuple(r) for r in db.select("child", ["id", "parent"],
                                                "id")]

        self.sync(self.client_db, server, tables=tables)
        self.client_db.run_sql("DELETE FROM child WHERE id = 20")
        self.client_db.run_sql("DELETE FROM parent WHERE id = 2")
        self.client_db.run_sql("INSERT INTO parent (id) VALUES (4)")
        self.client_db.run_sql("INSERT INTO child (id, parent)"
                               " VALUES (40, 4)")
        self.sync(self.client_db, server, tables=tables)
        for table in tables:
            self.assertSynced(self.client_db, self.server_db, table)
        self.assertEqual(children_of(self.server_db),
                         [(10, 1), (30, 3), (40, 4)])

        # The server deletes a parent with its child while the client
        # gives it a new child: whichever side finds it, nobody commits.
        self.server_db.run_sql("DELETE FROM child WHERE id = 30")
        self.server_db.run_sql("DELETE FROM parent WHERE id = 3")
        self.client_db.run_sql("INSERT INTO child (id, parent)"
                               " VALUES (31, 3)")
        r = self.expect_failure(server, EXIT_DATABASE, tables=tables)
        self.assertIn("foreign key", r.stderr.lower())
        self.client_db.run_sql("DELETE FROM child WHERE id = 31")
        self.sync(self.client_db, server, tables=tables)
        for table in tables:
            self.assertSynced(self.client_db, self.server_db, table)
        self.assertEqual(children_of(self.client_db), [(10, 1), (40, 4)])
        server.stop()

    def test_init_installs_capture(self):
        self.client_db.create_table("cities", rows=self.cities[:20])

        def init():
            return subprocess.run(
                [str(CLIENT), "--db", str(self.client_db), "--init",
                 "--table", "cities"], capture_output=True, text=True,
                env=clean_env(), timeout=60)

        r = init()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "cities: change capture installed\n")
        self.assertEqual(len(set(self.client_db.uuids("cities"))), 20)
        before = self.client_db.snapshot()
        self.assertEqual(init().returncode, 0)  # a second time changes nothing
        self.assertEqual(self.client_db.snapshot(), before)
        # A delete made before the first sync travels as a tombstone.
        self.client_db.run_sql(
            f"DELETE FROM cities WHERE city_id = {self.cities[0][0]}")
        self.server_db.create_table("cities")
        server = self.start_server(self.server_db)
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (20, 0)})
        self.assertCities(self.server_db, self.cities[1:20])
        self.assertSynced(self.client_db, self.server_db)

    def test_drop_capture_keeps_rows_and_identity(self):
        mine, theirs = self.cities[:150], self.cities[150:300]
        self.client_db.create_table("cities", rows=mine)
        self.server_db.create_table("cities", rows=theirs)
        self.client_db.create_table("other", rows=self.cities[300:310])
        server = self.start_server(self.server_db)
        self.sync(self.client_db, server)
        self.assertEqual(capture_tool(CLIENT, self.client_db, "--init",
                                      "--table", "other").returncode, 0)
        rows = self.client_db.rows("cities")
        objects = self.client_db.capture_objects()

        # One table: its triggers and metadata go, the other's stay, and
        # the rows keep their UUIDs.
        r = capture_tool(CLIENT, self.client_db, "--drop-capture",
                         "--table", "cities")
        self.assertEqual((r.returncode, r.stdout, r.stderr),
                         (0, "change capture removed from 1 table\n", ""))
        left = self.client_db.capture_objects()
        self.assertTrue(left and set(left) < set(objects), left)
        self.assertEqual([o for o in left if "cities" in o], [])
        self.assertTrue([o for o in left if "other" in o], left)
        self.assertEqual(self.client_db.rows("cities"), rows)
        r = capture_tool(CLIENT, self.client_db, "--drop-capture",
                         "--table", "cities")  # nothing left to remove
        self.assertEqual((r.returncode, r.stdout),
                         (0, "change capture removed from 0 tables\n"))
        r = capture_tool(CLIENT, self.client_db, "--drop-capture",
                         "--table", "other", "--table", "nosuch")
        self.assertEqual(r.returncode, EXIT_SCHEMA, r.stderr)
        self.assertIn("no table nosuch, and no change capture of one",
                      r.stderr)
        self.assertEqual(self.client_db.capture_objects(), left)

        # The next sync installs capture again: every row keeps its
        # identity, nothing is duplicated, a row inserted meanwhile travels.
        add = self.cities[310:311]
        self.client_db.insert("cities", CITY_SCHEMA, add)
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (1, 0)})
        self.assertEqual(set(self.client_db.capture_objects()), set(objects))
        self.assertCities(self.server_db, mine + theirs + add)
        self.assertSynced(self.client_db, self.server_db)

        # Everything, on the server, while it runs: its next session
        # installs capture again and finds both sides equal.
        r = capture_tool(SERVER, self.server_db, "--drop-capture",
                         "--all-tables")
        self.assertEqual(
            (r.returncode, r.stdout),
            (0, "change capture removed from 1 table, and the database's"
                " own metadata\n"), r.stderr)
        self.assertEqual(self.server_db.capture_objects(), [])
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (0, 0)})
        self.assertSynced(self.client_db, self.server_db)

    def test_table_without_uuid_column_gets_one(self):
        # Neither side has UUIDs yet: each gives its own rows fresh ones
        # inside the sync's transaction, then they are synced as usual.
        self.client_db.create_table("cities", rows=self.cities[:500])
        self.server_db.create_table("cities", rows=self.cities[500:800])
        server = self.start_server(self.server_db)
        self.sync(self.client_db, server)
        for db in (self.client_db, self.server_db):
            self.assertIn(UUID_COLUMN, db.column_names("cities"))
            ids = db.uuids("cities")
            self.assertEqual(len(ids), 800)
            self.assertEqual(len(set(ids)), 800)
            for text in ids:
                self.assertEqual(str(uuid.UUID(text)), text)
            if db.kind == "pg":
                # PostgreSQL: a uuid column with a unique index of its own.
                self.assertEqual(db.uuid_column("cities"), ("uuid", True))
        self.assertSynced(self.client_db, self.server_db)
        self.assertCities(self.client_db, self.cities[:800])
        self.assertCities(self.server_db, self.cities[:800])

    def test_several_tables(self):
        self.client_db.create_table("a", rows=self.cities[:300])
        self.server_db.create_table("a", rows=self.cities[300:500])
        self.client_db.create_table("b", rows=self.cities[500:520])
        self.server_db.create_table("b")
        server = self.start_server(self.server_db, tables=("a", "b"))
        r = self.sync(self.client_db, server, tables=("a", "b"))
        self.assertEqual(parse_summary(r.stdout),
                         {"a": (300, 200), "b": (20, 0)})
        self.assertSynced(self.client_db, self.server_db, "a")
        self.assertSynced(self.client_db, self.server_db, "b")
        self.assertCities(self.server_db, self.cities[:500], "a")
        self.assertCities(self.server_db, self.cities[500:520], "b")

    def test_schema_qualified_mixed_case_table(self):
        # On PostgreSQL "Geo.Cities" is table "Cities" of schema "Geo",
        # names exact; on SQLite a table of that very name.
        table = "Geo.Cities"
        self.client_db.create_table(table, rows=self.cities[:300])
        self.server_db.create_table(table, rows=self.cities[300:500])
        decoys = ['"geo"."cities"', '"public"."Cities"',
                  '"public"."Geo.Cities"']
        for db in (self.client_db, self.server_db):
            if db.kind == "pg":
                db.sql('CREATE SCHEMA geo; ' + " ".join(
                    f'CREATE TABLE {d} AS SELECT * FROM "Geo"."Cities" '
                    "LIMIT 5;" for d in decoys))
        server = self.start_server(self.server_db, tables=(table,))
        r = self.sync(self.client_db, server, tables=(table,))
        self.assertEqual(parse_summary(r.stdout), {table: (300, 200)})
        self.assertCities(self.client_db, self.cities[:500], table)
        self.assertCities(self.server_db, self.cities[:500], table)
        self.assertSynced(self.client_db, self.server_db, table)
        for db in (self.client_db, self.server_db):
            if db.kind == "pg":
                for d in decoys:
                    self.assertEqual(db.sql(
                        f"SELECT count(*) FROM {d}").strip(), "5", d)
                    self.assertEqual(db.sql(
                        "SELECT count(*) FROM pg_attribute WHERE attrelid = "
                        f"{quote_literal(d)}::regclass AND attname = "
                        f"'{UUID_COLUMN}'").strip(), "0", d)

    def test_incremental_after_the_first_sync(self):
        # The first sync reconciles whole tables; the next ones list only
        # what changed since (spec 8.8), unless either side says otherwise;
        # a session without the feature drops the checkpoint (LS-INC-20).
        self.client_db.create_table("cities", rows=self.cities[:1000])
        self.server_db.create_table("cities", rows=self.cities[1000:1500])
        server = self.start_server(self.server_db)
        plain = self.start_server(self.server_db, extra=["--no-incremental"])

        def sync(srv, incremental, summary, extra=()):
            r = self.sync(self.client_db, srv, extra=extra)
            self.assertEqual("(incremental)" in r.stdout, incremental,
                             r.stdout)
            self.assertEqual(parse_summary(r.stdout), {"cities": summary})

        sync(server, False, (1000, 500))
        self.client_db.insert("cities", CITY_SCHEMA, self.cities[1500:1510])
        self.server_db.insert("cities", CITY_SCHEMA, self.cities[1510:1530])
        sync(server, True, (10, 20))
        self.assertSynced(self.client_db, self.server_db)
        sync(server, False, (0, 0), ["--full"])
        sync(server, True, (0, 0))
        sync(server, False, (0, 0), ["--no-incremental"])
        sync(server, False, (0, 0))
        sync(server, True, (0, 0))
        self.server_db.insert("cities", CITY_SCHEMA, self.cities[1530:1540])
        sync(plain, False, (0, 10))
        sync(server, False, (0, 0))
        sync(server, True, (0, 0))
        self.assertSynced(self.client_db, self.server_db)

    def test_two_clients_at_once(self):
        # Big enough that the two sessions overlap: one waits for the
        # other's write transaction (or table lock) on the server.
        n = 5000
        other_db = self.new_database(self.client_backend, "other")
        self.server_db.create_table("cities", rows=self.cities[:n])
        self.client_db.create_table("cities", rows=self.cities[n:2 * n])
        other_db.create_table("cities", rows=self.cities[2 * n:3 * n])
        server = self.start_server(self.server_db)
        procs = [subprocess.Popen(
            client_args(db, server.address, ["cities"], self.secret_file),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=clean_env()) for db in (self.client_db, other_db)]
        for proc in procs:
            self.addCleanup(stop_process, proc, signal.SIGKILL)
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            self.assertEqual(proc.returncode, 0, err + server.stderr())
            self.assertNotRegex(err, SANITIZER_RE)
        # No row lost, none twice, on the server.
        self.assertCities(self.server_db, self.cities[:3 * n])
        ids = self.server_db.uuids("cities")
        self.assertEqual(len(set(ids)), 3 * n)
        # Each client holds its rows and the server's at the time it synced.
        for db, own in ((self.client_db, range(n, 2 * n)),
                        (other_db, range(2 * n, 3 * n))):
            got = {r[0] for r in db.select("cities", ["city_id"], "city_id")}
            self.assertTrue({c[0] for c in self.cities[:n]} <= got)
            self.assertTrue({self.cities[i][0] for i in own} <= got)
            self.assertTrue(got <= {c[0] for c in self.cities[:3 * n]})
            self.assertEqual(len(got), db.count("cities"))
        # One more sync each brings everybody to the union.
        self.sync(self.client_db, server)
        self.sync(other_db, server)
        self.assertSynced(self.client_db, self.server_db)
        self.assertSynced(other_db, self.server_db)


class FailurePairTests:
    """Syncs that fail: the exit status, and neither database changes."""

    def test_schema_mismatch(self):
        self.client_db.create_table("cities", rows=self.cities[:100])
        other = [(n, "text" if n == "population" else t)
                 for n, t in CITY_SCHEMA]
        self.server_db.create_table("cities", other,
                                    rows=self.cities[100:200])
        server = self.start_server(self.server_db)
        r = self.expect_failure(server, EXIT_SCHEMA)
        self.assertIn("population", r.stderr)
        self.assertTrue(server.alive())

    def test_unknown_table(self):
        self.client_db.create_table("ghost", rows=self.cities[:10])
        self.server_db.create_table("cities")
        server = self.start_server(self.server_db, tables=("ghost",))
        self.expect_failure(server, EXIT_SCHEMA, tables=("ghost",))

    def test_conflict(self):
        shared = [str(uuid.uuid4()) for _ in range(103)]
        rows = self.cities[:103]
        changed = [r[:6] + (r[6] + 1,) + r[7:] for r in rows[100:]]
        self.client_db.create_table(
            "cities", rows=rows + self.cities[200:210],
            uuids=shared + [str(uuid.uuid4()) for _ in range(10)])
        self.server_db.create_table(
            "cities", rows=rows[:100] + changed + self.cities[300:305],
            uuids=shared + [str(uuid.uuid4()) for _ in range(5)])
        server = self.start_server(self.server_db)
        r = self.expect_failure(server, EXIT_CONFLICT)
        self.assertRegex(r.stderr, r"cities\b.*\b3\b")

    def test_client_killed_mid_transfer(self):
        # The one big case of each pair: every city on the client.
        self.client_db.create_table("cities", rows=self.cities)
        self.server_db.create_table("cities", rows=self.cities[:1])
        before = self.snapshot()
        server = self.start_server(self.server_db)
        proc, progress = start_with_terminal(
            client_args(self.client_db, server.address, ["cities"],
                        self.secret_file))
        self.addCleanup(stop_process, proc, signal.SIGKILL)
        sent = wait_for_rows_sent(proc, progress, timeout=120)
        self.assertIsNone(proc.poll(), "the sync ended before the kill")
        proc.kill()
        proc.wait()
        os.close(progress)
        self.assertTrue(0 < sent < len(self.cities), sent)
        # The server notices, rolls back and goes on serving.
        time.sleep(0.5)
        self.assertTrue(server.alive())
        self.assertEqual(self.snapshot(), before, "a database changed")
        for db in (self.client_db, self.server_db):
            db.check_readable(self)
        r = self.sync(self.client_db, server, timeout=180)
        self.assertEqual(parse_summary(r.stdout),
                         {"cities": (len(self.cities), 1)})
        self.assertEqual(self.server_db.count("cities"),
                         len(self.cities) + 1)


class PgSideTests:
    """What only a PostgreSQL side does; run on the pairs that have one."""

    def pg_side(self):
        return self.server_db if self.server_db.kind == "pg" else \
            self.client_db

    def test_unauthenticated_connections_open_no_database_connection(self):
        if self.server_db.kind != "pg":
            self.skipTest("the server's database is SQLite here")
        self.server_db.create_table("cities", rows=self.cities[:10])
        server = self.start_server(self.server_db)
        count = ("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                 f"{quote_literal(self.server_db.name)} "
                 "AND pid <> pg_backend_pid()")
        idle = [socket.create_connection(("127.0.0.1", server.port))
                for _ in range(20)]
        self.addCleanup(lambda: [s.close() for s in idle])
        time.sleep(0.5)
        # Spec LS-SEC-3: nothing touches the database before the proof.
        self.assertEqual(self.server_db.sql(count).strip(), "0")
        self.client_db.create_table("cities", rows=self.cities[10:20])
        self.sync(self.client_db, server)
        self.assertSynced(self.client_db, self.server_db)

    def test_uri_connection_strings(self):
        for db in (self.client_db, self.server_db):
            if db.kind == "pg":
                db.dsn = db.uri
        self.client_db.create_table("cities", rows=self.cities[:50])
        self.server_db.create_table("cities", rows=self.cities[50:80])
        server = self.start_server(self.server_db)
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (50, 30)})
        self.assertSynced(self.client_db, self.server_db)

    def test_uuid_column_of_another_type(self):
        self.client_db.create_table("cities", rows=self.cities[:20])
        self.server_db.create_table("cities", rows=self.cities[20:40])
        pg = self.pg_side()
        pg.sql(f"ALTER TABLE cities ADD COLUMN {UUID_COLUMN} text; "
               f"UPDATE cities SET {UUID_COLUMN} = gen_random_uuid()::text")
        server = self.start_server(self.server_db)
        r = self.expect_failure(server, EXIT_DATABASE)
        self.assertIn(UUID_COLUMN, r.stderr + server.stderr())

    def test_constraint_violation_changes_nothing(self):
        # PostgreSQL reports a CHECK violation when the rows' COPY ends:
        # still before either side commits, so the sync fails as a whole.
        pg = self.pg_side()
        other = self.client_db if pg is self.server_db else self.server_db
        pg.create_table("cities", rows=self.cities[:20])
        pg.sql("ALTER TABLE cities ADD CHECK (population < 1000000000)")
        bad = self.cities[20:30] + [self.cities[30][:6] + (1000000000,)
                                    + self.cities[30][7:]]
        other.create_table("cities", rows=bad)
        server = self.start_server(self.server_db)
        r = self.expect_failure(server, EXIT_DATABASE)
        self.assertIn("check", (r.stderr + server.stderr()).lower())

    def test_deferrable_constraints_hold_for_the_result(self):
        # A deferrable foreign key between two synced tables and a
        # deferrable UNIQUE are checked once, for the state the sync
        # leaves, whatever order the rows come in: a parent and its child
        # inserted together, or deleted together, and two rows swapping a
        # unique value sync with the child table named first.
        pg = self.pg_side()
        other = self.client_db if pg is self.server_db else self.server_db
        parents = [("id", "integer"), ("code", "integer")]
        children = [("id", "integer"), ("parent", "integer")]
        for db in (pg, other):
            db.create_table("parent", parents)
            db.create_table("child", children)
        pg.sql("ALTER TABLE parent ADD PRIMARY KEY (id), "
               "ADD UNIQUE (code) DEFERRABLE; ALTER TABLE child ADD "
               "FOREIGN KEY (parent) REFERENCES parent (id) DEFERRABLE")
        other.insert("parent", parents, [(1, 10), (2, 20), (3, 30)])
        other.insert("child", children, [(100, 1), (200, 2), (300, 3)])
        tables = ("child", "parent")
        server = self.start_server(self.server_db, tables=tables)
        self.sync(self.client_db, server, tables=tables)
        for statement in (
                "UPDATE parent SET code = -1 WHERE id = 1",
                "UPDATE parent SET code = 10 WHERE id = 2",
                "UPDATE parent SET code = 20 WHERE id = 1",
                "DELETE FROM child WHERE id = 300",
                "DELETE FROM parent WHERE id = 3",
                "INSERT INTO parent (id, code) VALUES (4, 40)",
                "INSERT INTO child (id, parent) VALUES (400, 4)"):
            other.run_sql(statement)
        r = self.sync(self.client_db, server, tables=tables)
        self.assertEqual(sorted(parse_summary(r.stdout)), ["child", "parent"])
        for table in tables:
            self.assertSynced(self.client_db, self.server_db, table)
        self.assertEqual(pg.select("parent", ["id", "code"], "id"),
                         other.select("parent", ["id", "code"], "id"))
        self.assertEqual(
            [tuple(r) for r in pg.select("parent", ["id", "code"], "id")],
            [(1, 20), (2, 10), (4, 40)])

    def test_parents_named_first_keep_an_immediate_foreign_key(self):
        # A foreign key checked at each statement (PostgreSQL's default)
        # holds while a sync deletes a parent with its child and inserts
        # another pair, when the parent table is named first: a side
        # deletes the rows of the last table named first, and writes the
        # others in the order named.
        pg = self.pg_side()
        other = self.client_db if pg is self.server_db else self.server_db
        parents = [("id", "integer")]
        children = [("id", "integer"), ("parent", "integer")]
        ids = [str(uuid.uuid4()) for _ in range(4)]
        for db in (pg, other):
            db.create_table("parent", parents, [(1,), (2,)], ids[:2])
            db.create_table("child", children, [(10, 1), (20, 2)], ids[2:])
        pg.sql("ALTER TABLE parent ADD PRIMARY KEY (id); ALTER TABLE child"
               " ADD FOREIGN KEY (parent) REFERENCES parent (id)")
        tables = ("parent", "child")
        server = self.start_server(self.server_db, tables=tables)
        self.sync(self.client_db, server, tables=tables)
        for statement in ("DELETE FROM child WHERE id = 20",
                          "DELETE FROM parent WHERE id = 2",
                          "INSERT INTO parent (id) VALUES (3)",
                          "INSERT INTO child (id, parent) VALUES (30, 3)"):
            other.run_sql(statement)
        r = self.sync(self.client_db, server, tables=tables)
        self.assertEqual(sorted(parse_summary(r.stdout)), ["child", "parent"])
        for table in tables:
            self.assertSynced(self.client_db, self.server_db, table)
        self.assertEqual([tuple(r) for r in pg.select("child", ["id",
                                                               "parent"],
                                                      "id")],
                         [(10, 1), (30, 3)])

    def test_deferred_constraint_fails_before_the_server_commits(self):
        # A constraint PostgreSQL would check only at COMMIT (INITIALLY
        # DEFERRED) is checked before Verify (spec LS-VALUE-9): a client
        # that cannot take the server's rows fails with the server
        # unchanged, not after the server has committed the client's.
        if self.client_db.kind != "pg":
            self.skipTest("the client's database is SQLite here")
        parents = [("id", "integer")]
        children = [("id", "integer"), ("parent", "integer")]
        for db in (self.client_db, self.server_db):
            db.create_table("parent", parents)
            db.create_table("child", children)
        self.client_db.sql(
            "ALTER TABLE parent ADD PRIMARY KEY (id); ALTER TABLE child ADD "
            "FOREIGN KEY (parent) REFERENCES parent (id) DEFERRABLE "
            "INITIALLY DEFERRED")
        self.client_db.insert("parent", parents, [(2,)])
        self.server_db.insert("parent", parents, [(1,)])
        self.server_db.insert("child", children, [(100, 1), (200, 99)])
        tables = ("parent", "child")
        server = self.start_server(self.server_db, tables=tables)
        r = self.expect_failure(server, EXIT_DATABASE, tables=tables)
        self.assertIn("foreign key", r.stderr)
        self.assertIn("checking deferred constraints", r.stderr)

    def test_narrower_postgres_types(self):
        # smallint, integer, real, varchar(n) and char(n) share canonical
        # types with bigint, double precision and text: they sync with
        # them, and refuse what they cannot hold exactly.
        narrow = self.pg_side()
        wide = self.client_db if narrow is self.server_db else self.server_db
        pgtypes = ["bigint", "smallint", "integer", "real", "varchar(5)",
                   "char(5)"]
        schema = [("id", "integer"), ("s", "integer"), ("i4", "integer"),
                  ("f4", "real"), ("vc", "text"), ("ch", "text")]
        narrow.sql("CREATE TABLE narrow (" + ", ".join(
            f"{n} {t}" for (n, _), t in zip(schema, pgtypes)) + ")")
        edges = [
            (1, -32768, -2147483648, 3.4028234663852886e38, "abcde",
             "ab   "),
            (2, 32767, 2147483647, 1.401298464324817e-45, "", "     "),
            (3, 0, 0, float("-inf"), "é日本xy", "é日本xy"),
            (4, None, None, None, None, None),
        ]
        narrow.insert("narrow", schema, edges)
        mine = [(10, 1, 2, -0.5, "w", "wide ")]
        wide.create_table("narrow", schema, mine)
        server = self.start_server(self.server_db, tables=("narrow",))
        self.sync(self.client_db, server, tables=("narrow",))
        self.assertSynced(self.client_db, self.server_db, "narrow")
        for db in (self.client_db, self.server_db):
            self.assertEqual(row_keys(db.select("narrow", [n for n, _ in
                                                           schema], "id")),
                             row_keys(edges + mine))
        shown = [db.display("narrow", schema)
                 for db in (self.client_db, self.server_db)]
        self.assertEqual(shown[0], shown[1])
        # Out of range, not a float4, too long, unpadded: refused, nothing
        # changes.
        for i, (column, value) in enumerate([
                ("s", 32768), ("i4", -2147483649), ("f4", 0.1),
                ("vc", "abcdef"), ("ch", "ab")]):
            with self.subTest(column=column, value=value):
                ctype = dict(schema)[column]
                wide.insert("narrow", [("id", "integer"), (column, ctype)],
                            [(20 + i, value)])
                self.expect_failure(server, EXIT_DATABASE,
                                    tables=("narrow",))
                wide.delete("narrow", "id", 20 + i)

    def test_column_type_without_mapping(self):
        # interval maps to no canonical type: the table is refused when it
        # is opened, naming the column.
        for db in (self.client_db, self.server_db):
            db.create_table("cities", rows=self.cities[:20])
            if db.kind == "pg":
                db.sql("ALTER TABLE cities ADD COLUMN span interval")
            else:
                db.execute("ALTER TABLE cities ADD COLUMN span INTERVAL")
        server = self.start_server(self.server_db)
        r = self.expect_failure(server, EXIT_SCHEMA)
        self.assertIn("span", r.stderr)


# A table with a column of every canonical type, and values at their edges.
TYPED_SCHEMA = [
    ("id", "integer"),
    ("whole", "integer"),
    ("measure", "real"),
    ("label", "text"),
    ("payload", "blob"),
    ("flag", "boolean"),
    ("amount", "decimal"),
    ("day", "date"),
    ("moment", "timestamp"),
    ("instant", "timestamptz"),
    ("doc", "json"),
    ("docb", "jsonb"),
    ("ref", "uuid"),
]
TYPED_NAMES = [n for n, _ in TYPED_SCHEMA]


def typed_row(**values):
    return tuple(values.get(n) for n in TYPED_NAMES)


_MB = random.Random(1).randbytes(1 << 20)

# Every value here is in its column's canonical form, so both backends
# hold it as given.
EDGE_ROWS = [
    typed_row(id=1, whole=-9223372036854775808, measure=float("inf"),
              label="", payload=_MB, flag=0, amount="12.50",
              day="1969-12-31", moment="1969-12-31 23:59:59.999999",
              instant="1969-07-20 20:17:40+00",
              doc='{"b": 1,  "a": [1, 2.50]}',
              docb='{"a": 1, "b": [true, null]}',
              ref="00000000-0000-0000-0000-000000000000"),
    typed_row(id=2, whole=9223372036854775807, measure=float("-inf"),
              label="tab\there\nnew line \\ back'slash \"q\" \r",
              payload=b"", flag=1, amount="-0.001", day="2000-02-29",
              moment="2038-01-19 03:14:08", instant="2038-01-19 03:14:08.5+00",
              doc="[]", docb="[]", ref="ffffffff-ffff-ffff-ffff-ffffffffffff"),
    typed_row(id=3, whole=0, measure=1e-308, label="日本語 \U0001F600 é",
              payload=bytes(range(256)),
              amount="123456789012345678901234567890.000000000000000000001",
              day="2400-02-29", moment="1600-02-29 12:00:00",
              instant="0001-01-01 00:00:00+00", doc='"x"', docb='"x"',
              ref="5f0c3a1e-8d2b-4c7f-9a61-0b2e4d6f8a10"),
    typed_row(id=4, whole=-1, measure=5e-324, amount="NaN",
              day="0044-03-15 BC", moment="0044-03-15 12:30:00 BC",
              instant="2262-04-11 23:47:16.854775+00", doc="null",
              docb="null", label="x" * 100000),
    typed_row(id=5, measure=1.7976931348623157e308, amount="Infinity",
              day="infinity", moment="infinity", instant="-infinity",
              doc="12", docb="12.50", payload=random.Random(2).randbytes(
                  1 << 20)),
    typed_row(id=6, measure=0.1, amount="-Infinity", day="-infinity",
              moment="-infinity", instant="infinity",
              doc='{"deep": {"x": [1, {"y": "z"}]}}',
              docb='{"a": {"b": [1, {"c": "d"}]}}'),
    typed_row(id=7),
    typed_row(id=8, whole=-9223372036854775807, measure=-2.5, amount="0.00",
              day="9999-12-31", moment="9999-12-31 23:59:59.999999",
              instant="1901-12-13 20:45:52+00", flag=0),
]

# Values only one backend can hold: SQLite stores no NaN and turns -0.0
# into 0 in a real column; PostgreSQL stores no NUL in text and refuses
# what is not in its column's canonical form (which SQLite keeps as given).
SPECIAL_VALUES = [
    ("NaN", "measure", float("nan"), {"pg"}),
    ("negative zero", "measure", -0.0, {"pg"}),
    ("text with NUL", "label", "a\x00b", {"sqlite"}),
    ("jsonb not as jsonb prints it", "docb", '{"b":1,"a":2}', {"sqlite"}),
    ("decimal with an exponent", "amount", "1.5e3", {"sqlite"}),
    ("date not in canonical form", "day", "2024-2-29", {"sqlite"}),
    ("timestamptz not in UTC", "instant", "2024-01-01 10:00:00+02",
     {"sqlite"}),
    ("uppercase uuid", "ref", "ABCDEF00-0000-4000-8000-000000000000",
     {"sqlite"}),
    ("boolean other than 0 and 1", "flag", 2, {"sqlite"}),
    ("text in an integer column", "whole", "abc", {"sqlite"}),
]


class TypesPairTests:
    """Every canonical type, at its edges, as each database's own client
    shows it after a sync."""

    def assertSameDisplay(self, table="typed"):
        shown = [db.display(table, TYPED_SCHEMA)
                 for db in (self.client_db, self.server_db)]
        self.assertEqual(len(shown[0]), len(shown[1]))
        for a, b in zip(*shown):
            if a != b:
                self.fail("the two databases show a row differently:\n"
                          f"{self.client_backend}: {a[:500]!r}\n"
                          f"{self.server_backend}: {b[:500]!r}")

    def assertTyped(self, expected, table="typed"):
        expected = row_keys(sorted(expected, key=lambda r: r[0]))
        for db in (self.client_db, self.server_db):
            got = row_keys(db.select(table, TYPED_NAMES, "id"))
            self.assertEqual(len(got), len(expected))
            for g, e in zip(got, expected):
                if g != e:
                    diff = [(n, x, y) for n, x, y in zip(TYPED_NAMES, g, e)
                            if x != y]
                    self.fail(f"row {e[0]} of the {db.kind} database "
                              f"differs: {str(diff)[:800]}")

    def test_edge_values(self):
        mine, theirs = EDGE_ROWS[0::2], EDGE_ROWS[1::2]
        self.client_db.create_table("typed", TYPED_SCHEMA, mine)
        self.server_db.create_table("typed", TYPED_SCHEMA, theirs)
        server = self.start_server(self.server_db, tables=("typed",))
        r = self.sync(self.client_db, server, tables=("typed",))
        self.assertEqual(parse_summary(r.stdout),
                         {"typed": (len(mine), len(theirs))})
        self.assertSynced(self.client_db, self.server_db, "typed")
        self.assertTyped(EDGE_ROWS)
        self.assertSameDisplay()
        r = self.sync(self.client_db, server, tables=("typed",))
        self.assertEqual(parse_summary(r.stdout), {"typed": (0, 0)})

    def test_values_only_one_backend_can_hold(self):
        both = self.backends()
        base = [typed_row(id=100, label="client"),
                typed_row(id=101, label="server")]
        self.client_db.create_table("typed", TYPED_SCHEMA, base[:1])
        self.server_db.create_table("typed", TYPED_SCHEMA, base[1:])
        server = self.start_server(self.server_db, tables=("typed",))
        # Values both sides hold sync as any other.
        shared = [typed_row(id=200 + i, **{column: value})
                  for i, (_, column, value, holders)
                  in enumerate(SPECIAL_VALUES) if both <= holders]
        self.client_db.insert("typed", TYPED_SCHEMA, shared[0::2])
        self.server_db.insert("typed", TYPED_SCHEMA, shared[1::2])
        self.sync(self.client_db, server, tables=("typed",))
        self.assertSynced(self.client_db, self.server_db, "typed")
        self.assertTyped(base + shared)
        self.assertSameDisplay()
        # A value that only one side can hold is refused by the other:
        # exit 6, a message naming the column, both databases unchanged.
        for i, (label, column, value, holders) in enumerate(SPECIAL_VALUES):
            if len(both & holders) != 1 or both <= holders:
                continue
            with self.subTest(label):
                holder = (self.client_db if self.client_backend in holders
                          else self.server_db)
                ctype = dict(TYPED_SCHEMA)[column]
                holder.insert("typed", [("id", "integer"), (column, ctype)],
                              [(300 + i, value)])
                r = self.expect_failure(server, EXIT_DATABASE,
                                        tables=("typed",))
                self.assertRegex(r.stderr + server.stderr(),
                                 rf"\b{column}\b")
                holder.delete("typed", "id", 300 + i)
        self.assertTrue(server.alive())


def _pair_class(name, client, server, *mixins):
    doc = (f"{mixins[0].__doc__.strip()} Client on {client}, server on "
           f"{server}.")
    return type(name, (*mixins, PairTestCase),
                {"client_backend": client, "server_backend": server,
                 "__doc__": doc, "__module__": __name__})


SyncTest_sqlite_sqlite = _pair_class(
    "SyncTest_sqlite_sqlite", "sqlite", "sqlite", SyncPairTests)
SyncTest_pg_pg = _pair_class("SyncTest_pg_pg", "pg", "pg", SyncPairTests)
SyncTest_sqlite_pg = _pair_class(
    "SyncTest_sqlite_pg", "sqlite", "pg", SyncPairTests)
SyncTest_pg_sqlite = _pair_class(
    "SyncTest_pg_sqlite", "pg", "sqlite", SyncPairTests)

FailureTest_sqlite_sqlite = _pair_class(
    "FailureTest_sqlite_sqlite", "sqlite", "sqlite", FailurePairTests)
FailureTest_pg_pg = _pair_class(
    "FailureTest_pg_pg", "pg", "pg", FailurePairTests, PgSideTests)
FailureTest_sqlite_pg = _pair_class(
    "FailureTest_sqlite_pg", "sqlite", "pg", FailurePairTests, PgSideTests)
FailureTest_pg_sqlite = _pair_class(
    "FailureTest_pg_sqlite", "pg", "sqlite", FailurePairTests, PgSideTests)

TypesTest_sqlite_sqlite = _pair_class(
    "TypesTest_sqlite_sqlite", "sqlite", "sqlite", TypesPairTests)
TypesTest_pg_pg = _pair_class("TypesTest_pg_pg", "pg", "pg", TypesPairTests)
TypesTest_sqlite_pg = _pair_class(
    "TypesTest_sqlite_pg", "sqlite", "pg", TypesPairTests)
TypesTest_pg_sqlite = _pair_class(
    "TypesTest_pg_sqlite", "pg", "sqlite", TypesPairTests)


def wait_for_log(test, server, pattern, timeout=5):
    """Waits until the server's log matches |pattern|: a session is logged
    when it ends on the server, which may be after the client exits."""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, server.stderr()):
        if time.monotonic() > deadline:
            test.fail(f"log does not match {pattern!r}:\n{server.stderr()}")
        time.sleep(0.05)


def run_client_at(test, address, extra=()):
    return subprocess.run(
        client_args(test.client_db, address, ["cities"], test.secret_file,
                    extra),
        capture_output=True, text=True, timeout=30, env=clean_env())


def start_with_terminal(args):
    """Starts |args| with stderr on a pseudo-terminal, so the client draws
    its progress line. Returns the process and the terminal's master end."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave,
                            env=clean_env())
    os.close(slave)
    return proc, master


def read_all(master):
    """Reads what is left on a terminal whose other end has closed."""
    text = b""
    while select.select([master], [], [], 1)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every writer has gone
            break
        if not chunk:
            break
        text += chunk
    os.close(master)
    return text.decode(errors="replace")


def wait_for_rows_sent(proc, master, timeout):
    """Reads the progress line until it shows rows sent; returns how many."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.05)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            text += os.read(master, 4096).decode(errors="replace")
        except OSError:
            break
        sent = [int(n) for n in re.findall(r"(\d+) rows sent", text)]
        if sent and max(sent) > 0:
            return max(sent)
    raise AssertionError(f"no progress seen; terminal showed {text!r}")


if __name__ == "__main__":
    unittest.main()

#!/usr/bin/env python3
"""End-to-end tests of lipsync-server and lipsync-client.

Run from the repository root:  python3 ref/tests/e2e/test_cli.py -v
The binaries come from $LIPSYNC_BIN (default build/bin), the cities data from
$LIPSYNC_CITIES (default ../shared/data/cities.csv).
"""

import os
import re
import select
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lipsync_harness import (  # noqa: E402
    CITY_COLUMNS, CLIENT, EXIT_AUTH, EXIT_CONFLICT, EXIT_DATABASE,
    EXIT_INTERNAL, EXIT_PEER, EXIT_SCHEMA, EXIT_USAGE, SERVER, SyncTestCase,
    add_cities, cities, city_rows, clean_env, client_args, connect,
    create_cities_table, dump, integrity_check, parse_summary, stop_process,
    typed_rows, uuids_of, write_secret)


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
    """Syncs that succeed, and what they leave in both databases."""

    def setUp(self):
        super().setUp()
        self.cities = cities()
        self.client_db = self.path("client.db")
        self.server_db = self.path("server.db")

    def test_disjoint_rows(self):
        mine, theirs = self.cities[:2000], self.cities[2000:4000]
        create_cities_table(self.client_db, rows=mine)
        create_cities_table(self.server_db, rows=theirs)
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
        create_cities_table(self.client_db, rows=self.cities[:1000])
        create_cities_table(self.server_db, rows=self.cities[1000:2000])
        server = self.start_server(self.server_db)
        self.sync(self.client_db, server)
        add_cities(self.client_db, self.cities[2000:2300])
        add_cities(self.server_db, self.cities[2300:2500])
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (300, 200)})
        self.assertCities(self.client_db, self.cities[:2500])
        self.assertCities(self.server_db, self.cities[:2500])
        self.assertSynced(self.client_db, self.server_db)
        # A third sync finds nothing to do.
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (0, 0)})

    def test_client_empty(self):
        create_cities_table(self.client_db)
        create_cities_table(self.server_db, rows=self.cities[:1500])
        server = self.start_server(self.server_db)
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (0, 1500)})
        self.assertCities(self.client_db, self.cities[:1500])
        self.assertSynced(self.client_db, self.server_db)

    def test_server_empty(self):
        create_cities_table(self.client_db, rows=self.cities[:1500])
        create_cities_table(self.server_db)
        server = self.start_server(self.server_db)
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (1500, 0)})
        self.assertCities(self.server_db, self.cities[:1500])
        self.assertSynced(self.client_db, self.server_db)

    def test_both_empty(self):
        create_cities_table(self.client_db)
        create_cities_table(self.server_db)
        server = self.start_server(self.server_db)
        r = self.sync(self.client_db, server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (0, 0)})
        self.assertEqual(typed_rows(self.client_db), [])
        self.assertEqual(typed_rows(self.server_db), [])

    def test_table_without_uuid_column_gets_one(self):
        # Neither side has UUIDs yet: each gives its own rows fresh ones
        # inside the sync's transaction, then they are synced as usual.
        create_cities_table(self.client_db, rows=self.cities[:500])
        create_cities_table(self.server_db, rows=self.cities[500:800])
        server = self.start_server(self.server_db)
        self.sync(self.client_db, server)
        for db in (self.client_db, self.server_db):
            conn = connect(db)
            try:
                cols = [r[1] for r in conn.execute("PRAGMA table_info(cities)")]
            finally:
                conn.close()
            self.assertIn("_lipsync_uuid", cols)
            ids = uuids_of(db)
            self.assertEqual(len(ids), 800)
            self.assertEqual(len(set(ids)), 800)
            for text in ids:
                self.assertEqual(str(uuid.UUID(text)), text)
        self.assertSynced(self.client_db, self.server_db)
        self.assertCities(self.client_db, self.cities[:800])

    def test_several_tables(self):
        create_cities_table(self.client_db, "a", rows=self.cities[:300])
        create_cities_table(self.server_db, "a", rows=self.cities[300:500])
        create_cities_table(self.client_db, "b", rows=self.cities[500:520])
        create_cities_table(self.server_db, "b")
        server = self.start_server(self.server_db, tables=("a", "b"))
        r = self.sync(self.client_db, server, tables=("a", "b"))
        self.assertEqual(parse_summary(r.stdout),
                         {"a": (300, 200), "b": (20, 0)})
        self.assertSynced(self.client_db, self.server_db, "a")
        self.assertSynced(self.client_db, self.server_db, "b")
        self.assertCities(self.server_db, self.cities[:500], "a")
        self.assertCities(self.server_db, self.cities[500:520], "b")

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

    def test_two_clients_at_once(self):
        # Big enough that the two sessions overlap: one waits for the
        # other's write transaction on the server.
        n = 5000
        other_db = self.path("other.db")
        create_cities_table(self.server_db, rows=self.cities[:n])
        create_cities_table(self.client_db, rows=self.cities[n:2 * n])
        create_cities_table(other_db, rows=self.cities[2 * n:3 * n])
        server = self.start_server(self.server_db)
        procs = [subprocess.Popen(
            client_args(db, server.address, ["cities"], self.secret_file),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=clean_env()) for db in (self.client_db, other_db)]
        for proc in procs:
            self.addCleanup(stop_process, proc, signal.SIGKILL)
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 0, err + server.stderr())
        self.assertCities(self.server_db, self.cities[:3 * n])
        # Each client holds its rows and the server's at the time it synced.
        for db, own in ((self.client_db, range(n, 2 * n)),
                        (other_db, range(2 * n, 3 * n))):
            ids = {r[0] for r in city_rows(db)}
            self.assertTrue({c[0] for c in self.cities[:n]} <= ids)
            self.assertTrue({self.cities[i][0] for i in own} <= ids)
            self.assertTrue(ids <= {c[0] for c in self.cities[:3 * n]})
            self.assertEqual(len(ids), len(city_rows(db)))
        # One more sync each brings everybody to the union.
        self.sync(self.client_db, server)
        self.sync(other_db, server)
        self.assertSynced(self.client_db, self.server_db)
        self.assertSynced(other_db, self.server_db)


class FailureTest(SyncTestCase):
    """Syncs that fail: the exit status, and neither database changes."""

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

    def test_schema_mismatch(self):
        create_cities_table(self.client_db, rows=self.cities[:100])
        other = [(n, "TEXT" if n == "population" else t)
                 for n, t in CITY_COLUMNS]
        create_cities_table(self.server_db, rows=self.cities[100:200],
                            columns=other)
        server = self.start_server(self.server_db)
        r = self.expect_failure(server, EXIT_SCHEMA)
        self.assertIn("population", r.stderr)
        self.assertTrue(server.alive())

    def test_wrong_secret(self):
        create_cities_table(self.client_db, rows=self.cities[:100])
        create_cities_table(self.server_db, rows=self.cities[100:200])
        server = self.start_server(self.server_db)
        wrong = write_secret(self.path("wrong"), self.secret + "x")
        self.expect_failure(server, EXIT_AUTH, secret_file=wrong)
        # A client with the right secret is still served.
        self.sync(self.client_db, server)

    def test_unknown_table(self):
        create_cities_table(self.client_db, "ghost", rows=self.cities[:10])
        create_cities_table(self.server_db)
        server = self.start_server(self.server_db, tables=("ghost",))
        self.expect_failure(server, EXIT_SCHEMA, tables=("ghost",))

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

    def test_conflict(self):
        shared = [str(uuid.uuid4()) for _ in range(103)]
        rows = self.cities[:103]
        changed = [r[:6] + (r[6] + 1,) + r[7:] for r in rows[100:]]
        create_cities_table(self.client_db, rows=rows + self.cities[200:210],
                            uuids=shared + [str(uuid.uuid4())
                                            for _ in range(10)])
        create_cities_table(self.server_db,
                            rows=rows[:100] + changed + self.cities[300:305],
                            uuids=shared + [str(uuid.uuid4())
                                            for _ in range(5)])
        server = self.start_server(self.server_db)
        r = self.expect_failure(server, EXIT_CONFLICT)
        self.assertRegex(r.stderr, r"cities\b.*\b3\b")

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

    def test_client_killed_mid_transfer(self):
        create_cities_table(self.client_db, rows=self.cities)
        create_cities_table(self.server_db, rows=self.cities[:1])
        before = self.snapshot()
        server = self.start_server(self.server_db)
        proc, progress = start_with_terminal(
            client_args(self.client_db, server.address, ["cities"],
                        self.secret_file))
        self.addCleanup(stop_process, proc, signal.SIGKILL)
        sent = wait_for_rows_sent(proc, progress, timeout=60)
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
            self.assertEqual(integrity_check(db), [("ok",)])
        r = self.sync(self.client_db, server, timeout=120)
        self.assertEqual(parse_summary(r.stdout),
                         {"cities": (len(self.cities), 1)})
        conn = connect(self.server_db)
        count = conn.execute("SELECT count(*) FROM cities").fetchone()[0]
        conn.close()
        self.assertEqual(count, len(self.cities) + 1)


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

    def test_max_clients_keeps_extra_clients_waiting(self):
        server = self.start_server(
            self.server_db, extra=["--max-clients", "1", "--timeout", "1"])
        with socket.create_connection(("127.0.0.1", server.port)):
            # That silent connection holds the only slot until it times
            # out; the real client waits in the backlog, then is served.
            time.sleep(0.2)
            start = time.monotonic()
            self.sync(self.client_db, server)
            self.assertGreater(time.monotonic() - start, 0.5)
        self.assertSynced(self.client_db, self.server_db)

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

#!/usr/bin/env python3
"""End-to-end tests of what the programs tell scripts and operators, and
of the client's table mapping:

- `lipsync-client --dry-run`: both databases stay byte-identical (the
  SQLite file, PostgreSQL's pg_dump), and the report matches what the real
  sync that follows does;
- `--json`: one object per run, that parses, whose counts match the
  databases, and whose errors carry the code name and the exit status;
- `--table LOCAL=REMOTE`: a SQLite `cities` synced with a PostgreSQL
  `geo.cities`;
- the server's log: a timestamped line per session, `--log-format json`,
  `--log-file` reopened on SIGHUP, and `--json` on stdout.

Run with a throwaway PostgreSQL server:

    sh tools/pgtest.sh python3 ref/tests/e2e/test_report.py -v
"""

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lipsync_harness import (  # noqa: E402
    CITY_SCHEMA, EXIT_AUTH, EXIT_SCHEMA, SERVER, SyncTestCase, cities,
    PairTestBase, clean_env, read_line, stop_process)

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
COUNTS = ("rows_sent", "rows_received", "deletes_sent", "deletes_received",
          "changed_both_kept", "changed_both_taken", "conflicts")


def file_state(db):
    """What must not change in a dry run: the SQLite file's bytes (its
    write-ahead log checkpointed first, and required empty after), or
    PostgreSQL's pg_dump digest (schema _lipsync included)."""
    if db.kind == "pg":
        return db.snapshot()
    con = sqlite3.connect(db.path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    wal = f"{db.path}-wal"
    wal_size = os.path.getsize(wal) if os.path.exists(wal) else 0
    with open(db.path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), wal_size


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class ReportPairTests:
    """Dry runs and JSON reports, on one pair of backends."""

    def json_sync(self, server, extra=(), expect=0, tables=("cities",)):
        r = self.sync(self.client_db, server, tables=tables, expect=expect,
                      extra=["--json", *extra])
        report = json.loads(r.stdout)  # one object, nothing else
        self.assertEqual(report["exit_status"], expect)
        return report

    def diverge(self):
        """A first sync of 300 places, then changes apart: the client adds
        20, deletes 3 and updates 2 (one of them later on the server too,
        whose change is the later one), the server adds 10 and deletes 2."""
        c, s = self.client_db, self.server_db
        c.create_table("cities", rows=self.cities[:200])
        s.create_table("cities", rows=self.cities[200:300])
        log = self.path("server.jsonl")
        server = self.start_server(
            s, extra=["--log-format", "json", "--log-file", str(log)])
        self.json_sync(server)
        ids = sorted(r[0] for r in self.cities[:300])
        c.insert("cities", CITY_SCHEMA, self.cities[300:320])
        c.run_sql(f"DELETE FROM cities WHERE city_id IN "
                  f"({ids[0]}, {ids[1]}, {ids[2]})")
        c.run_sql(f"UPDATE cities SET name = 'client' WHERE city_id IN "
                  f"({ids[10]}, {ids[11]})")
        time.sleep(0.01)  # the server's change of ids[10] is the later one
        s.insert("cities", CITY_SCHEMA, self.cities[320:330])
        s.run_sql(f"DELETE FROM cities WHERE city_id IN ({ids[3]}, {ids[4]})")
        s.run_sql(f"UPDATE cities SET name = 'server' WHERE city_id = "
                  f"{ids[10]}")
        return server, log

    def test_dry_run_changes_nothing_and_tells_the_truth(self):
        server, log = self.diverge()
        before = file_state(self.client_db), file_state(self.server_db)
        dry = self.json_sync(server, ["--dry-run"])
        self.assertEqual(dry["outcome"], "dry-run")
        self.assertTrue(dry["dry_run"])
        self.assertIsNone(dry["error"])
        self.assertEqual(dry["would"], {"outcome": "ok", "code": None,
                                        "message": None})
        after = file_state(self.client_db), file_state(self.server_db)
        self.assertEqual(before, after, "a dry run changed a database")
        (t,) = dry["tables"]
        # 20 inserts, 3 deletes and 1 update out; 10 inserts, 2 deletes
        # and the row changed on both sides in (lww: the server's is later).
        self.assertEqual([t[k] for k in COUNTS], [24, 13, 3, 2, 0, 1, 0])
        # The text form says the same.
        r = self.sync(self.client_db, server, extra=["--dry-run"])
        self.assertRegex(
            r.stdout, r"(?m)^cities: would send 24 rows \(3 deletes\), "
            r"receive 13 rows \(2 deletes\); changed on both sides: 1 taken "
            r"from the server, 0 kept \(policy lww\); 0 conflicts$")
        self.assertIn("dry run: nothing was changed; the sync would succeed",
                      r.stdout)
        self.assertEqual(before, (file_state(self.client_db),
                                  file_state(self.server_db)))
        # The sync itself does what the dry run said, and its counts match
        # the databases.
        real = self.json_sync(server)
        self.assertEqual(real["outcome"], "ok")
        self.assertEqual([real["tables"][0][k] for k in COUNTS],
                         [t[k] for k in COUNTS])
        self.assertEqual(self.client_db.count("cities"), 300 + 30 - 5)
        self.assertEqual(self.client_db.rows("cities"),
                         self.server_db.rows("cities"))
        self.assertEqual(
            [r[0] for r in self.client_db.select(
                "cities", ["name"], "city_id") if r[0] in ("client",
                                                            "server")],
            ["server", "client"])
        # The server logged both: the dry run as cancelled.
        lines = json_lines(log.read_text())
        sessions = [x for x in lines if x["event"] == "session"]
        self.assertEqual([x["outcome"] for x in sessions],
                         ["ok", "cancelled", "cancelled", "ok"])
        self.assertEqual(sessions[1]["error"]["code"], "CANCELLED")
        self.assertTrue(sessions[1]["error"]["remote"])
        self.assertEqual(sessions[3]["tables"][0]["rows_received"], 24)
        self.assertEqual(sessions[3]["tables"][0]["deletes_received"], 3)
        for x in sessions:
            self.assertRegex(x["time"], "^" + TIMESTAMP + "$")
            self.assertRegex(x["peer"], r"^127\.0\.0\.1:\d+$")

    def test_json_errors(self):
        self.client_db.create_table("cities", rows=self.cities[:10])
        self.server_db.create_table("cities", rows=self.cities[10:20])
        server = self.start_server(self.server_db)
        self.server_db.create_table("other")
        self.client_db.create_table("other")
        report = self.json_sync(server, tables=("other",), expect=EXIT_SCHEMA)
        self.assertEqual(report["outcome"], "failed")
        self.assertEqual(report["error"]["code"], "TABLE_NOT_OFFERED")
        self.assertTrue(report["error"]["remote"])
        self.assertIn("other", report["error"]["message"])
        wrong = self.path("wrong-secret")
        wrong.write_text("not the secret")
        wrong.chmod(0o600)
        r = self.sync(self.client_db, server, expect=EXIT_AUTH,
                      secret_file=wrong, extra=["--json"])
        report = json.loads(r.stdout)
        self.assertEqual((report["error"]["code"], report["exit_status"]),
                         ("AUTH_FAILED", EXIT_AUTH))
        self.assertEqual(self.client_db.count("cities"), 10)


def _pair_class(client, server):
    name = f"ReportTest_{client}_{server}"
    return type(name, (ReportPairTests, PairTestBase),
                {"client_backend": client, "server_backend": server,
                 "__qualname__": name})


ReportTest_sqlite_sqlite = _pair_class("sqlite", "sqlite")
ReportTest_sqlite_pg = _pair_class("sqlite", "pg")
ReportTest_pg_sqlite = _pair_class("pg", "sqlite")


class TableMappingTest(SyncTestCase):
    """--table LOCAL=REMOTE."""

    def test_sqlite_cities_with_pg_geo_cities(self):
        rows = cities()
        client = self.new_database("sqlite", "client")
        server_db = self.new_database("pg", "server")
        client.create_table("cities", rows=rows[:500])
        server_db.create_table("geo.cities", rows=rows[500:800])
        server = self.start_server(server_db, tables=("geo.cities",))
        r = self.sync(client, server, tables=("cities=geo.cities",),
                      extra=["--json"])
        (t,) = json.loads(r.stdout)["tables"]
        self.assertEqual((t["name"], t["remote"], t["rows_sent"],
                          t["rows_received"]),
                         ("cities", "geo.cities", 500, 300))
        self.assertEqual(client.rows("cities"), server_db.rows("geo.cities"))
        # The next sync, by changes, keeps the mapping's checkpoint.
        client.run_sql("DELETE FROM cities WHERE city_id = "
                       f"{rows[0][0]}")
        r = self.sync(client, server, tables=("cities=geo.cities",))
        self.assertRegex(r.stdout, r"^cities: sent 1 rows, received 0 rows")
        self.assertEqual(server_db.count("geo.cities"), 799)
        # Mappings that cannot be.
        for tables in (("cities=",), ("=geo.cities",),
                       ("cities=geo.cities", "other=geo.cities"),
                       ("cities=a", "cities=b")):
            r = self.sync(client, server, tables=tables, expect=2)
            self.assertRegex(r.stderr, r"^lipsync-client: ")


class ServerLogTest(SyncTestCase):
    """The server's log: text lines, JSON, --log-file and SIGHUP, --json."""

    def setUp(self):
        super().setUp()
        self.client = self.new_database("sqlite", "client")
        self.server_db = self.new_database("sqlite", "server")
        self.client.create_table("cities", rows=cities()[:50])
        self.server_db.create_table("cities")

    def test_text_line_has_a_timestamp(self):
        server = self.start_server(self.server_db)
        self.sync(self.client, server)
        deadline = time.monotonic() + 5
        pattern = (r"(?m)^" + TIMESTAMP + r" lipsync-server: "
                   r"127\.0\.0\.1:\d+ \[cities\] ok; 50 rows in, 0 rows out, "
                   r"\d+ bytes in, \d+ bytes out, \d+\.\d\ds$")
        while not re.search(pattern, server.stderr()):
            self.assertLess(time.monotonic(), deadline, server.stderr())
            time.sleep(0.05)

    def test_log_file_is_reopened_on_sighup(self):
        log = self.path("server.log")
        server = self.start_server(
            self.server_db, extra=["--log-format", "json", "--log-file",
                                   str(log)])
        self.sync(self.client, server)
        self.wait_lines(log, 1)
        os.rename(log, self.path("server.log.1"))
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not log.exists():
            self.assertLess(time.monotonic(), deadline, "not reopened")
            time.sleep(0.02)
        self.sync(self.client, server)
        (old,) = json_lines(self.path("server.log.1").read_text())
        (new,) = self.wait_lines(log, 1)
        self.assertEqual((old["event"], old["outcome"]), ("session", "ok"))
        self.assertEqual(old["tables"][0]["rows_received"], 50)
        self.assertEqual(new["tables"][0]["rows_received"], 0)
        self.assertTrue(server.alive())
        self.assertEqual(server.stderr(), "")  # the log went to the file

    def wait_lines(self, path, n):
        deadline = time.monotonic() + 5
        while True:
            lines = json_lines(path.read_text()) if path.exists() else []
            if len(lines) >= n:
                return lines
            self.assertLess(time.monotonic(), deadline, "no log line")
            time.sleep(0.02)

    def test_json_on_stdout(self):
        proc = subprocess.Popen(
            [str(SERVER), "--db", str(self.server_db), "--listen",
             "127.0.0.1:0", "--secret-file", str(self.secret_file),
             "--table", "cities", "--json"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=clean_env())
        try:
            first = json.loads(read_line(proc.stdout.fileno(), 10))
            self.assertEqual(first["event"], "listening")
            self.assertRegex(first["time"], "^" + TIMESTAMP + "$")

            class At:
                address = first["address"]

                def stderr(self):
                    return ""
            self.sync(self.client, At())
            session = json.loads(read_line(proc.stdout.fileno(), 10))
            self.assertEqual((session["event"], session["outcome"]),
                             ("session", "ok"))
            self.assertEqual(session["tables"][0]["name"], "cities")
            self.assertEqual(session["tables"][0]["rows_received"], 50)
            self.assertGreater(session["bytes_received"], 0)
        finally:
            self.assertEqual(stop_process(proc), 0)
            proc.stdout.close()
            proc.stderr.close()


if __name__ == "__main__":
    unittest.main()

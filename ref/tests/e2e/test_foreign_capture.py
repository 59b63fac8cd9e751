#!/usr/bin/env python3
"""Capture metadata this implementation does not own or understand (spec
LS-CAPTURE-8): another implementation's objects under the reserved prefix
_lipsync, a state table of that name with other columns, or this
implementation's own metadata of a newer layout. The sync fails with a
STORAGE error (exit 6) that names what it found, and the database does
not change. Run from the repository root:

    sh tools/pgtest.sh python3 -m unittest ref/tests/e2e/test_foreign_capture.py -v

The PostgreSQL test uses the server of $LIPSYNC_PG_CONNINFO and fails
without it, like the other end-to-end tests. Standard library only.
"""

import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lipsync_harness import (  # noqa: E402
    CLIENT, EXIT_DATABASE, PgDatabase, SyncTestCase, cities, clean_env,
    connect, create_cities_table, dump, new_pg_name)


class ForeignCaptureTest(SyncTestCase):
    def setUp(self):
        super().setUp()
        self.cities = cities()
        self.client = self.path("client.db")
        self.server_db = self.path("server.db")
        create_cities_table(self.client, rows=self.cities[:30])
        create_cities_table(self.server_db, rows=self.cities[30:60])
        self.server = self.start_server(self.server_db)

    def refused(self, db, found):
        """A sync of |db| fails with exit 6 naming |found|; the database
        (its schema and every row of every table) does not change."""
        before = dump(db)
        r = self.sync(db, self.server, expect=EXIT_DATABASE)
        self.assertIn(found, r.stderr)
        self.assertIn("does not own or understand", r.stderr)
        self.assertIn("nothing was changed", r.stderr)
        self.assertEqual(dump(db), before, "the database changed")
        self.drop_refused(db, found, lambda: dump(db))
        return r

    def drop_refused(self, db, found, snapshot):
        """--drop-capture refuses it too (LipSync removes only its own
        metadata), and changes nothing."""
        before = snapshot()
        r = subprocess.run([str(CLIENT), "--db", str(db), "--drop-capture",
                            "--all-tables"], capture_output=True, text=True,
                           env=clean_env(), timeout=60)
        self.assertEqual(r.returncode, EXIT_DATABASE, r.stderr)
        self.assertIn(found, r.stderr)
        self.assertRegex(r.stderr, "does not (own or )?understand")
        self.assertEqual(r.stdout, "")
        self.assertEqual(snapshot(), before, "the database changed")

    def sql(self, db, *statements):
        conn = connect(db)
        for st in statements:
            conn.execute(st)
        conn.commit()
        conn.close()

    def test_another_implementations_table(self):
        self.sql(self.client, "CREATE TABLE _lipsync_items (uuid TEXT,"
                 " clock INTEGER, site BLOB, deleted INTEGER)")
        self.refused(self.client, "table _lipsync_items")

    def test_another_implementations_trigger(self):
        self.sql(self.client, "CREATE TRIGGER \"_LipSync_capture\" AFTER"
                 " INSERT ON cities BEGIN SELECT 1; END")
        self.refused(self.client, "trigger _LipSync_capture")

    def test_state_table_of_another_shape(self):
        self.sql(self.client, "CREATE TABLE _lipsync_state (id INTEGER"
                 " PRIMARY KEY, version TEXT)")
        self.refused(self.client, "_lipsync_state without column site")

    def test_newer_layout(self):
        self.sync(self.client, self.server)
        self.sql(self.client, "UPDATE _lipsync_state SET layout = 99")
        self.refused(self.client, "layout 99")
        # On the server's side the client gets the server's reason.
        self.sql(self.client, "UPDATE _lipsync_state SET layout = 3")
        self.sync(self.client, self.server)
        self.sql(self.server_db, "UPDATE _lipsync_state SET layout = 99")
        before = dump(self.server_db)
        r = self.sync(self.client, self.server, expect=EXIT_DATABASE)
        self.assertIn("peer: the database holds table _lipsync_state of"
                      " layout 99", r.stderr)
        self.assertEqual(dump(self.server_db), before)

    def test_postgresql_newer_layout(self):
        db = PgDatabase(new_pg_name("foreign"))
        self.addCleanup(db.drop)
        db.create_table("cities", rows=self.cities[:20])
        self.sync(db.dsn, self.server)
        db.sql("UPDATE _lipsync.state SET layout = 99")
        before = db.snapshot()
        r = self.sync(db.dsn, self.server, expect=EXIT_DATABASE)
        self.assertIn("layout 99", r.stderr)
        self.assertIn("nothing was changed", r.stderr)
        self.assertEqual(db.snapshot(), before)
        self.drop_refused(db.dsn, "layout 99", db.snapshot)

    def test_postgresql_foreign_objects(self):
        db = PgDatabase(new_pg_name("foreign"))
        self.addCleanup(db.drop)
        db.create_table("cities", rows=self.cities[:20])
        for setup, found in (
                ("CREATE TABLE public._lipsync_items (uuid uuid)",
                 "table public._lipsync_items"),
                ("CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS"
                 " 'BEGIN RETURN NEW; END'; CREATE TRIGGER"
                 " \"_LipSync_capture\" AFTER INSERT ON cities FOR EACH ROW"
                 " EXECUTE FUNCTION f()", "trigger _LipSync_capture"),
                ("CREATE SCHEMA _lipsync_x", "schema _lipsync_x")):
            with self.subTest(found=found):
                db.sql(setup)
                before = db.snapshot()
                r = self.sync(db.dsn, self.server, expect=EXIT_DATABASE)
                self.assertIn(found, r.stderr)
                self.assertIn("nothing was changed", r.stderr)
                self.assertEqual(db.snapshot(), before)
                self.drop_refused(db.dsn, found, db.snapshot)
                db.sql("DROP TABLE IF EXISTS public._lipsync_items;"
                       " DROP TRIGGER IF EXISTS \"_LipSync_capture\" ON"
                       " cities; DROP SCHEMA IF EXISTS _lipsync_x")
        self.sync(db.dsn, self.server)


if __name__ == "__main__":
    unittest.main()

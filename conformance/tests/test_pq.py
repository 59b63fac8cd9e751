"""Self-tests of lsconf.pq, the harness's in-process libpq client: what it
returns is what psql -At returned before it, statement for statement.
They need a PostgreSQL server (LIPSYNC_PG_CONNINFO, as `make check` sets);
without one they skip and say so."""

import os
import shutil
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lsconf import databases as D, pq  # noqa: E402

CONNINFO = os.environ.get("LIPSYNC_PG_CONNINFO", "").strip()


@unittest.skipUnless(CONNINFO, "LIPSYNC_PG_CONNINFO is not set: no "
                     "PostgreSQL server to run SQL on (make check sets it)")
@unittest.skipUnless(pq.available(), "libpq cannot be loaded (libpq5)")
class InProcessLibpq(unittest.TestCase):
    def setUp(self):
        self.db = D.PgDatabase("pqtest")
        self.addCleanup(self.db.drop)

    def via_psql(self, sql, stdin=None):
        if shutil.which("psql") is None:
            self.skipTest("psql not installed: nothing to compare with")
        saved = pq._lib
        pq._lib = False          # as if libpq did not load
        try:
            return D.psql(self.db.conninfo, sql, stdin)
        finally:
            pq._lib = saved

    def test_rows_as_psql_prints_them(self):
        D.psql(self.db.conninfo, "CREATE TABLE t (a int, b text, c bytea)")
        D.psql(self.db.conninfo, "COPY t (a, b, c) FROM STDIN",
               stdin="1\tZ\u00fcrich\t\\\\x00ff\n\\N\t\\N\t\\N\n"
                     "3\t\t\\\\x\n".encode())
        sql = "SELECT a, b, c FROM t ORDER BY a NULLS LAST"
        got = D.psql(self.db.conninfo, sql)
        self.assertEqual(got, "1\x1fZ\u00fcrich\x1f\\x00ff\n"
                              "3\x1f\x1f\\x\n\x1f\x1f\n")
        self.assertEqual(got, self.via_psql(sql))
        # Several statements: the last one's rows, as psql -c gives them.
        sql = "UPDATE t SET a = a + 1; SELECT count(*), sum(a) FROM t"
        self.assertEqual(D.psql(self.db.conninfo, sql), "3\x1f6\n")

    def test_errors_name_the_statement_and_keep_the_connection(self):
        with self.assertRaises(D.HarnessError) as e:
            D.psql(self.db.conninfo, "SELECT * FROM no_such_table")
        self.assertIn("no_such_table", str(e.exception))
        self.assertEqual(D.psql(self.db.conninfo, "SELECT 1"), "1\n")
        self.assertEqual(D.psql(self.db.conninfo, "SELECT bad", check=False),
                         "")
        D.psql(self.db.conninfo, "CREATE TABLE u (a int)")
        with self.assertRaises(D.HarnessError) as e:
            D.psql(self.db.conninfo, "COPY u FROM STDIN", stdin=b"x\n")
        self.assertIn("invalid input syntax", str(e.exception))
        self.assertEqual(D.psql(self.db.conninfo, "SELECT count(*) FROM u"),
                         "0\n")

    def test_a_connection_the_server_ended_is_replaced(self):
        pid = D.psql(self.db.conninfo, "SELECT pg_backend_pid()").strip()
        # The timeout: returns once the backend is gone (PostgreSQL 14).
        D.psql(self.db.admin, f"SELECT pg_terminate_backend({pid}, 10000)")
        self.assertEqual(D.psql(self.db.conninfo, "SELECT 1"), "1\n")
        self.assertNotEqual(
            D.psql(self.db.conninfo, "SELECT pg_backend_pid()").strip(), pid)

    def test_session_settings_are_the_harness_options(self):
        self.assertEqual(D.psql(self.db.conninfo, "SHOW TimeZone"), "UTC\n")
        self.assertEqual(D.psql(self.db.conninfo, "SHOW extra_float_digits"),
                         "3\n")

    def test_a_database_with_a_kept_connection_can_be_cloned_and_dropped(
            self):
        D.psql(self.db.conninfo, "CREATE TABLE t (a int)")
        D.psql(self.db.conninfo, "INSERT INTO t VALUES (7)")
        self.db.save("before")      # the database is the template: no session
        D.psql(self.db.conninfo, "DELETE FROM t")
        self.db.restore("before")   # dropped while this thread had a session
        self.assertEqual(D.psql(self.db.conninfo, "SELECT a FROM t"), "7\n")


if __name__ == "__main__":
    unittest.main()

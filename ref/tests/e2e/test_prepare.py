#!/usr/bin/env python3
"""lipsync-client prepares its tables (UUIDs, change capture) before it
connects (lipsync_session_prepare), so the server never waits for that
local work: a first sync whose preparation takes longer than the server's
--timeout still goes through, and a preparation that fails, or a
connection that fails after it, leaves the client's database as it was.
Run from the repository root:

    python3 -m unittest ref/tests/e2e/test_prepare.py -v

The first test runs the fault-injection build of the client
(build/fault/bin, or $LIPSYNC_FAULT_BIN: make
build/fault/bin/lipsync-client), which sleeps where it begins to prepare;
it fails, never skips, when that build is missing. Standard library only.
"""

import json
import os
import socket
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lipsync_harness import (  # noqa: E402
    EXIT_OK, EXIT_PEER, EXIT_SCHEMA, FAULT_CLIENT, SANITIZER_RE, SyncTestCase,
    cities, city_rows, clean_env, connect, create_cities_table, run_client)

# The client sleeps this long where it begins to prepare; the server's
# --timeout is far shorter.
STALL_MS = 2500
SERVER_TIMEOUT_S = 1


def dump(path):
    """Every schema object and row of the SQLite database at |path| (its
    journal mode aside, which opening it may set to WAL)."""
    db = connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def closed_port():
    """A loopback port nobody listens on (just released by the system)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClientPrepareTest(SyncTestCase):
    def setUp(self):
        super().setUp()
        self.cities = cities()
        self.client = self.path("client.db")
        self.server_db = self.path("server.db")
        create_cities_table(self.client, rows=self.cities[:2000])
        create_cities_table(self.server_db, rows=self.cities[2000:2100])

    def run_client(self, address, binary=None, env=None, tables=("cities",)):
        r = run_client(self.client, address, tables, self.secret_file,
                       env=env, binary=binary)
        self.assertNotRegex(r.stderr, SANITIZER_RE)
        return r

    def test_server_does_not_wait_for_the_preparation(self):
        if not os.access(FAULT_CLIENT, os.X_OK):
            self.fail(f"{FAULT_CLIENT} is missing: build the fault-injection "
                      "binaries (make build/fault/bin/lipsync-client) or set "
                      "LIPSYNC_FAULT_BIN")
        server = self.start_server(
            self.server_db,
            extra=["--timeout", str(SERVER_TIMEOUT_S), "--log-format", "json"])
        r = self.run_client(
            server.address, binary=FAULT_CLIENT,
            env=clean_env(LIPSYNC_FAULT_STALL=f"prepare:1:{STALL_MS}"))
        self.assertEqual(r.returncode, EXIT_OK,
                         f"client: {r.stderr}\nserver: {server.stderr()}")
        self.assertSynced(self.client, self.server_db)
        self.assertEqual(len(city_rows(self.client)), 2100)
        # The server's session began after the client's preparation: it
        # lasted less than the stall (and its timeout).
        self.assertEqual(server.stop(), 0)
        sessions = [e for e in map(json.loads, server.stderr().splitlines())
                    if e.get("event") == "session"]
        self.assertEqual([e["outcome"] for e in sessions], ["ok"],
                         server.stderr())
        self.assertLess(sessions[0]["seconds"], STALL_MS / 1000,
                        server.stderr())

    def test_failed_connection_leaves_the_database_as_it_was(self):
        # A first sync prepares (a UUID column, capture) in the sync's
        # transaction: a server that cannot be reached rolls it back.
        before = dump(self.client)
        r = self.run_client(f"127.0.0.1:{closed_port()}")
        self.assertEqual(r.returncode, EXIT_PEER, r.stderr)
        self.assertRegex(r.stderr, r"(?i)connect")
        self.assertEqual(dump(self.client), before)

    def test_failed_preparation_does_not_connect(self):
        # A table this database lacks is found before connecting: its
        # error, not the missing server's.
        before = dump(self.client)
        r = self.run_client(f"127.0.0.1:{closed_port()}",
                            tables=("cities", "nowhere"))
        self.assertEqual(r.returncode, EXIT_SCHEMA, r.stderr)
        self.assertRegex(r.stderr, r"nowhere")
        self.assertNotRegex(r.stderr, r"(?i)refused")
        self.assertEqual(dump(self.client), before)


if __name__ == "__main__":
    unittest.main()

"""Authenticated peers that misbehave: lipsync-server against a client that
holds the secret, then stalls, or sends rows without end.

A peer that knows the secret is trusted with the data, not with the
server's memory or time: a session that goes silent ends after --timeout
(spec LS-TIME-1), and one whose frames would make the server buffer more
than --max-session-memory fails with RESOURCE_LIMIT (spec LS-SEC-4). In
both cases the server's database is unchanged and other clients go on.

The scripted client is the conformance suite's (conformance/lsconf): it
speaks the handshake and OpenTables from the spec, then sends what the
test wants. Plaintext, so that it needs no TLS stack.
"""

import os
import re
import struct
import subprocess
import sys
import threading
import time
import unittest

from lipsync_harness import (  # noqa: E402
    CITY_COLUMNS,
    EXIT_OK,
    REPO_ROOT,
    SyncTestCase,
    cities,
    create_cities_table,
    client_args,
    clean_env,
    dump,
)

sys.path.insert(0, str(REPO_ROOT / "conformance"))
from lsconf import pbwire, peers  # noqa: E402

CANONICAL = {"INTEGER": "integer", "TEXT": "text", "REAL": "real"}
ERROR_CODES = {name: code for code, name in pbwire.ERROR_CODES.items()}
MAX_FRAME = 16 * 1024 * 1024


class RowsFrames:
    """Rows frames of table 0 with new random UUIDs, built fast: one Row
    is encoded with pbwire, and each frame repeats it with other UUIDs."""

    def __init__(self, columns, text_bytes):
        values = {}
        for name, ctype in columns:
            values[name] = {"integer": 7, "real": 1.5,
                            "text": "x" * text_bytes}[ctype]
        self.placeholder = b"\xa5" * 16
        row = {"uuid": self.placeholder,
               "values": [pbwire.value_msg(values[n]) for n, _ in columns],
               "version": {"clock": (int(time.time() * 1000) << 16),
                           "site": b"\x42" * 16}}
        self.row = pbwire.encode("Row", row)
        self.at = self.row.index(self.placeholder)
        self.entry = len(pbwire.varint(len(self.row))) + 1 + len(self.row)

    def frame(self, size):
        """A frame of at most |size| bytes (prefix included)."""
        n = max(1, (size - 16) // self.entry)
        head, tail = self.row[:self.at], self.row[self.at + 16:]
        prefix = b"\x12" + pbwire.varint(len(self.row)) + head
        rows = b"".join(prefix + os.urandom(16) + tail for _ in range(n))
        payload = b"\x42" + pbwire.varint(len(rows)) + rows  # Frame.rows = 8
        return struct.pack(">I", len(payload)) + payload, n


class HostileClientTest(SyncTestCase):
    def setUp(self):
        super().setUp()
        self.cities = cities()
        self.server_db = self.path("server.db")
        create_cities_table(self.server_db, rows=self.cities[:2000])
        self.client_db = self.path("client.db")
        create_cities_table(self.client_db, rows=self.cities[2000:2100])
        self.columns = peers.canonical_order(
            [(n, CANONICAL[t]) for n, t in CITY_COLUMNS])

    def authenticate(self, server):
        """A scripted client past the handshake and OpenTables."""
        conn = peers.connect(f"127.0.0.1:{server.port}", timeout=30)
        self.addCleanup(conn.close)
        cs = peers.ClientSession(conn, self.secret.encode())
        cs.handshake()
        r = cs.open_tables([("cities", self.columns)])
        self.assertEqual(r.body, "tables_opened", r.describe())
        return conn

    def real_client(self):
        """Starts a real client's sync in the background."""
        proc = subprocess.Popen(
            client_args(self.client_db, self.server.address, ["cities"],
                        self.secret_file, ["--plaintext", "--retries", "10"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=clean_env())
        self.addCleanup(proc.kill)
        return proc

    def finish(self, proc):
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, EXIT_OK, err + self.server.stderr())
        self.assertSynced(self.client_db, self.server_db)

    def test_stalled_session_is_cut_off_by_timeout(self):
        """A client that authenticates, opens its table and then says
        nothing is sent TIMEOUT after --timeout; a real client that came
        meanwhile (and waited for the database's write lock) syncs."""
        self.server = self.start_server(
            self.server_db, extra=["--plaintext", "--timeout", "2"])
        before = dump(self.server_db)
        conn = self.authenticate(self.server)
        start = time.monotonic()
        proc = self.real_client()
        r = conn.recv(timeout=20)
        waited = time.monotonic() - start
        self.assertTrue(r.is_error([ERROR_CODES["TIMEOUT"]]), r.describe())
        self.assertGreater(waited, 1.5)
        self.assertLess(waited, 10)
        self.assertIn(conn.wait_close(10).kind, ("eof", "reset"))
        self.finish(proc)
        self.assertNotEqual(dump(self.server_db), before)
        self.assertTrue(self.server.alive())

    @staticmethod
    def flood(conn, frames, frame_size, stop):
        """Sends Rows frames of |frame_size| bytes until the server stops
        reading or |stop| is set."""
        while not stop.is_set():
            raw, _ = frames.frame(frame_size)
            if not conn.send(raw, decoded="Rows"):
                break
            conn.records.clear()

    def run_flood(self, frame_size, text_bytes, limit_mib):
        """Floods a server bounded to |limit_mib| MiB a session; checks the
        session fails with RESOURCE_LIMIT and changes nothing, and that a
        real client syncs after; returns the rows the server took in."""
        self.server = self.start_server(
            self.server_db,
            extra=["--plaintext", "--max-session-memory", str(limit_mib)])
        before = dump(self.server_db)
        conn = self.authenticate(self.server)
        frames = RowsFrames(self.columns, text_bytes)
        stop = threading.Event()
        sender = threading.Thread(
            target=self.flood, args=(conn, frames, frame_size, stop),
            daemon=True)
        sender.start()
        r = conn.recv(timeout=120)
        stop.set()
        sender.join(30)
        self.assertTrue(r.is_error([ERROR_CODES["RESOURCE_LIMIT"]]),
                        r.describe() + "\n" + self.server.stderr())
        self.assertIn("memory limit", r.msg.get("message", ""))
        self.assertEqual(dump(self.server_db), before)
        self.assertTrue(self.server.alive())
        failed = re.search(r"failed \(resource limit exceeded\).*; "
                           r"(\d+) rows in,", self.server.stderr())
        self.assertIsNotNone(failed, self.server.stderr())
        # Other sessions go on.
        self.finish(self.real_client())
        return int(failed.group(1))

    def test_maximum_size_frames_are_refused_by_the_memory_bound(self):
        """Frames of the maximum size full of small rows: one decodes into
        more than a 64 MiB bound allows, so the first one ends the
        session with RESOURCE_LIMIT."""
        self.run_flood(MAX_FRAME - 64, 1, 64)

    def test_rows_forever_are_cut_off_by_the_memory_bound(self):
        """Rows without end, in frames of 64 KiB (a thousand rows, as the
        reference sends them): the server holds them back up to a quarter
        of its 16 MiB bound, then writes them through, but still has to
        remember every UUID received; the session ends with RESOURCE_LIMIT
        once that passes the bound, and the server's database is
        unchanged."""
        rows_in = self.run_flood(64 * 1024, 1, 16)
        # Past what a quarter of the bound holds (some 50,000 such rows):
        # the rows after it were written through, then rolled back.
        self.assertGreater(rows_in, 100000)


if __name__ == "__main__":
    unittest.main()

#!/usr/bin/env python3
"""One table, several servers (spec LS-INC-26): a client that syncs one
table with two servers in turn keeps every row. Its last sync is the
other server's, so it must not be judged stale against this one: the
implicit tombstone T0 (LS-TOMB-5) would delete the rows this server never
had. Run from the repository root:

    python3 -m unittest ref/tests/e2e/test_servers.py -v

Standard library only.
"""

import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lipsync_harness import (  # noqa: E402
    SyncTestCase, add_cities, cities, city_rows, connect,
    create_cities_table, parse_summary)


class TwoServersTest(SyncTestCase):
    def setUp(self):
        super().setUp()
        self.cities = cities()
        self.client = self.path("client.db")
        self.a = self.path("a.db")
        self.b = self.path("b.db")
        create_cities_table(self.client, rows=self.cities[:20])
        create_cities_table(self.a, rows=self.cities[20:40])
        create_cities_table(self.b, rows=self.cities[40:60])

    def start(self, db, retention="30d"):
        return self.start_server(
            db, extra=["--tombstone-retention", retention])

    def test_alternating_servers_lose_no_row(self):
        # B keeps tombstones 1 ms: the client's last sync (with A) is
        # below B's horizon, so against B's clock alone it looks stale.
        a, b = self.start(self.a), self.start(self.b, "1ms")
        self.sync(self.client, a)
        self.assertEqual(len(city_rows(self.client)), 40)
        time.sleep(0.05)
        r = self.sync(self.client, b)
        # The 40 rows of the client (20 its own, 20 from A) reach B, and
        # B's 20 reach the client: nothing is deleted.
        self.assertEqual(parse_summary(r.stdout)["cities"], (40, 20))
        self.assertSynced(self.client, self.b)
        self.assertEqual(len(city_rows(self.client)), 60)
        # Back to A, then B again: each converges to the union.
        add_cities(self.client, self.cities[60:65])
        self.sync(self.client, a)
        self.assertSynced(self.client, self.a)
        self.assertEqual(len(city_rows(self.a)), 65)
        time.sleep(0.05)
        self.sync(self.client, b)
        self.assertSynced(self.client, self.b)
        self.assertEqual(len(city_rows(self.b)), 65)

    def test_deletes_still_travel(self):
        # A delete made on the client between the two servers reaches B
        # only if B had the row; one from A reaches the client.
        a, b = self.start(self.a), self.start(self.b)
        self.sync(self.client, a)
        self.sync(self.client, b)
        self.sync(self.client, a)
        for path in (self.client, self.a, self.b):
            self.assertEqual(len(city_rows(path)), 60)
        db = connect(self.a)
        db.execute("DELETE FROM cities WHERE city_id = ?",
                   (self.cities[45][0],))
        db.commit()
        db.close()
        self.sync(self.client, a)
        self.sync(self.client, b)
        for path in (self.client, self.a, self.b):
            ids = {r[0] for r in city_rows(path)}
            self.assertEqual(len(ids), 59, path.name)
            self.assertNotIn(self.cities[45][0], ids)


if __name__ == "__main__":
    unittest.main()

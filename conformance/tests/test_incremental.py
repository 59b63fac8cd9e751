"""The scripted peers of the feature incremental (spec 8.8) against each
other: a ScriptedClient and a ScriptedServer keep checkpoints across
sessions, exchange only changed items, and reach the same tables as a
range reconciliation would. These check the harness's own logic, which the
wire tests then hold an implementation to.

Run: python3 -m unittest discover -s conformance/tests  (from the repo root)
"""

import socket
import sys
import threading
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "conformance"))

from lsconf import pbwire, peers  # noqa: E402

COLS = [("k", "integer"), ("v", "text")]
SECRET = b"a shared secret for the tests"


def table(rows, salt=b"t"):
    return peers.TableData("t", COLS, [
        (peers.uuid_bytes(k, salt), {"k": k, "v": v}) for k, v in rows])


def contents(t):
    """{uuid: (k, v)} of the live rows of a TableData."""
    return {u: tuple(pbwire.value_py(x) for x in vals)
            for u, vals in t.rows.items()}


class Session:
    """One session between a ScriptedClient and a ScriptedServer over a
    socket pair: .client (ClientSync), .server (ServerRun), .server_result
    (SyncResult), and the frames each received."""

    def __init__(self, client, server, client_kw=None, open_kw=None,
                 checkpoints=None, server_drive=None):
        a, b = socket.socketpair()
        self.client_frames, self.server_frames = [], []
        ca = peers.Conn(a, 5, self.client_frames)
        cb = peers.Conn(b, 5, self.server_frames)
        self.server = server.session(cb, SECRET)
        self.server.mutate_checkpoints = checkpoints
        self.problem = None
        out = {}

        def serve():
            try:
                self.server.handshake()
                self.problem = self.server.open(**(open_kw or {}))
                if self.problem is None:
                    out["s"] = self.server.drive(**(server_drive or {}))
            except peers.HandshakeFailed as e:
                self.problem = str(e)
            cb.close()      # a server that gave up ends the client's wait
        th = threading.Thread(target=serve)
        th.start()
        self.client = client.sync(ca, SECRET, **(client_kw or {}))
        ca.close()
        th.join(10)
        self.server_result = out.get("s")

    def received(self, who, body):
        """Decoded bodies of |body| that |who| ("client", "server")
        received."""
        recs = self.client_frames if who == "client" else self.server_frames
        out = []
        for r in recs:
            if r.direction != "received" or len(r.raw) < 4:
                continue
            b, m = pbwire.body_of(pbwire.decode_payload(r.raw[4:]))
            if b == body:
                out.append(m)
        return out


class Incremental(unittest.TestCase):
    def setUp(self):
        self.client = peers.ScriptedClient([table(
            [(1, "one"), (2, "two"), (3, "three")], b"c")])
        self.server = peers.ScriptedServer([table(
            [(11, "eleven"), (12, "twelve")], b"s")])

    def sync(self, **kw):
        s = Session(self.client, self.server, **kw)
        self.assertIsNone(s.problem)
        self.assertEqual(s.client.result.ending, "committed",
                         s.client.result.what)
        self.assertEqual(s.server_result.ending, "committed")
        c, sv = self.client.tables[0], self.server.tables[0]
        self.assertEqual(contents(c), contents(sv))
        self.assertEqual(c.state(), sv.state())
        return s

    def test_first_session_gives_checkpoints(self):
        s = self.sync()
        self.assertEqual(s.client.server_hello["features"], ["incremental"])
        self.assertEqual(s.client.opened["server_site"], self.server.site)
        self.assertEqual(s.client.opened["incremental"], [])
        self.assertEqual(s.client.open_msg["client_site"], self.client.site)
        self.assertNotIn("checkpoint", s.client.open_msg["tables"][0])
        (cp,) = s.client.committed["checkpoints"]
        self.assertEqual(cp["server_site"], self.server.site)
        self.assertEqual(len(cp["token"]), 16)
        self.assertEqual(self.client.checkpoints["t"]["token"], cp["token"])
        self.assertEqual(len(contents(self.client.tables[0])), 5)

    def test_changes_only(self):
        self.sync()
        c, sv = self.client.tables[0], self.server.tables[0]
        u = {k: c.uuid_of("k", k) for k in (1, 2, 3, 11, 12)}
        self.client.change(0, u[1], {"k": 1, "v": "one, client"})
        self.client.change(0, u[2], deleted=True)
        new_c = peers.uuid_bytes(4, b"c")
        self.client.change(0, new_c, {"k": 4, "v": "four"})
        # u3: changed on both sides, the server later: it wins (lww)
        self.client.change(0, u[3], {"k": 3, "v": "three, client"})
        self.server.change(0, u[3], {"k": 3, "v": "three, server"},
                           clock=c.meta[u[3]].version[0] + 1)
        self.server.change(0, u[11], {"k": 11, "v": "eleven, server"})
        self.server.change(0, u[12], deleted=True)
        s = self.sync()
        self.assertEqual(s.client.opened["incremental"], [0])
        self.assertEqual([b for b, _ in s.client.first_turn], ["changes"])
        sent = [i["uuid"] for i in s.client.first_turn[0][1]["items"]]
        self.assertEqual(sent, sorted([u[1], u[2], new_c, u[3]]))
        # the server's answer: Need for the client's wins, Rows for its
        # own, Changes for its other changed items
        (need,) = s.received("client", "need")
        self.assertEqual(need["uuids"], sorted([u[1], u[2], new_c]))
        (need,) = s.received("server", "need")
        self.assertEqual(need["uuids"], sorted([u[11], u[12]]))
        (changes,) = s.received("client", "changes")
        self.assertEqual([i["uuid"] for i in changes["items"]],
                         sorted([u[11], u[12]]))
        self.assertEqual(s.received("client", "ranges"), [])
        self.assertEqual(s.received("server", "ranges"), [])
        want = {u[1]: (1, "one, client"), u[3]: (3, "three, server"),
                new_c: (4, "four"), u[11]: (11, "eleven, server")}
        self.assertEqual(contents(c), want)
        self.assertTrue(c.meta[u[12]].deleted and sv.meta[u[2]].deleted)
        # nothing changed since: an incremental session with an empty
        # first turn, which is not quiet, and an empty answer, which is
        token = self.client.checkpoints["t"]["token"]
        s = self.sync()
        self.assertEqual(s.client.first_turn, [])
        self.assertEqual(s.received("client", "changes"), [])
        self.assertEqual(self.client.checkpoints["t"]["token"], token)

    def test_policies(self):
        self.sync()
        c = self.client.tables[0]
        u = c.uuid_of("k", 1)
        for policy, later, want in ((peers.SERVER_WINS, "client",
                                     "server"),
                                    (peers.CLIENT_WINS, "server", "client"),
                                    (peers.LWW, "client", "client")):
            with self.subTest(policy):
                first, second = ((self.server, self.client)
                                 if later == "client" else
                                 (self.client, self.server))
                clock = peers.now_clock() + (1 << 20)
                first.change(0, u, {"k": 1, "v": "a"}, clock=clock)
                second.change(0, u, {"k": 1, "v": "b"}, clock=clock + 1)
                s = self.sync(client_kw={"policy": policy})
                self.assertEqual(s.client.opened["incremental"], [0])
                v = contents(c)[u][1]
                self.assertEqual(v, "b" if want == later else "a")

    def test_refused_checkpoints_reconcile_with_ranges(self):
        self.sync()
        cp = self.client.checkpoints["t"]
        good = dict(cp)
        for field, bad in (("token", b"\x01" * 16),
                           ("server_site", b"\x02" * 16),
                           ("server_position", b"\xff" * 1024)):
            with self.subTest(field):
                self.client.checkpoints["t"] = dict(good, **{field: bad})
                self.client.change(0, peers.uuid_bytes(50 + len(field)),
                                   {"k": 50, "v": field})
                s = self.sync()
                self.assertEqual(s.client.opened["incremental"], [])
                self.assertEqual([b for b, _ in s.client.first_turn],
                                 ["ranges"])
                good = dict(self.client.checkpoints["t"])

    def test_stale_session_is_not_incremental(self):
        self.sync()
        self.server.retention_ms = 0
        s = self.sync()
        self.assertEqual(s.client.opened["incremental"], [])

    def test_feature_declined_or_not_offered(self):
        self.sync()
        self.server.feature = False
        s = self.sync()
        self.assertEqual(s.client.server_hello["features"], [])
        self.assertNotIn("client_site", s.client.open_msg)
        self.assertNotIn("checkpoint", s.client.open_msg["tables"][0])
        self.assertEqual(s.client.committed, {"checkpoints": []})
        self.server.feature = True
        s = self.sync(client_kw={"feature": False})
        self.assertEqual(s.client.server_hello["features"], [])

    def test_malformed_checkpoint_is_none(self):
        def short_token(cps):
            return [dict(cp, token=cp["token"][:3]) for cp in cps]
        self.sync(checkpoints=short_token)
        self.assertNotIn("t", self.client.checkpoints)
        s = self.sync()
        self.assertNotIn("checkpoint", s.client.open_msg["tables"][0])

    def test_bad_tables_opened_refused_by_client(self):
        self.sync()
        for inc, present in (([0, 0], True), ([1], True), ([0], False)):
            with self.subTest(inc=inc, present=present):
                s = Session(self.client, self.server,
                            client_kw={"present": present},
                            open_kw={"mutate_opened": lambda o, inc=inc:
                                     dict(o, incremental=inc)})
                self.assertEqual(s.client.result.ending, "broken")
                self.assertIn("incremental", s.client.result.what)

    def test_bad_client_site_refused_by_server(self):
        for site in (b"", b"\x01" * 15):
            with self.subTest(len(site)):
                self.client.site = site
                s = Session(self.client, self.server)
                self.assertIn("client_site", s.problem)
                self.assertEqual(s.client.result.ending, "error")

    def test_changes_rules_checked(self):
        self.sync()
        c = self.client.tables[0]
        u = c.uuid_of("k", 1)
        self.client.change(0, u, {"k": 1, "v": "x"})
        item = {"uuid": u, "version": {"clock": 5 << 16,
                                       "site": b"\x01" * 16}}
        cases = {
            "ranges": lambda ft: ft + [("ranges", {"table": 0, "ranges": [
                {"lower": b"", "upper": b"", "items": {"items": []}}]})],
            "unordered": lambda ft: [("changes", {"table": 0, "items": [
                dict(item, uuid=b"\x02" * 16), dict(item, uuid=b"\x01" * 16)
            ]})],
            "short uuid": lambda ft: [("changes", {"table": 0, "items": [
                dict(item, uuid=b"\x02" * 15)]})],
            "no version": lambda ft: [("changes", {"table": 0, "items": [
                {"uuid": u}]})],
            "table index": lambda ft: [("changes", {"table": 3,
                                                    "items": []})],
        }
        for name, first_turn in cases.items():
            with self.subTest(name):
                s = Session(self.client, self.server,
                            client_kw={"first_turn": first_turn})
                self.assertEqual(s.server_result.ending, "broken",
                                 s.server_result.what)
        # a Changes frame for a table that is not incremental
        self.client.checkpoints.clear()
        s = Session(self.client, self.server, client_kw={
            "first_turn": lambda ft: ft + [("changes", {"table": 0,
                                                        "items": []})]})
        self.assertIn("not incremental", s.server_result.what)

    def test_drift_surfaces_as_verify_failed(self):
        """A change that escapes the change positions (as a write without
        capture would) is not listed: the whole-table Verify catches it
        (LS-INC-15)."""
        self.sync()
        c = self.client.tables[0]
        u = c.uuid_of("k", 2)
        st = c.meta[u]
        st.version = (st.version[0] + 1, st.version[1])
        st.base = st.version
        s = Session(self.client, self.server)
        self.assertEqual(s.server_result.ending, "sent_error")
        self.assertEqual(s.server_result.what, "VERIFY_FAILED")


if __name__ == "__main__":
    unittest.main()

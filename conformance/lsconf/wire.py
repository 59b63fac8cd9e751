"""Wire tests: scripted bad peers that test an implementation through its
network protocol (spec/lipsync.md sections 3 to 12).

"wire/server/..." tests run the implementation as a server and talk to it
with a scripted client; "wire/client/..." tests run it as a client against
a scripted server. Every case uses one fresh connection (the replay case
uses two servers), checks the frames the implementation sends (the right
Error code, then the close) and, where the spec says so, that its database
is unchanged.

Acceptable outcomes follow the spec's wording. "Fail with CODE" (1.3)
means: send one Error with that code, close, roll back; so where the spec
says MUST fail with a code, a close without the Error fails the test. Where
the spec lets the receiver choose (a truncated frame, LS-FRAME-10; a client
whose decision failed, LS-COMMIT-5) the test accepts either.

The tests are one table, in wire_cases.py: each entry gives a test's name,
requirement IDs, role and description, and how it runs: a case kind (a
generic runner with the case's data: the frames sent or the mutation, the
Error codes accepted, the expected behaviour in words), or, for a test with
logic of its own, its function here. This module holds those functions and
the scaffolding they and the case kinds share.
"""

import os
import time

from . import pbwire
from . import peers
from .core import Outcome, failed, passed
from .peers import (ClientSession, Reconciler, ServerSession, TableData,
                    client_mac, expect_error_close, server_mac)

C = pbwire.CODES
TABLE = "cities"
COLUMNS = [("name", "text"), ("pop", "integer"), ("area", "real")]
SERVER_ROWS = [["Zürich", 421878, 87.88], ["東京", 14047594, 2194.07]]
CLIENT_ROWS = [["Genève", 203856, 15.93], ["St. Gallen", -1, None],
               ["Lyon", None, -0.5]]


class Case:
    """Per-test state: the frames exchanged and helpers to conclude."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.records = []
        self.notes = []

    def fail(self, message, expected="", actual=""):
        return failed(message, expected, actual or message, self.records)

    def ok(self, message=""):
        o = passed(message)
        o.frames = list(self.records)
        return o

    def connect(self, address):
        return peers.connect(address, self.ctx.timeout, self.records)


def _db_with_table(ctx, name, table=TABLE, columns=COLUMNS, rows=()):
    db = ctx.database(_backend(ctx, "server" if name == "server" else
                               "client"), name)
    db.create_table(table, list(columns))
    if rows:
        db.insert(table, [list(r) for r in rows])
    return db


def _backend(ctx, role):
    pair = getattr(ctx, "backend_pair", None) or ("sqlite", "sqlite")
    return pair[1] if role == "server" else pair[0]


def _server(ctx, tables=(TABLE,), rows=SERVER_ROWS, extra_tables=(),
            all_tables=False):
    """A server database with |TABLE| (and |extra_tables|), started."""
    db = _db_with_table(ctx, "server", rows=rows)
    for t in extra_tables:
        db.create_table(t, list(COLUMNS))
    srv = ctx.start_server(ctx.impl, db, list(tables), all_tables=all_tables)
    return db, srv


def _client_table(rows=CLIENT_ROWS, salt=b"client"):
    names = [n for n, _ in COLUMNS]
    return TableData(TABLE, COLUMNS, [
        (peers.uuid_bytes(i, salt), dict(zip(names, r)))
        for i, r in enumerate(rows)])


def _unchanged(case, db, before, what="database"):
    """None when |db| is unchanged, else a failing Outcome."""
    after = db.snapshot()
    if after != before:
        return case.fail("the implementation's %s changed" % what,
                         "the %s unchanged (the session failed, so the "
                         "side rolls back: LS-COMMIT-6)" % what,
                         "its snapshot differs after the session")
    return None


def _value_rows(db, table, ncols):
    """The rows of |table| as a sorted list of tuples of the first |ncols|
    column values (the columns in their created order)."""
    out = []
    for r in db.rows(table):
        if isinstance(r, dict):
            vals = tuple(v for k, v in r.items() if k != peers.UUID_COLUMN)
        else:
            vals = tuple(r)[:ncols]
        out.append(vals)
    return sorted(out, key=repr)


def _open_session(case, address, tables=None):
    """Connects, handshakes and opens |tables| (default: the standard
    table); returns (conn, session, Received answer to OpenTables)."""
    conn = case.connect(address)
    s = ClientSession(conn, case.ctx.secret)
    s.handshake()
    r = s.open_tables(tables or [(TABLE, COLUMNS)])
    return conn, s, r


# ---- against the implementation's server ----------------------------------------

def server_baseline(ctx):
    """Full valid handshake and open, then a clean close at a frame
    boundary: the server must roll back (its table preparation too)."""
    case = Case(ctx)
    db, srv = _server(ctx)
    before = db.snapshot()
    conn = case.connect(srv.address)
    s = ClientSession(conn, ctx.secret)
    r = s.hello()
    if not (r.kind == "frame" and r.body == "server_hello"):
        return case.fail("no ServerHello", "ServerHello", r.describe())
    sh = s.server_hello
    problems = []
    if sh["version"] != 1:
        problems.append("version %d, expected 1" % sh["version"])
    if len(sh["nonce"]) != 32:
        problems.append("nonce of %d bytes, expected 32" % len(sh["nonce"]))
    if sh["features"]:
        problems.append("features %r, none offered" % sh["features"])
    if sh.get("_unknown"):
        problems.append("fields undefined in version 1: %r" % sh["_unknown"])
    if problems:
        return case.fail("bad ServerHello: " + "; ".join(problems),
                         "ServerHello{version: 1, nonce: 32 bytes}",
                         r.describe())
    r = s.auth()
    if not (r.kind == "frame" and r.body == "server_auth"):
        return case.fail("no server_auth after a valid client_auth",
                         "server_auth", r.describe())
    if r.msg["mac"] != server_mac(ctx.secret, s.th):
        return case.fail("server_auth MAC is not HMAC-SHA256(K, \"LipSync "
                         "v1 server auth\" || TH)",
                         server_mac(ctx.secret, s.th).hex(),
                         r.msg["mac"].hex())
    r = s.open_tables([(TABLE, COLUMNS)])
    if not (r.kind == "frame" and r.body == "tables_opened"):
        return case.fail("OpenTables of an offered table with equal columns "
                         "not accepted", "TablesOpened", r.describe())
    bad = _check_tables_opened(case, r)
    if bad:
        return bad
    conn.close()
    time.sleep(0.5)
    bad = _unchanged(case, db, before)
    return bad or case.ok("handshake and open valid; close rolled back")


def _check_tables_opened(case, r):
    """LS-TOMB-2, LS-VERSION-2: TablesOpened carries the server's clock, a
    fresh tick (wall milliseconds << 16 | counter: close to our wall
    clock), and a horizon not above it. None, or a failing Outcome."""
    m = r.msg
    now = peers.now_clock() >> 16
    clock, horizon = m.get("clock", 0), m.get("horizon", 0)
    if abs((clock >> 16) - now) > 120000 or horizon > clock:
        return case.fail(
            "TablesOpened does not carry a plausible clock and horizon",
            "clock = wall ms << 16 | counter, close to %d << 16; horizon <= "
            "clock (LS-TOMB-2, LS-VERSION-2)" % now, r.describe())
    return None


def server_version_highest(ctx):
    case = Case(ctx)
    db, srv = _server(ctx)
    conn = case.connect(srv.address)
    s = ClientSession(conn, ctx.secret)
    r = s.hello(min_version=1, max_version=3)
    if not (r.kind == "frame" and r.body == "server_hello"):
        return case.fail("ClientHello 1..3 not answered by ServerHello",
                         "ServerHello{version: 1}", r.describe())
    if s.server_hello["version"] != 1:
        return case.fail("server did not pick version 1",
                         "ServerHello{version: 1}", r.describe())
    r = s.auth()
    if not (r.kind == "frame" and r.body == "server_auth"
            and r.msg["mac"] == server_mac(ctx.secret, s.th)):
        return case.fail("handshake with a 1..3 offer did not complete",
                         "a valid server_auth", r.describe())
    conn.close()
    return case.ok()


def server_unknown_feature(ctx):
    case = Case(ctx)
    db, srv = _server(ctx)
    conn = case.connect(srv.address)
    s = ClientSession(conn, ctx.secret)
    r = s.hello(features=["x-lsconf-unknown", "zz-not-registered"])
    if not (r.kind == "frame" and r.body == "server_hello"):
        return case.fail("unknown features made the server fail",
                         "ServerHello{features: []}", r.describe())
    if s.server_hello["features"]:
        return case.fail("server accepted features it cannot know",
                         "ServerHello{features: []}", r.describe())
    r = s.auth()
    if not (r.kind == "frame" and r.body == "server_auth"
            and r.msg["mac"] == server_mac(ctx.secret, s.th)):
        return case.fail("handshake with features offered did not complete "
                         "(TH covers the hellos as sent)",
                         "a valid server_auth", r.describe())
    conn.close()
    return case.ok()


def server_version_mismatch(ctx):
    case = Case(ctx)
    db, srv = _server(ctx)
    conn = case.connect(srv.address)
    conn.send_frame("client_hello", {"min_version": 2, "max_version": 3,
                                     "nonce": os.urandom(32)})
    ok, what, err = expect_error_close(conn, [C["VERSION_MISMATCH"]])
    expected = ("Error{code: 4 (VERSION_MISMATCH), min_version, "
                "max_version: the server's range, which excludes 2 and 3}, "
                "then close")
    if not ok:
        return case.fail(what, expected, what)
    lo, hi = err.msg["min_version"], err.msg["max_version"]
    if not (1 <= lo <= 1 <= hi < 2):
        return case.fail("VERSION_MISMATCH does not carry the server's "
                         "range (a version-1 server speaks 1)", expected,
                         err.describe())
    return case.ok(what)


AUTH_EXPECTED = ("Error AUTH_FAILED, then close; no server_auth "
                 "(LS-AUTH-7); database untouched")


def server_replayed_proof(ctx):
    """Records a valid session's ClientHello and client_auth, then replays
    both, byte for byte, to another server with the same secret."""
    case = Case(ctx)
    db, srv = _server(ctx)
    conn = case.connect(srv.address)
    s = ClientSession(conn, ctx.secret)
    try:
        s.handshake()
    except peers.HandshakeFailed as e:
        return case.fail("the recording session failed: %s" % e,
                         "a valid handshake", str(e))
    ch = s.ch
    auth = pbwire.frame("client_auth", {"mac": client_mac(ctx.secret, s.th)})
    first_nonce = s.server_hello["nonce"]
    conn.close()
    db2 = _db_with_table(ctx, "server2", rows=SERVER_ROWS)
    before = db2.snapshot()
    srv2 = ctx.start_server(ctx.impl, db2, [TABLE])
    conn2 = case.connect(srv2.address)
    conn2.send(ch)
    r = conn2.recv()
    if not (r.kind == "frame" and r.body == "server_hello"):
        return case.fail("replayed ClientHello not answered", "ServerHello",
                         r.describe())
    if r.msg["nonce"] == first_nonce:
        return case.fail("the server reused its nonce (LS-VER-3: fresh for "
                         "each session)", "a fresh nonce", r.describe())
    conn2.send(auth)
    ok, what, _ = expect_error_close(conn2, [C["AUTH_FAILED"]])
    if not ok:
        return case.fail(what, AUTH_EXPECTED, what)
    time.sleep(0.2)
    return _unchanged(case, db2, before) or case.ok(what)


def server_end_turn_before_open(ctx):
    case = Case(ctx)
    db, srv = _server(ctx)
    before = db.snapshot()
    conn = case.connect(srv.address)
    s = ClientSession(conn, ctx.secret)
    try:
        s.handshake()
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    conn.send_frame("end_turn")
    ok, what, _ = expect_error_close(conn, [C["UNEXPECTED_MESSAGE"]])
    exp = "Error UNEXPECTED_MESSAGE (EndTurn in WAIT_OPEN_TABLES), close"
    if not ok:
        return case.fail(what, exp, what)
    time.sleep(0.2)
    return _unchanged(case, db, before) or case.ok(what)


def _sync_case(ctx, mutate_verify=None, stop_after_rows=False, server=None):
    """A scripted client syncs CLIENT_ROWS with the server's SERVER_ROWS
    (|server|: (db, server) already started). Returns (case, db, before,
    SyncResult, conn, recon) or an Outcome on failure."""
    case = Case(ctx)
    db, srv = server or _server(ctx)
    before = db.snapshot()
    try:
        conn, s, r = _open_session(case, srv.address)
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    if r.body != "tables_opened":
        return case.fail("open failed", "TablesOpened", r.describe())
    recon = Reconciler([_client_table()])
    for b, m in recon.first_turn():
        conn.send_frame(b, m)
    conn.send_frame("end_turn")
    res = peers.drive(conn, recon, False, mutate_verify=mutate_verify,
                      stop_after_rows=stop_after_rows)
    return case, db, before, res, conn, recon


def server_sync_push(ctx):
    got = _sync_case(ctx)
    if isinstance(got, Outcome):
        return got
    case, db, before, res, conn, recon = got
    if res.ending != "committed":
        return case.fail("the sync did not complete: %s" % res.what,
                         "Committed", res.what)
    c = conn.wait_close()
    if c.kind not in ("eof", "reset"):
        return case.fail("the server did not close after Committed",
                         "close (LS-CLOSE-1)", c.describe())
    time.sleep(0.2)
    want = sorted([tuple(r) for r in SERVER_ROWS + CLIENT_ROWS], key=repr)
    have = _value_rows(db, TABLE, len(COLUMNS))
    if have != want:
        return case.fail("the server's table does not hold the union",
                         repr(want), repr(have))
    # the server's Verify must describe the union too (LS-VERIFY-5)
    mine = recon.verify()["tables"][0]
    pv = res.peer_verify["tables"][0]
    if (pv["count"], pv["fingerprint"]) != (mine["count"],
                                            mine["fingerprint"]):
        return case.fail("server's Verify differs from the union", repr(mine),
                         repr(pv))
    if any(b == "ranges" for _, b, _, _ in _received(case)):
        return case.fail("the server sent Ranges though it received no "
                         "Fingerprint range", "Need and Rows only "
                         "(LS-RECON-1, LS-RECON-8)", "a Ranges frame")
    bad = _check_hashes(case) or _check_sent_frames(case, ctx.secret)
    if bad:
        return bad
    return case.ok("server committed the union of %d rows" % len(want))


def server_close_mid_transfer(ctx):
    got = _sync_case(ctx, stop_after_rows=True)
    if isinstance(got, Outcome):
        return got
    case, db, before, res, conn, recon = got
    if res.ending != "stopped":
        return case.fail("the session did not reach the row transfer: %s"
                         % res.what, "a Need from the server", res.what)
    conn.close()
    time.sleep(1.0)
    return _unchanged(case, db, before) or case.ok(
        "closed after sending Rows; server unchanged")


def server_stall(ctx):
    """Connects and sends nothing. LS-TIME-1: the server MUST bound its
    wait and then fail with TIMEOUT; its default SHOULD be 60 s. The runner
    starts the server with its default, so the test waits 75 s."""
    case = Case(ctx)
    db, srv = _server(ctx)
    conn = case.connect(srv.address)
    t0 = time.monotonic()
    ok, what, _ = expect_error_close(conn, [C["TIMEOUT"]], timeout=75)
    took = time.monotonic() - t0
    if not ok:
        return case.fail(what, "Error TIMEOUT within 75 s (default 60 s), "
                         "then close", what)
    return case.ok("%s after %.0f s" % (what, took))


# ---- against the implementation's client ----------------------------------------

class ClientRun:
    def __init__(self, ctx, rows=CLIENT_ROWS):
        self.ctx = ctx
        self.case = Case(ctx)
        self.db = _db_with_table(ctx, "client", rows=rows)
        self.before = self.db.snapshot()
        self.listener, self.address = ctx.listen()
        self.proc = ctx.start_client(ctx.impl, self.db, self.address,
                                     [TABLE])
        self.conn = peers.accept(self.listener, ctx.timeout,
                                 self.case.records)
        self.session = (ServerSession(self.conn, ctx.secret)
                        if self.conn else None)
        self.opened_clock = None

    def again(self):
        """Runs the client once more on the same database (after finish):
        a new connection and session; the database as it is now is the
        one a failed session must leave."""
        self.before = self.db.snapshot()
        self.listener, self.address = self.ctx.listen()
        self.proc = self.ctx.start_client(self.ctx.impl, self.db,
                                          self.address, [TABLE])
        self.conn = peers.accept(self.listener, self.ctx.timeout,
                                 self.case.records)
        self.session = (ServerSession(self.conn, self.ctx.secret)
                        if self.conn else None)

    def finish(self, expect_ok, what, expected, allow_frames=()):
        """Closes our side, waits for the client to exit, checks its exit
        status and its database."""
        case = self.case
        extra = None
        if self.conn is not None:
            # whatever the client still sends: only Error frames allowed
            while True:
                r = self.conn.recv(self.ctx.timeout)
                if r.kind != "frame":
                    break
                if r.body not in allow_frames:
                    extra = r
                    break
            self.conn.close()
        status = self.proc.wait(self.ctx.timeout + 5)
        if status is None:
            self.proc.kill()
            return case.fail("the client did not exit", expected,
                             "still running %.0f s later" % (
                                 self.ctx.timeout + 5))
        if extra is not None:
            return case.fail("the client sent %s" % extra.describe(),
                             expected, extra.describe())
        if expect_ok:
            if status != 0:
                return case.fail("client exited with %s" % status, expected,
                                 "exit status %s" % status)
            return None
        if status == 0:
            return case.fail("client exited 0 after a failed session",
                             expected, "exit status 0")
        bad = _unchanged(case, self.db, self.before)
        return bad

    def refused(self, codes, expected):
        """The client's answer must be one Error with a code in |codes|,
        then the close; then it must exit non-zero with its database
        unchanged. Returns the Outcome."""
        ok, what, _ = expect_error_close(self.conn, codes)
        bad = self.finish(False, what, expected)
        if not ok:
            return self.case.fail(what, expected, what)
        return bad or self.case.ok(what)


def _no_conn(run):
    return run.case.fail("the client did not connect",
                         "a connection", "none within the timeout")


def client_wrong_server_proof(ctx):
    run = ClientRun(ctx)
    if run.conn is None:
        return _no_conn(run)
    s = run.session
    r = s.read_hello()
    if r.body != "client_hello":
        return run.case.fail("no ClientHello", "ClientHello", r.describe())
    s.hello()
    r, ok = s.read_auth()
    if not ok:
        return run.case.fail("client_auth does not verify", "valid MAC",
                             r.describe())
    s.auth(mac=server_mac(b"not the secret", s.th))
    exp = ("Error AUTH_FAILED then close, no OpenTables (LS-AUTH-8); "
           "non-zero exit; database unchanged")
    return run.refused([C["AUTH_FAILED"]], exp)


def client_version_outside(ctx):
    run = ClientRun(ctx)
    if run.conn is None:
        return _no_conn(run)
    s = run.session
    r = s.read_hello()
    if r.body != "client_hello":
        return run.case.fail("no ClientHello", "ClientHello", r.describe())
    hi = s.client_hello["max_version"]
    s.hello(version=hi + 1)
    exp = ("Error VERSION_MISMATCH with the client's range, then close; "
           "non-zero exit; database unchanged")
    ok, what, err = expect_error_close(run.conn, [C["VERSION_MISMATCH"]])
    if not ok:
        run.finish(False, what, exp)
        return run.case.fail(what, exp, what)
    if (err.msg["min_version"], err.msg["max_version"]) != (
            s.client_hello["min_version"], hi):
        run.finish(False, what, exp)
        return run.case.fail("VERSION_MISMATCH does not carry the client's "
                             "range", exp, err.describe())
    return run.finish(False, what, exp) or run.case.ok(what)


def _client_open(run):
    """Valid server handshake; returns the OpenTables Received or an
    Outcome."""
    try:
        r = run.session.handshake()
    except peers.HandshakeFailed as e:
        return run.case.fail("handshake failed: %s" % e, "a valid handshake",
                             str(e))
    return r


def _check_client_hello(run):
    ch = run.session.client_hello
    probs = []
    if not (1 <= ch["min_version"] <= 1 <= ch["max_version"]):
        probs.append("version range %d..%d excludes 1 or is invalid"
                     % (ch["min_version"], ch["max_version"]))
    if len(ch["nonce"]) != 32:
        probs.append("nonce of %d bytes" % len(ch["nonce"]))
    feats = ch["features"]
    if len(set(feats)) != len(feats):
        probs.append("features offered twice: %r" % feats)
    declared = set(getattr(run.ctx.impl, "features", ()) or ())
    if set(feats) - declared:
        probs.append("features %r it does not declare" %
                     sorted(set(feats) - declared))
    return probs


def client_schema_error(ctx):
    run = ClientRun(ctx)
    if run.conn is None:
        return _no_conn(run)
    r = _client_open(run)
    if isinstance(r, Outcome):
        return r
    run.conn.send_frame("error", {"code": C["SCHEMA_MISMATCH"],
                                  "message": "table cities: column x "
                                  "missing on server"})
    exp = "no answer (LS-ERR-3), close, non-zero exit, database unchanged"
    r = run.conn.recv()
    if r.kind == "frame":
        run.finish(False, "", exp)
        return run.case.fail("the client answered an Error with %s"
                             % r.describe(), exp, r.describe())
    return run.finish(False, "", exp) or run.case.ok(
        "client closed, exited non-zero, unchanged")


def _client_sync(ctx, mutate_verify=None, stop_after_rows=False,
                 send_committed=True):
    run = ClientRun(ctx)
    if run.conn is None:
        return run, _no_conn(run)
    r = _client_open(run)
    if isinstance(r, Outcome):
        return run, r
    probs = _check_client_hello(run)
    if probs:
        return run, run.case.fail("bad ClientHello: " + "; ".join(probs),
                                  "ClientHello{1 <= min <= 1 <= max, "
                                  "nonce: 32 bytes, features: []}",
                                  pbwire.render(
                                      {"client_hello":
                                       run.session.client_hello}))
    tables = r.msg["tables"]
    want = peers.table_schema((TABLE, COLUMNS))
    if len(tables) != 1 or dict(tables[0], last_sync=0) != want:
        return run, run.case.fail(
            "OpenTables does not describe the client's table",
            pbwire.render({"open_tables": {"tables": [want]}}),
            r.describe())
    names = [n for n, _ in COLUMNS]
    mine = TableData(TABLE, COLUMNS, [
        (peers.uuid_bytes(i, b"server"), dict(zip(names, row)))
        for i, row in enumerate(SERVER_ROWS)])
    if r.msg.get("policy", 0) != 0 or tables[0].get("last_sync", 0) != 0:
        return run, run.case.fail(
            "OpenTables of a client that never synced, with no policy "
            "option, sets a policy or a last_sync",
            "policy LWW (0), last_sync 0 (LS-TOMB-6, LS-POLICY-6)",
            r.describe())
    clock = peers.now_clock()
    horizon = clock - (30 * 86400 * 1000 << 16)
    recon = Reconciler([mine], server=True, horizon=horizon)
    run.opened_clock = clock
    run.conn.send_frame("tables_opened", {"horizon": horizon,
                                          "clock": clock})
    res = peers.drive(run.conn, recon, True, mutate_verify=mutate_verify,
                      stop_after_rows=stop_after_rows,
                      send_committed=send_committed)
    return run, res


def client_sync_pull(ctx):
    run, res = _client_sync(ctx)
    if isinstance(res, Outcome):
        return res
    exp = "Committed; the client's table holds the union; exit 0"
    if res.ending != "committed":
        run.finish(False, "", exp)
        return run.case.fail("the sync did not complete: %s" % res.what,
                             exp, res.what)
    bad = run.finish(True, "", exp)
    if bad:
        return bad
    want = sorted([tuple(r) for r in SERVER_ROWS + CLIENT_ROWS], key=repr)
    have = _value_rows(run.db, TABLE, len(COLUMNS))
    if have != want:
        return run.case.fail("the client's table does not hold the union",
                             repr(want), repr(have))
    bad = (_check_hashes(run.case, "client") or _check_client_base(run.case)
           or _check_sent_frames(run.case, ctx.secret, run.proc.stderr()))
    if bad:
        return bad
    return run.case.ok("client committed the union of %d rows" % len(want))


def client_rows_loses(ctx):
    """LS-POLICY-4 and LS-TOMB-6 on the client. A first scripted sync
    commits. The harness then updates one of the client's rows (a new
    version). In a second session the client must send, in OpenTables, the
    clock of the first session's TablesOpened as last_sync; the scripted
    server then sends that row with an older version: the client's version
    wins, so the client must fail with PROTOCOL_ERROR, exit non-zero and
    leave its database unchanged."""
    run, res = _client_sync(ctx)
    if isinstance(res, Outcome):
        return res
    exp = "the first sync commits"
    if res.ending != "committed":
        run.finish(False, "", exp)
        return run.case.fail("the first sync did not complete: %s"
                             % res.what, exp, res.what)
    bad = run.finish(True, "", exp)
    if bad:
        return bad
    first = run.opened_clock
    run.db.execute("UPDATE cities SET pop = 8 WHERE name = 'Genève'")
    target = [bytes.fromhex(str(row[peers.UUID_COLUMN]).replace("-", ""))
              for row in run.db.rows(TABLE) if row["name"] == "Genève"][0]
    run.again()
    if run.conn is None:
        return _no_conn(run)
    r = _client_open(run)
    if isinstance(r, Outcome):
        return r
    exp = ("OpenTables with last_sync = %d, the clock of the last "
           "TablesOpened (LS-TOMB-6)" % first)
    tables = r.msg["tables"]
    if len(tables) != 1 or tables[0].get("last_sync", 0) != first:
        run.finish(False, "", exp)
        return run.case.fail("the client did not send the last_sync of its "
                             "previous sync", exp, r.describe())
    clock = peers.now_clock()
    run.conn.send_frame("tables_opened", {
        "horizon": clock - (30 * 86400 * 1000 << 16), "clock": clock})
    turn, end = peers.read_turn(run.conn)
    exp = ("the client's first turn, then (after a Row of the server whose "
           "version loses) Error PROTOCOL_ERROR, close, non-zero exit, "
           "database unchanged (LS-POLICY-4)")
    if not (end.kind == "frame" and end.body == "end_turn"):
        run.finish(False, "", exp)
        return run.case.fail("no first turn from the client", exp,
                             end.describe())
    V = pbwire.value_msg
    older = {"uuid": target, "values": [V(1.0), V("older"), V(1)],
             "version": {"clock": 1 << 16, "site": b"\x42" * 16}}
    mine = [i for x in turn if x.body == "ranges"
            for rg in x.msg["ranges"] if "items" in rg
            for i in rg["items"]["items"] if i["uuid"] == target]
    if not mine:
        # A Fingerprint first turn: answer with an item list (option (a))
        # holding the row at the older version and a row the client lacks.
        # The client must send its newer row and ask for the other; the
        # answer to its Need then carries the losing Row as well.
        extra = peers.uuid_bytes(7, b"extra")
        extra_row = {"uuid": extra, "values": [V(2.0), V("extra"), V(2)],
                     "version": {"clock": 2 << 16, "site": b"\x42" * 16}}
        items = sorted(({"uuid": m["uuid"], "version": m["version"]}
                        for m in (older, extra_row)), key=lambda m: m["uuid"])
        run.conn.send_frame("ranges", {"table": 0, "ranges": [
            {"lower": b"", "upper": b"", "items": {"items": items}}]})
        run.conn.send_frame("end_turn")
        turn, end = peers.read_turn(run.conn)
        if not (end.kind == "frame" and end.body == "end_turn"):
            run.finish(False, "", exp)
            return run.case.fail("no answer to the item list", exp,
                                 end.describe())
        mine = [row for x in turn if x.body == "rows"
                for row in x.msg["rows"] if row["uuid"] == target]
        run.conn.send_frame("rows", {"table": 0, "rows": [extra_row]})
    v = peers.version_of(mine[0]) if mine else None
    if not peers.well_formed(v) or v[0] <= first:
        run.finish(False, "", exp)
        return run.case.fail("the client's item of the row updated after "
                             "its last sync does not carry a newer version",
                             "an Item or Row for %s with a clock > %d "
                             "(LS-CAPTURE-1, LS-VERSION-2)" % (
                                 target.hex(), first),
                             "; ".join(x.describe() for x in turn))
    run.conn.send_frame("rows", {"table": 0, "rows": [older]})
    run.conn.send_frame("end_turn")
    return run.refused([C["PROTOCOL_ERROR"]], exp)


def client_close_mid_transfer(ctx):
    run, res = _client_sync(ctx, stop_after_rows=True)
    if isinstance(res, Outcome):
        return res
    exp = "non-zero exit, database unchanged"
    if res.ending != "stopped":
        run.finish(False, "", exp)
        return run.case.fail("the session did not reach the row transfer: "
                             "%s" % res.what, "an ItemList from the client",
                             res.what)
    run.conn.close()
    run.conn = None
    return run.finish(False, "", exp) or run.case.ok(
        "server closed after Rows; client unchanged")


def describe_frame(raw):
    """A complete frame (length prefix included), readably; for the
    runner's frame recorder."""
    return pbwire.render_bytes(raw)


# ---- the list ------------------------------------------------------------------

def tests():
    """Every wire test: the table of wire_cases.py (each test's name,
    requirement IDs, role, description, and its case data or its function
    here), then the tests of the features."""
    from . import wire_cases
    return wire_cases.tests() + _feature_tests()


def _feature_tests():
    """The tests of the features (15.3), in modules of their own."""
    from . import wire_incremental
    return wire_incremental.tests()


# ---- more cases: ranges, items, rows, values, turns, transport ------------------

def _scan_unknown(msg, path="frame"):
    """Paths of fields a version-1 sender must not set (LS-EXT-4,
    LS-VERSION-6), found in a decoded message."""
    out = []
    if isinstance(msg, dict):
        if msg.get("_unknown"):
            out.append("%s fields %r" % (path, msg["_unknown"]))
        for k, v in msg.items():
            if k != "_unknown":
                out += _scan_unknown(v, path + "." + k)
    elif isinstance(msg, list):
        for i, v in enumerate(msg):
            out += _scan_unknown(v, "%s[%d]" % (path, i))
    return out


def _received(case):
    """The frames received from the implementation, decoded: [(raw,
    body, msg)]."""
    out = []
    for rec in case.records:
        if rec.direction != "received" or len(rec.raw) < 4:
            continue
        try:
            fr = pbwire.decode_payload(rec.raw[4:])
        except pbwire.DecodeError:
            continue
        b, m = pbwire.body_of(fr)
        out.append((rec.raw, b, m, fr))
    return out


def _feature_fields(body, msg):
    """The fields and bodies of the feature incremental (spec 15.1) that a
    decoded frame body sets."""
    out = []
    if body == "changes":
        out.append("the Changes body")
    elif body == "open_tables":
        if msg.get("client_site"):
            out.append("OpenTables.client_site")
        if any("checkpoint" in t for t in msg.get("tables", [])):
            out.append("TableSchema.checkpoint")
    elif body == "tables_opened":
        if msg.get("server_site"):
            out.append("TablesOpened.server_site")
        if msg.get("incremental"):
            out.append("TablesOpened.incremental")
    elif body == "committed" and msg.get("checkpoints"):
        out.append("Committed.checkpoints")
    return out


def _check_sent_frames(case, secret, stderr="", features=()):
    """The implementation's frames: no field undefined in version 1 or
    defined by a feature not in |features| (the features in effect), valid
    UTF-8 strings, never the secret (on the wire, in Error messages, or in
    its log). None, or a failing Outcome."""
    for raw, body, msg, fr in _received(case):
        bad = _scan_unknown(fr)
        if "incremental" not in features:
            bad += _feature_fields(body, msg)
        if bad:
            return case.fail("the implementation set fields undefined in "
                             "version 1 or by the features in effect (%s): "
                             % (", ".join(features) or "none")
                             + "; ".join(bad),
                             "only fields of version 1 and of the features "
                             "in effect (LS-EXT-4, LS-VERSION-6, "
                             "LS-FEAT-4)", pbwire.render(fr))
        if secret and secret in raw:
            return case.fail("the secret K appears in a frame",
                             "K never sent (LS-AUTH-9)", raw.hex())
        if body == "error":
            m = msg.get("message", "")
            if "\ufffd" in m:
                return case.fail("Error message is not valid UTF-8",
                                 "valid UTF-8 (LS-FRAME-12, LS-ERR-6)", m)
            if secret and secret.decode("latin-1") in m:
                return case.fail("Error message contains the secret",
                                 "no secret (LS-ERR-6)", m)
    if secret and stderr and secret.decode("utf-8", "replace") in stderr:
        return case.fail("the implementation wrote the secret to its log",
                         "K never logged (LS-AUTH-9)", "stderr holds K")
    return None


def _check_hashes(case, who="server"):
    """Checks the implementation's versions and hashes against the Rows
    it sent: each Row and Item carries a version with a 16-byte site
    (LS-VERSION-6, LS-ITEM-2); a row that existed before the session has
    its initial version (clock 0, site = its row digest: LS-VERSION-5,
    LS-DIGEST-1, LS-DIGEST-2); an Item of a row it sent has the row's
    version and deleted flag; a Fingerprint range is the fingerprint of
    its item digests (LS-ITEM-1, LS-FP-1, LS-FP-3). In these sessions
    every row of the implementation existed before and is sent to the
    scripted peer, so its items are known. None, or a failing Outcome."""
    rows, items, fps = {}, [], []
    for raw, body, msg, fr in _received(case):
        if body == "rows":
            for r in msg["rows"]:
                rows[r["uuid"]] = r
        elif body == "ranges":
            for rg in msg["ranges"]:
                if "items" in rg:
                    items += rg["items"]["items"]
                elif "fingerprint" in rg:
                    fps.append(rg)
    for m in list(rows.values()) + items:
        v = peers.version_of(m)
        if not peers.well_formed(v):
            return case.fail("the %s sent an Item or Row without a version "
                             "whose site is 16 bytes" % who,
                             "version {clock, site: 16 bytes} (LS-VERSION-6,"
                             " LS-ITEM-2)", pbwire._render_msg(
                                 "Row" if "values" in m else "Item", m))
    digests = {}
    for u, r in rows.items():
        v = peers.version_of(r)
        want = peers.initial_version(u, r["values"])
        if r.get("deleted") or v != want:
            return case.fail("the %s's row %s, which existed before its "
                             "first sync, does not carry its initial "
                             "version" % (who, u.hex()),
                             "version (clock 0, site = row digest %s), "
                             "deleted false (LS-VERSION-5, LS-DIGEST-1, "
                             "LS-DIGEST-2)" % want[1].hex(),
                             pbwire._render_msg("Row", r))
        digests[u] = peers.item_digest(u, v, False)
    for it in items:
        r = rows.get(it["uuid"])
        if r is not None and (peers.version_of(it) != peers.version_of(r)
                              or it.get("deleted") != r.get("deleted")):
            return case.fail("the %s's Item differs from the Row it sent "
                             "for the same UUID" % who,
                             pbwire._render_msg("Row", r),
                             pbwire._render_msg("Item", it))
    for rg in fps:
        lo, hi = rg["lower"], rg["upper"]
        inr = [d for u, d in digests.items()
               if (not lo or u >= lo) and (not hi or u < hi)]
        fp = rg["fingerprint"]
        if (fp["value"], fp["count"]) != (peers.fingerprint(inr), len(inr)):
            return case.fail("the %s's Fingerprint of a range is not the "
                             "fingerprint of its item digests in it" % who,
                             "count %d, value %s" % (
                                 len(inr), peers.fingerprint(inr).hex()),
                             "count %d, value %s" % (fp["count"],
                                                     fp["value"].hex()))
    return None


def _check_client_base(case):
    """LS-POLICY-5: a client that never synced has the zero base, which
    differs from its rows' initial versions: each Item and Row it sends
    carries base_version = the zero version. None, or a failing Outcome."""
    for raw, body, msg, fr in _received(case):
        if body == "rows":
            ms = msg["rows"]
        elif body == "ranges":
            ms = [i for rg in msg["ranges"] if "items" in rg
                  for i in rg["items"]["items"]]
        else:
            continue
        for m in ms:
            if peers.base_of(m) != peers.ZERO_VERSION:
                return case.fail(
                    "a client that never synced sent an Item or Row "
                    "without base_version = the zero version",
                    "base_version {clock: 0, site: 16 zero bytes} or its "
                    "short form {} "
                    "(LS-POLICY-5)", pbwire._render_msg(
                        "Row" if body == "rows" else "Item", m))
    return None


def _start_turn_case(ctx, rows=SERVER_ROWS):
    case = Case(ctx)
    db, srv = _server(ctx, rows=rows)
    before = db.snapshot()
    try:
        conn, s, r = _open_session(case, srv.address)
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    if r.body != "tables_opened":
        return case.fail("open failed", "TablesOpened", r.describe())
    return case, db, before, conn, srv


_U1 = bytes.fromhex("10000000000040008000000000000001")
_U2 = bytes.fromhex("20000000000040008000000000000002")
_MID = bytes.fromhex("80000000000000000000000000000000")
PE = "Error PROTOCOL_ERROR, then close; database unchanged"


def _first_turn_sent(ctx):
    """_start_turn_case, then the frames of the scripted client's first
    turn (the ItemList of CLIENT_ROWS), without its EndTurn: (case, db,
    before, conn, srv, recon), or a failing Outcome."""
    got = _start_turn_case(ctx)
    if isinstance(got, Outcome):
        return got
    recon = Reconciler([_client_table()])
    for b, m in recon.first_turn():
        got[3].send_frame(b, m)
    return got + (recon,)


def server_rows_loses(ctx):
    """LS-POLICY-4. A first scripted sync pushes CLIENT_ROWS with versions
    of this moment, and commits. A second session claims, in its ItemList,
    an older version (clock 1 << 16) of one of them, and a new row: the
    server's version wins, so the server sends its row, and asks for the
    new one. The scripted client sends the new row and its older row
    anyway: the decision does not make the sender win, so the server must
    fail with PROTOCOL_ERROR and roll back."""
    case = Case(ctx)
    db, srv = _server(ctx)
    try:
        conn, s, r = _open_session(case, srv.address)
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    if r.body != "tables_opened":
        return case.fail("open failed", "TablesOpened", r.describe())
    site = os.urandom(16)
    t = _client_table()
    now = peers.now_clock()
    ours = sorted(t.rows)
    for i, u in enumerate(ours):
        t.add(u, t.rows[u], (now + i, site))
    recon = Reconciler([t])
    for b, m in recon.first_turn():
        conn.send_frame(b, m)
    conn.send_frame("end_turn")
    res = peers.drive(conn, recon, False)
    if res.ending != "committed":
        return case.fail("the first sync did not complete: %s" % res.what,
                         "Committed", res.what)
    conn.close()
    time.sleep(0.3)
    before = db.snapshot()
    srv2 = ctx.start_server(ctx.impl, db, [TABLE])
    try:
        conn, s, r = _open_session(case, srv2.address)
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    if r.body != "tables_opened":
        return case.fail("open failed", "TablesOpened", r.describe())
    victim = ours[0]                # the server holds it at (now, site)
    old = (1 << 16, site)
    t.meta[victim] = peers.ItemState(old, False, old)
    t.rows[victim] = [pbwire.value_msg(v) for v in (None, "stale", -1)]
    # A row the server lacks: it asks for it, so its turn is not quiet and
    # the client's next turn, which carries the losing Row, is one it must
    # read (LS-TURN-4).
    fresh = peers.uuid_bytes(99, b"fresh")
    t.add(fresh, {"name": "Basel", "pop": 9}, (now + 100, site))
    recon = Reconciler([t])
    for b, m in recon.first_turn():
        conn.send_frame(b, m)
    conn.send_frame("end_turn")
    turn, end = peers.read_turn(conn)
    if not (end.kind == "frame" and end.body == "end_turn"):
        return case.fail("the server did not answer the first turn",
                         "a turn", end.describe())
    got = [row["uuid"] for x in turn if x.body == "rows"
           for row in x.msg["rows"]]
    if victim not in got:
        return case.fail("the server did not send its row, whose version "
                         "(clock %d) wins over the client's (clock %d)"
                         % (now, old[0]),
                         "Rows with the server's row (LS-POLICY-1)",
                         "; ".join(x.describe() for x in turn) or "nothing")
    conn.send_frame("rows", {"table": 0, "rows": [
        recon.row_msg(t, fresh), recon.row_msg(t, victim)]})
    conn.send_frame("end_turn")
    exp = PE + " (a Row whose version loses against the server's)"
    ok, what, _ = expect_error_close(conn, [C["PROTOCOL_ERROR"]])
    if not ok:
        return case.fail(what, exp, what)
    time.sleep(0.2)
    return _unchanged(case, db, before) or case.ok(what)


def server_observe_clock(ctx):
    """LS-VERSION-3, LS-VERSION-2. A scripted client pushes its rows with
    versions an hour ahead of the wall clock, and commits. The server has
    observed them: its next clock values come after them, although its
    wall clock is an hour behind. An UPDATE made on the server's database
    afterwards gets such a version, so in a second session it wins over the
    client's (older) one: the server sends that row, with a clock above
    the pushed ones, and its TablesOpened clock is above them too."""
    case = Case(ctx)
    db, srv = _server(ctx)
    try:
        conn, s, r = _open_session(case, srv.address)
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    if r.body != "tables_opened":
        return case.fail("open failed", "TablesOpened", r.describe())
    site = os.urandom(16)
    t = _client_table()
    future = peers.now_clock() + (3600 * 1000 << 16)
    ours = sorted(t.rows)
    for i, u in enumerate(ours):
        t.add(u, t.rows[u], (future + i, site))
    recon = Reconciler([t])
    for b, m in recon.first_turn():
        conn.send_frame(b, m)
    conn.send_frame("end_turn")
    res = peers.drive(conn, recon, False)
    if res.ending != "committed":
        return case.fail("the first sync did not complete: %s" % res.what,
                         "Committed", res.what)
    conn.close()
    time.sleep(0.3)
    db.execute("UPDATE cities SET pop = 7 WHERE name = 'Genève'")
    target = peers.uuid_bytes(0, b"client")         # Genève
    srv2 = ctx.start_server(ctx.impl, db, [TABLE])
    try:
        conn, s, r = _open_session(case, srv2.address)
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    if r.body != "tables_opened":
        return case.fail("open failed", "TablesOpened", r.describe())
    top = future + len(ours) - 1
    if r.msg.get("clock", 0) <= top:
        return case.fail("the server's clock is not past the clocks it "
                         "received in the last sync",
                         "TablesOpened.clock > %d (LS-VERSION-3)" % top,
                         r.describe())
    recon = Reconciler([t])
    for b, m in recon.first_turn():
        conn.send_frame(b, m)
    conn.send_frame("end_turn")
    res = peers.drive(conn, recon, False)
    if res.ending != "committed":
        return case.fail("the second sync did not complete: %s" % res.what,
                         "Committed", res.what)
    got = t.meta[target].version
    if got[0] <= top or pbwire.value_py(t.rows[target][2]) != 7:
        return case.fail("the row updated on the server did not come back "
                         "with a version past the observed clocks",
                         "row %s with pop 7 and a clock > %d (LS-VERSION-3, "
                         "LS-CAPTURE-1)" % (target.hex(), top),
                         "clock %d, values %r" % (got[0], t.rows[target]))
    return case.ok("clock observed; the later local update won")


def _rows_sent(turn):
    """The UUIDs of the Rows in |turn| (Received frames)."""
    return [r["uuid"] for f in turn if f.body == "rows"
            for r in f.msg.get("rows", [])]


def server_need_in_own_turn(ctx):
    """The client's first turn, then EndTurn and a Need in one write: the
    Need arrives before the server has sent anything of its turn."""
    got = _first_turn_sent(ctx)
    if isinstance(got, Outcome):
        return got
    case, db, before, conn, srv, _ = got
    conn.send(pbwire.frame("end_turn") +
              pbwire.frame("need", {"table": 0, "uuids": [_U1]}))
    ok, what, _ = expect_error_close(conn, [C["UNEXPECTED_MESSAGE"]])
    if not ok:
        return case.fail(what, "Error UNEXPECTED_MESSAGE, then close: a "
                         "Need that arrived with the client's EndTurn, "
                         "before the server's turn (LS-STATE-3)", what)
    time.sleep(0.2)
    return _unchanged(case, db, before) or case.ok(what)


_SITE_X = b"\x50" * 16


def _turn_for(case, srv, table):
    """A new session that lists |table| (TableData) in one ItemList; the
    server's answering turn (Received frames), or a failing Outcome. The
    stream is closed after it: the server rolls back."""
    try:
        conn, s, r = _open_session(case, srv.address)
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    if r.body != "tables_opened":
        return case.fail("open failed", "TablesOpened", r.describe())
    for b, m in Reconciler([table]).first_turn():
        conn.send_frame(b, m)
    conn.send_frame("end_turn")
    turn, end = peers.read_turn(conn)
    conn.close()
    if not (end.kind == "frame" and end.body == "end_turn"):
        return case.fail("the server did not answer the first turn",
                         "a turn", end.describe())
    return turn


def server_lww_equal_clocks(ctx):
    """Versions with equal clocks are ordered by site (LS-VERSION-1), under
    lww too (LS-POLICY-1). The client pushes row U at version (C, X); then,
    in two sessions it closes after the server's answer, it lists U at
    (C, lower site): the server must send its row; and at (C, higher
    site): the server must ask for the client's."""
    got = _start_turn_case(ctx)
    if isinstance(got, Outcome):
        return got
    case, db, before, conn, srv = got
    u = peers.uuid_bytes(7, b"lww")
    clock = peers.now_clock()
    t = TableData(TABLE, COLUMNS)
    t.add(u, {"name": "pushed", "pop": 1, "area": 1.0}, (clock, _SITE_X))
    recon = Reconciler([t])
    for b, m in recon.first_turn():
        conn.send_frame(b, m)
    conn.send_frame("end_turn")
    res = peers.drive(conn, recon, False)
    conn.close()
    if res.ending != "committed":
        return case.fail("the first sync did not complete: %s" % res.what,
                         "Committed", res.what)
    for site, server_wins in ((b"\x10" * 16, True), (b"\x90" * 16, False)):
        t = TableData(TABLE, COLUMNS)
        t.add(u, {"name": "listed", "pop": 2, "area": 2.0}, (clock, site))
        turn = _turn_for(case, srv, t)
        if isinstance(turn, Outcome):
            return turn
        sent = u in _rows_sent(turn)
        needed = any(u in f.msg.get("uuids", []) for f in turn
                     if f.body == "need")
        if (sent, needed) != (server_wins, not server_wins):
            exp = ("the server's version (clock C, site 50..50) %s the "
                   "client's (clock C, site %s): %s" % (
                       "wins over" if server_wins else "loses to",
                       site[:1].hex() * 2 + "..",
                       "Rows with U, no Need" if server_wins else
                       "a Need for U, no Row"))
            return case.fail("equal clocks not ordered by site", exp,
                             "Row for U sent: %s; Need for U: %s" % (
                                 sent, needed))
    return case.ok("equal clocks ordered by site, both ways")


def server_fingerprint_range(ctx):
    """The client's first turn is one Fingerprint range over the whole
    UUID space that differs from the server's: the server must answer
    with option (a) or (b) of LS-RECON-3 (it has items, so not (c)), its
    ranges exactly partitioning the space, with correct digests and
    fingerprints; the sync then completes."""
    got = _start_turn_case(ctx)
    if isinstance(got, Outcome):
        return got
    case, db, before, conn, srv = got
    recon = Reconciler([_client_table()])
    t = recon.tables[0]
    count, fp = t.state()
    conn.send_frame("ranges", {"table": 0, "ranges": [
        {"lower": b"", "upper": b"", "fingerprint": {"value": fp,
                                                       "count": count}}]})
    conn.send_frame("end_turn")
    turn, end = peers.read_turn(conn)
    if not (end.kind == "frame" and end.body == "end_turn"):
        return case.fail("no answering turn", "a turn (LS-TURN-4)",
                         end.describe())
    exp = ("Ranges exactly partitioning the whole UUID space, all with "
           "ItemLists (a) or all with Fingerprints of non-empty ranges "
           "(b), and nothing else")
    rgs = []
    for r in turn:
        if r.body != "ranges" or r.msg["table"] != 0:
            return case.fail("the answer holds %s" % r.describe(), exp,
                             r.describe())
        rgs += r.msg["ranges"]
    rgs.sort(key=lambda g: g["lower"])
    kinds = {("items" if "items" in g else "fingerprint") for g in rgs}
    bounds_ok = (rgs and rgs[0]["lower"] in (b"", b"\0" * 16)
                 and rgs[-1]["upper"] == b""
                 and all(a["upper"] == b["lower"]
                         for a, b in zip(rgs, rgs[1:])))
    if not bounds_ok or len(kinds) != 1 or (
            kinds == {"fingerprint"} and (len(rgs) < 2 or any(
                g["fingerprint"]["count"] == 0 for g in rgs))):
        return case.fail("the answer to a Fingerprint range is not option "
                         "(a) or (b) of LS-RECON-3", exp,
                         repr([(g["lower"].hex(), g["upper"].hex(),
                                sorted(kinds)) for g in rgs]))
    try:
        mine = recon.answer(turn)
    except ValueError as e:
        return case.fail(str(e), exp, str(e))
    for b, m in mine:
        conn.send_frame(b, m)
    conn.send_frame("end_turn")
    res = peers.drive(conn, recon, False)
    if res.ending != "committed":
        return case.fail("the sync did not complete: %s" % res.what,
                         "Committed", res.what)
    bad = _check_hashes(case) or _check_sent_frames(case, ctx.secret)
    if bad:
        return bad
    time.sleep(0.2)
    want = sorted([tuple(r) for r in SERVER_ROWS + CLIENT_ROWS], key=repr)
    have = _value_rows(db, TABLE, len(COLUMNS))
    if have != want:
        return case.fail("the server's table does not hold the union",
                         repr(want), repr(have))
    return case.ok("option %s; committed the union" % (
        "(a)" if kinds == {"items"} else "(b)"))


def server_transport(ctx):
    """The server waits for the client's first frame (LS-TRANS-2); frames
    split into single bytes and coalesced into one write are read alike
    (LS-TRANS-1); while the client's turn lasts the server sends nothing
    (LS-TURN-2); after Committed, bytes the client still sends are
    ignored and the stream is closed (LS-TRANS-3, LS-STATE-5)."""
    case = Case(ctx)
    db, srv = _server(ctx)
    conn = case.connect(srv.address)
    r = conn.recv(0.7)
    if r.kind != "timeout":
        return case.fail("the server did not wait for the client's first "
                         "frame", "nothing until ClientHello", r.describe())
    ch = pbwire.frame("client_hello", {"min_version": 1, "max_version": 1,
                                       "nonce": os.urandom(32)})
    for i in range(len(ch)):
        conn.send(ch[i:i + 1], "(byte %d of ClientHello)" % i)
        if i % 8 == 0:
            time.sleep(0.005)
    r = conn.recv()
    if not (r.kind == "frame" and r.body == "server_hello"):
        return case.fail("a ClientHello written byte by byte was not "
                         "answered", "ServerHello", r.describe())
    th = peers.transcript_hash(ch, r.raw)
    recon = Reconciler([_client_table()])
    burst = (pbwire.frame("client_auth", {"mac": client_mac(ctx.secret, th)})
             + pbwire.frame("open_tables",
                            {"tables": [peers.table_schema(recon.tables[0])]}))
    conn.send(burst, "(client_auth and OpenTables in one write)")
    r = conn.recv()
    if not (r.kind == "frame" and r.body == "server_auth"):
        return case.fail("no server_auth", "server_auth", r.describe())
    r = conn.recv()
    if not (r.kind == "frame" and r.body == "tables_opened"):
        return case.fail("no TablesOpened", "TablesOpened", r.describe())
    for b, m in recon.first_turn():
        conn.send_frame(b, m)
    r = conn.recv(1.0)
    if r.kind != "timeout":
        return case.fail("the server sent during the client's turn",
                         "nothing before EndTurn (LS-TURN-2)", r.describe())
    conn.send_frame("end_turn")
    res = peers.drive(conn, recon, False)
    if res.ending != "committed":
        return case.fail("the sync did not complete: %s" % res.what,
                         "Committed", res.what)
    conn.send(pbwire.frame("end_turn") + pbwire.frame("verify",
                                                     recon.verify()))
    c = conn.wait_close()
    if c.kind not in ("eof", "reset"):
        return case.fail("after Committed the server %s" % c.describe(),
                         "no frame, close (LS-TRANS-3, LS-STATE-5)",
                         c.describe())
    return case.ok("split and coalesced writes; silent during our turn")


def server_max_frame(ctx):
    """A ClientHello with its fields in reverse order, an unknown field and
    max_version twice (0, then 1: the last wins), then an EndTurn frame of
    exactly MAX_FRAME bytes padded by an unknown field: the server must
    accept both (LS-FRAME-2, LS-FRAME-6) and complete the sync."""
    case = Case(ctx)
    db, srv = _server(ctx)
    conn = case.connect(srv.address)
    V, L = pbwire.VARINT, pbwire.LEN
    k, vi = pbwire.key, pbwire.varint
    nonce = os.urandom(32)
    body = (k(4, L) + vi(32) + nonce + k(2, V) + vi(0) + k(9, V) + vi(5)
            + k(1, V) + vi(1) + k(2, V) + vi(1))
    ch = pbwire.with_prefix(k(1, L) + vi(len(body)) + body)
    conn.send(ch)
    r = conn.recv()
    if not (r.kind == "frame" and r.body == "server_hello"):
        return case.fail("ClientHello with reordered, repeated and unknown "
                         "fields not accepted", "ServerHello", r.describe())
    th = peers.transcript_hash(ch, r.raw)
    conn.send_frame("client_auth", {"mac": client_mac(ctx.secret, th)})
    r = conn.recv()
    if not (r.kind == "frame" and r.body == "server_auth"
            and r.msg["mac"] == server_mac(ctx.secret, th)):
        return case.fail("handshake over the received bytes failed",
                         "a valid server_auth", r.describe())
    recon = Reconciler([_client_table()])
    conn.send_frame("open_tables",
                    {"tables": [peers.table_schema(recon.tables[0])]})
    r = conn.recv()
    if r.body != "tables_opened":
        return case.fail("open failed", "TablesOpened", r.describe())
    for b, m in recon.first_turn():
        conn.send_frame(b, m)
    # Frame{end_turn: EndTurn{field 15: pad}} of exactly MAX_FRAME bytes
    n = pbwire.MAX_FRAME
    pad = n - 20
    while True:
        inner = k(15, L) + vi(pad)
        et_len = len(inner) + pad
        total = len(k(10, L) + vi(et_len)) + et_len
        if total == n:
            break
        pad += n - total
    payload = k(10, L) + vi(et_len) + inner + bytes(pad)
    assert len(payload) == n
    conn.send(pbwire.with_prefix(payload),
              "EndTurn{unknown field 15: %d bytes} (N = MAX_FRAME)" % pad)
    res = peers.drive(conn, recon, False)
    if res.ending != "committed":
        return case.fail("the sync did not complete after a frame of "
                         "MAX_FRAME bytes: %s" % res.what, "Committed",
                         res.what)
    return case.ok("accepted a frame of exactly MAX_FRAME bytes")


def server_edge_values(ctx):
    """Rows whose UUIDs have no version or variant bits (all zero, all
    ones), and values at their edges, one NULL sent as null: false: the
    server stores them exactly (LS-UUID-1, LS-UUID-2, LS-VALUE-2)."""
    case = Case(ctx)
    db, srv = _server(ctx)
    try:
        conn, s, r = _open_session(case, srv.address)
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    if r.body != "tables_opened":
        return case.fail("open failed", "TablesOpened", r.describe())
    V = pbwire.value_msg
    edge = [
        (b"\0" * 16, [V(-1.5e308), V("min"), V(-(1 << 63))]),
        (b"\xff" * 16, [V(5e-324), V("max"), V((1 << 63) - 1)]),
        (bytes(range(16)), [{"null": False}, V(""), V(0)]),
    ]
    t = TableData(TABLE, COLUMNS)
    for u, vals in edge:     # canonical order: area, name, pop
        t.add(u, vals)
    recon = Reconciler([t])
    for b, m in recon.first_turn():
        conn.send_frame(b, m)
    conn.send_frame("end_turn")
    res = peers.drive(conn, recon, False)
    if res.ending != "committed":
        return case.fail("the sync did not complete: %s" % res.what,
                         "Committed", res.what)
    time.sleep(0.2)
    got = {}
    for row in db.rows(TABLE):
        got[str(row.get(peers.UUID_COLUMN)).lower()] = (
            row["name"], row["pop"], row["area"])
    want = {peers.uuid_text(b"\0" * 16): ("min", -(1 << 63), -1.5e308),
            peers.uuid_text(b"\xff" * 16): ("max", (1 << 63) - 1, 5e-324),
            peers.uuid_text(bytes(range(16))): ("", 0, None)}
    for u, w in want.items():
        h = got.get(u)
        if h is None or h != w:
            return case.fail("row %s not stored exactly" % u, repr(w),
                             repr(h))
    return case.ok("edge UUIDs and values stored exactly")


def server_pg_unmapped_type(ctx):
    case = Case(ctx)
    db = ctx.database("postgres", "server")
    db.execute('CREATE TABLE events (name text, span interval, '
               '_lipsync_uuid uuid UNIQUE)')
    before = db.snapshot()
    srv = ctx.start_server(ctx.impl, db, ["events"])
    conn = case.connect(srv.address)
    s = ClientSession(conn, ctx.secret)
    try:
        s.handshake()
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    conn.send_frame("open_tables", {"tables": [peers.table_schema(
        ("events", [("name", "text"), ("span", "text")]))]})
    exp = ("Error SCHEMA_MISMATCH naming column span (type interval has no "
           "canonical type), then close; database unchanged")
    ok, what, err = expect_error_close(conn, [C["SCHEMA_MISMATCH"]])
    if not ok:
        return case.fail(what, exp, what)
    if "span" not in err.msg.get("message", ""):
        return case.fail("SCHEMA_MISMATCH does not name the column", exp,
                         err.describe())
    time.sleep(0.2)
    return _unchanged(case, db, before) or case.ok(what)


def _type_vectors():
    import re
    from . import coverage
    text = coverage.SPEC.read_text(encoding="utf-8")
    return re.findall(r'^\| (V-TYPE-\d+) \| `"(.*)"` \| `([a-z]+)` \|$',
                      text, re.M)


def server_sqlite_declared_types(ctx):
    """A SQLite table with a column of each declared type of V-TYPE-1 to
    V-TYPE-58 (those SQLite parses and reports as written): an OpenTables
    with their canonical types must be accepted (LS-TYPE-5)."""
    case = Case(ctx)
    db = ctx.database("sqlite", "server")
    cols, defs = [], []
    for vid, decl, canon in _type_vectors():
        name = "c" + vid.split("-")[-1]
        try:
            db.execute('CREATE TABLE probe ("x" %s)' % decl)
            rep = db.table_columns("probe")[0][1]
            db.execute("DROP TABLE probe")
        except Exception:
            continue
        if rep != decl:
            continue
        cols.append((name, canon))
        defs.append('"%s" %s' % (name, decl))
    db.execute('CREATE TABLE typed (%s, _lipsync_uuid TEXT UNIQUE)'
               % ", ".join(defs))
    srv = ctx.start_server(ctx.impl, db, ["typed"])
    conn = case.connect(srv.address)
    s = ClientSession(conn, ctx.secret)
    try:
        s.handshake()
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    r = s.open_tables([("typed", cols)])
    if not (r.kind == "frame" and r.body == "tables_opened"):
        return case.fail("the declared types were not mapped as LS-TYPE-5 "
                         "says", "TablesOpened for %d columns" % len(cols),
                         r.describe())
    conn.close()
    return case.ok("%d declared types mapped" % len(cols))


def server_invalid_utf8(ctx):
    """A server row whose TEXT is not UTF-8 (a crafted SQLite database):
    asked for its rows, the server must fail with INVALID_VALUE instead of
    sending it (LS-VALUE-5)."""
    case = Case(ctx)
    db = _db_with_table(ctx, "server", rows=SERVER_ROWS)
    db.execute("INSERT INTO cities (name, pop, area) VALUES "
               "(CAST(x'ff41' AS TEXT), 7, 1.0)")
    before = db.snapshot()
    srv = ctx.start_server(ctx.impl, db, [TABLE])
    try:
        conn, s, r = _open_session(case, srv.address)
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    exp = "Error INVALID_VALUE, then close; no Rows with the value"
    if r.body != "tables_opened":
        if r.is_error([C["INVALID_VALUE"]]):
            return case.ok(r.describe())
        return case.fail("open failed", exp, r.describe())
    recon = Reconciler([TableData(TABLE, COLUMNS)])
    for b, m in recon.first_turn():
        conn.send_frame(b, m)
    conn.send_frame("end_turn")
    while True:
        r = conn.recv()
        if r.kind == "frame" and r.body == "rows":
            for row in r.msg["rows"]:
                for v in row["values"]:
                    if "text" in v and b"\xff" in v["text"]:
                        return case.fail("the server sent the ill-formed "
                                         "TEXT value", exp, r.describe())
            continue
        if r.kind == "frame" and r.body in ("need", "ranges"):
            continue
        break
    if not r.is_error([C["INVALID_VALUE"]]):
        return case.fail("no INVALID_VALUE", exp, r.describe())
    c = conn.wait_close()
    if c.kind not in ("eof", "reset"):
        return case.fail("no close after the Error", exp, c.describe())
    time.sleep(0.2)
    return _unchanged(case, db, before) or case.ok(r.describe())


def server_constraint(ctx):
    """The server's table has a UNIQUE name; the client pushes a row
    with a name the server holds under another UUID: the insert fails, so
    the server must fail with STORAGE_ERROR (LS-APPLY-2), unchanged."""
    case = Case(ctx)
    db = ctx.database("sqlite", "server")
    db.execute('CREATE TABLE cities (name TEXT UNIQUE, pop INTEGER, '
               'area REAL, _lipsync_uuid TEXT UNIQUE)')
    db._remember(TABLE, COLUMNS)
    db.insert(TABLE, [list(r) for r in SERVER_ROWS])
    before = db.snapshot()
    srv = ctx.start_server(ctx.impl, db, [TABLE])
    try:
        conn, s, r = _open_session(case, srv.address)
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    if r.body != "tables_opened":
        return case.fail("open failed", "TablesOpened", r.describe())
    recon = Reconciler([_client_table(rows=[SERVER_ROWS[0]])])
    for b, m in recon.first_turn():
        conn.send_frame(b, m)
    conn.send_frame("end_turn")
    res = peers.drive(conn, recon, False)
    exp = "Error STORAGE_ERROR (UNIQUE violated), then close; unchanged"
    if not (res.ending == "error" and res.last.code == C["STORAGE_ERROR"]):
        return case.fail(res.what, exp, res.what)
    c = conn.wait_close()
    if c.kind not in ("eof", "reset"):
        return case.fail("no close after the Error", exp, c.describe())
    time.sleep(0.2)
    return _unchanged(case, db, before) or case.ok(res.what)


def server_prepared_in_transaction(ctx):
    """SQLite: when TablesOpened arrives, the server has begun its
    transaction and prepared the table (it gives its rows UUIDs, a
    write): another writer is locked out until the session ends, and a
    close rolls the preparation back (LS-OPEN-9)."""
    import sqlite3
    case = Case(ctx)
    db, srv = _server(ctx)
    before = db.snapshot()
    try:
        conn, s, r = _open_session(case, srv.address)
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    if r.body != "tables_opened":
        return case.fail("open failed", "TablesOpened", r.describe())
    exp = ("a write by another connection fails (the server's transaction "
           "holds the database) while the session lasts")
    c = sqlite3.connect(db.spec(), timeout=0.3, isolation_level=None)
    try:
        c.execute("INSERT INTO cities (name) VALUES ('intruder')")
        locked = False
    except sqlite3.OperationalError as e:
        locked = "locked" in str(e) or "busy" in str(e)
    finally:
        c.close()
    conn.close()
    if not locked:
        return case.fail("the database was writable after TablesOpened: "
                         "no transaction holds the prepared table", exp,
                         "the INSERT succeeded")
    time.sleep(0.5)
    return _unchanged(case, db, before) or case.ok(
        "locked after TablesOpened; rolled back on close")


def server_locked(ctx):
    """SQLite: another connection holds the database's write lock while a
    client opens a session and pushes rows. The server may wait for the
    lock, at most its timeout, but then must fail with TRY_AGAIN, not
    STORAGE_ERROR (LS-OPEN-9, LS-ERR-10), and change nothing; once the
    lock is gone, the same sync succeeds. The wait is bounded by the
    server's timeout (default 60 s), so the test waits up to 75 s."""
    import sqlite3
    case = Case(ctx)
    db, srv = _server(ctx)
    before = db.snapshot()
    lock = sqlite3.connect(db.spec(), isolation_level=None, timeout=0)
    lock.execute("BEGIN IMMEDIATE")
    exp = ("Error TRY_AGAIN (a lock held by another writer, waited for at "
           "most the server's timeout), then close; database unchanged")
    try:
        conn = case.connect(srv.address)
        conn.timeout = 75
        s = ClientSession(conn, ctx.secret)
        try:
            s.handshake()
        except peers.HandshakeFailed as e:
            return case.fail("handshake failed: %s" % e, "handshake",
                             str(e))
        recon = Reconciler([_client_table()])
        r = s.open_tables(recon.tables)
        if r.kind == "frame" and r.body == "tables_opened":
            for b, m in recon.first_turn():
                conn.send_frame(b, m)
            conn.send_frame("end_turn")
            res = peers.drive(conn, recon, False)
            r = res.last
            if res.ending == "committed":
                return case.fail("the server committed while another "
                                 "connection held the write lock", exp,
                                 res.what)
        if r is None or not r.is_error([C["TRY_AGAIN"]]):
            return case.fail("no TRY_AGAIN while the database was locked",
                             exp, r.describe() if r else "nothing")
        c = conn.wait_close()
        if c.kind not in ("eof", "reset"):
            return case.fail("no close after the Error", exp, c.describe())
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    bad = _unchanged(case, db, before)
    if bad:
        return bad
    got = _sync_case(ctx, server=(db, srv))
    if isinstance(got, Outcome):
        return got
    res = got[3]
    if res.ending != "committed":
        return case.fail("the same sync, once the lock was gone, did not "
                         "complete: %s" % res.what, "Committed (LS-ERR-10)",
                         res.what)
    return case.ok("TRY_AGAIN while locked; committed afterwards")

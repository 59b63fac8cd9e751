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
"""

import os
import struct
import time

from . import pbwire
from . import peers
from .core import Outcome, Test, failed, passed
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
    if r.raw != bytes.fromhex("000000023200"):
        return case.fail("TablesOpened not encoded as V-FRAME-2",
                         "000000023200", r.raw.hex())
    conn.close()
    time.sleep(0.5)
    bad = _unchanged(case, db, before)
    return bad or case.ok("handshake and open valid; close rolled back")


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


def _hello_error(ctx, msg, codes, expected):
    case = Case(ctx)
    db, srv = _server(ctx)
    conn = case.connect(srv.address)
    conn.send_frame("client_hello", msg)
    ok, what, _ = expect_error_close(conn, codes)
    return case.ok(what) if ok else case.fail(what, expected, what)


def server_min_above_max(ctx):
    return _hello_error(ctx, {"min_version": 3, "max_version": 1,
                              "nonce": os.urandom(32)},
                        [C["PROTOCOL_ERROR"]],
                        "Error PROTOCOL_ERROR (check 1 of LS-HELLO-5), close")


def server_short_nonce(ctx):
    return _hello_error(ctx, {"min_version": 1, "max_version": 1,
                              "nonce": os.urandom(16)},
                        [C["PROTOCOL_ERROR"]],
                        "Error PROTOCOL_ERROR (nonce not 32 bytes), close")


def _auth_case(ctx, make_mac, expected_text):
    case = Case(ctx)
    db, srv = _server(ctx)
    before = db.snapshot()
    conn = case.connect(srv.address)
    s = ClientSession(conn, ctx.secret)
    r = s.hello()
    if not (r.kind == "frame" and r.body == "server_hello"):
        return case.fail("no ServerHello", "ServerHello", r.describe())
    conn.send_frame("client_auth", {"mac": make_mac(s)})
    ok, what, _ = expect_error_close(conn, [C["AUTH_FAILED"]])
    if not ok:
        return case.fail(what, expected_text, what)
    time.sleep(0.2)
    return _unchanged(case, db, before) or case.ok(what)


AUTH_EXPECTED = ("Error AUTH_FAILED, then close; no server_auth "
                 "(LS-AUTH-7); database untouched")


def server_wrong_secret(ctx):
    return _auth_case(ctx, lambda s: client_mac(b"not the secret", s.th),
                      AUTH_EXPECTED)


def server_reflected_proof(ctx):
    # The label-swapped MAC: what the server itself would send as its
    # server_auth. Reflection resistance (section 13) rests on the labels.
    return _auth_case(ctx, lambda s: server_mac(ctx.secret, s.th),
                      AUTH_EXPECTED)


def server_short_mac(ctx):
    return _auth_case(ctx, lambda s: client_mac(ctx.secret, s.th)[:31],
                      "Error AUTH_FAILED (mac not 32 bytes), then close")


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


def _raw_case(ctx, data, codes, expected, half_close=False,
              allow_close=False, after_open=False):
    case = Case(ctx)
    db, srv = _server(ctx)
    before = db.snapshot()
    if after_open:
        try:
            conn, s, r = _open_session(case, srv.address)
        except peers.HandshakeFailed as e:
            return case.fail("handshake failed: %s" % e, "handshake", str(e))
        if r.body != "tables_opened":
            return case.fail("open failed", "TablesOpened", r.describe())
    else:
        conn = case.connect(srv.address)
    conn.send(data)
    if half_close:
        conn.shutdown_write()
    ok, what, _ = expect_error_close(conn, codes, allow_close=allow_close)
    if not ok:
        return case.fail(what, expected, what)
    time.sleep(0.3)
    return _unchanged(case, db, before) or case.ok(what)


def server_truncated_frame(ctx):
    # A Rows frame announcing 64 bytes, of which 7 arrive, then the
    # client's sending direction ends: mid-session, after TablesOpened.
    part = struct.pack(">I", 64) + bytes.fromhex("42300801122a0a")
    return _raw_case(ctx, part, [C["PROTOCOL_ERROR"]],
                     "close, or Error PROTOCOL_ERROR then close "
                     "(LS-FRAME-10); database unchanged",
                     half_close=True, allow_close=True, after_open=True)


def server_truncated_prefix(ctx):
    return _raw_case(ctx, bytes.fromhex("0000"), [C["PROTOCOL_ERROR"]],
                     "close, or Error PROTOCOL_ERROR then close (V-BAD-8)",
                     half_close=True, allow_close=True)


def server_too_large(ctx):
    # V-BAD-5: the prefix alone; the body is never sent, so a server that
    # tries to read it stays silent past the test's timeout.
    return _raw_case(ctx, bytes.fromhex("01000001"), [C["FRAME_TOO_LARGE"]],
                     "Error FRAME_TOO_LARGE at once, without waiting for "
                     "the 16777217 announced bytes, then close")


def server_garbage_http(ctx):
    # V-BAD-6: "GET " read as a length prefix is 1195725856.
    return _raw_case(ctx, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                     [C["FRAME_TOO_LARGE"]],
                     "Error FRAME_TOO_LARGE (V-BAD-6: \"GET \" is a length "
                     "above MAX_FRAME), then close")


def server_empty_frame(ctx):
    return _raw_case(ctx, bytes.fromhex("00000000"),
                     [C["UNEXPECTED_MESSAGE"]],
                     "Error UNEXPECTED_MESSAGE (V-BAD-1), then close")


def server_undecodable(ctx):
    return _raw_case(ctx, bytes.fromhex("000000020a05"),
                     [C["PROTOCOL_ERROR"]],
                     "Error PROTOCOL_ERROR (V-BAD-4), then close")


def server_unknown_body(ctx):
    # V-BAD-2 (Frame field 13) where the server waits for the first turn.
    return _raw_case(ctx, bytes.fromhex("000000026a00"),
                     [C["UNEXPECTED_MESSAGE"]],
                     "Error UNEXPECTED_MESSAGE (V-BAD-2), then close; "
                     "database unchanged", after_open=True)


def server_first_not_hello(ctx):
    return _raw_case(ctx, pbwire.frame("rows", {"table": 0, "rows": []}),
                     [C["UNEXPECTED_MESSAGE"]],
                     "Error UNEXPECTED_MESSAGE (first frame not a "
                     "ClientHello), then close")


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


def _open_case(ctx, tables, codes, expected, srv_kwargs=None):
    case = Case(ctx)
    db, srv = _server(ctx, **(srv_kwargs or {}))
    before = db.snapshot()
    conn = case.connect(srv.address)
    s = ClientSession(conn, ctx.secret)
    try:
        s.handshake()
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    conn.send_frame("open_tables", {"tables": tables})
    ok, what, _ = expect_error_close(conn, codes)
    if not ok:
        return case.fail(what, expected, what)
    time.sleep(0.3)
    return _unchanged(case, db, before) or case.ok(what)


def server_unknown_table(ctx):
    return _open_case(ctx, [peers.table_schema(("ghost", COLUMNS))],
                      [C["UNKNOWN_TABLE"]],
                      "Error UNKNOWN_TABLE (offered, as every name is, but "
                      "missing), then close",
                      {"all_tables": True, "tables": ()})


def server_not_offered(ctx):
    # "other" exists in the server's database but is not offered.
    return _open_case(ctx, [peers.table_schema(("other", COLUMNS))],
                      [C["TABLE_NOT_OFFERED"]],
                      "Error TABLE_NOT_OFFERED, then close",
                      {"extra_tables": ("other",)})


def server_not_offered_missing(ctx):
    # LS-OPEN-3: the same answer for a name that exists nowhere.
    return _open_case(ctx, [peers.table_schema(("nowhere", COLUMNS))],
                      [C["TABLE_NOT_OFFERED"]],
                      "Error TABLE_NOT_OFFERED (same as for an existing "
                      "table not offered), then close")


def server_schema_mismatch(ctx):
    cols = [("name", "text"), ("pop", "text"), ("area", "real")]
    return _open_case(ctx, [peers.table_schema((TABLE, cols))],
                      [C["SCHEMA_MISMATCH"]],
                      "Error SCHEMA_MISMATCH, then close; database unchanged")


def server_bad_schema_fingerprint(ctx):
    return _open_case(ctx, [peers.table_schema((TABLE, COLUMNS),
                                               b"\x01" * 32)],
                      [C["PROTOCOL_ERROR"]],
                      "Error PROTOCOL_ERROR (fingerprint is not the schema "
                      "fingerprint of the columns), then close")


def _sync_case(ctx, mutate_verify=None, stop_after_rows=False):
    """A scripted client syncs CLIENT_ROWS with the server's SERVER_ROWS.
    Returns (case, db, before, SyncResult) or an Outcome on failure."""
    case = Case(ctx)
    db, srv = _server(ctx)
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
    # the server's Verify must describe the union too (LS-VERIFY-2)
    mine = recon.verify()["tables"][0]
    pv = res.peer_verify["tables"][0]
    if (pv["count"], pv["fingerprint"]) != (mine["count"],
                                            mine["fingerprint"]):
        return case.fail("server's Verify differs from the union", repr(mine),
                         repr(pv))
    return case.ok("server committed the union of %d rows" % len(want))


def _verify_fail_case(ctx, mutate, code, expected):
    got = _sync_case(ctx, mutate_verify=mutate)
    if isinstance(got, Outcome):
        return got
    case, db, before, res, conn, recon = got
    r = res.last
    if res.ending == "committed":
        return case.fail("the server committed", expected, "Committed")
    if not (res.ending == "error" and r is not None and r.code == code):
        return case.fail(res.what, expected, res.what)
    c = conn.wait_close()
    if c.kind not in ("eof", "reset"):
        return case.fail("no close after the Error", expected, c.describe())
    time.sleep(0.3)
    return _unchanged(case, db, before) or case.ok(res.what)


def _wrong_fp(v):
    for t in v["tables"]:
        t["fingerprint"] = bytes(b ^ 0xFF for b in t["fingerprint"])
    return v


def _add_conflict(v):
    v["tables"][0]["conflicts"] = 1
    return v


def server_verify_mismatch(ctx):
    return _verify_fail_case(ctx, _wrong_fp, C["VERIFY_FAILED"],
                             "Error VERIFY_FAILED, then close; database "
                             "unchanged")


def server_verify_conflict(ctx):
    return _verify_fail_case(ctx, _add_conflict, C["CONFLICT"],
                             "Error CONFLICT, then close; database unchanged")


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
    ok, what, _ = expect_error_close(run.conn, [C["AUTH_FAILED"]])
    bad = run.finish(False, what, exp)
    if not ok:
        return run.case.fail(what, exp, what)
    return bad or run.case.ok(what)


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
    if ch["features"]:
        probs.append("features %r" % ch["features"])
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
    if len(tables) != 1 or tables[0] != want:
        return run, run.case.fail(
            "OpenTables does not describe the client's table",
            pbwire.render({"open_tables": {"tables": [want]}}),
            r.describe())
    names = [n for n, _ in COLUMNS]
    mine = TableData(TABLE, COLUMNS, [
        (peers.uuid_bytes(i, b"server"), dict(zip(names, row)))
        for i, row in enumerate(SERVER_ROWS)])
    recon = Reconciler([mine])
    run.conn.send_frame("tables_opened")
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
    return run.case.ok("client committed the union of %d rows" % len(want))


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


def client_verify_mismatch(ctx):
    """The scripted server sends a wrong Verify, then Committed anyway: the
    client must not commit (LS-COMMIT-1, LS-COMMIT-5)."""
    run, res = _client_sync(ctx, mutate_verify=_wrong_fp,
                            send_committed=False)
    if isinstance(res, Outcome):
        return res
    exp = ("no commit even though Committed arrives; Error VERIFY_FAILED "
           "optional; non-zero exit; database unchanged")
    if res.ending != "decided":
        run.finish(False, "", exp, allow_frames=("error",))
        return run.case.fail("the session did not reach Verify: %s"
                             % res.what, exp, res.what)
    run.conn.send_frame("committed")
    return run.finish(False, "", exp, allow_frames=("error",)) or \
        run.case.ok("client refused to commit")


def describe_frame(raw):
    """A complete frame (length prefix included), readably; for the
    runner's frame recorder."""
    return pbwire.render_bytes(raw)


# ---- the list ------------------------------------------------------------------

def _t(name, reqs, fn, role, description, level="MUST"):
    return Test(name=name, requirements=tuple(reqs), run=fn, level=level,
                role=role, description=description)


def tests():
    S, K = "server", "client"
    return [
        _t("wire/server/auth/right-secret",
           ["LS-VER-1", "LS-VER-3", "LS-FEAT-5", "LS-AUTH-3", "LS-AUTH-4",
            "LS-AUTH-7", "LS-OPEN-7", "LS-FRAME-5", "LS-FRAME-11",
            "LS-COMMIT-6"], server_baseline, S,
           "valid handshake and open, then a close: server rolls back"),
        _t("wire/server/version/highest-common",
           ["LS-VER-1", "LS-VER-3"], server_version_highest, S,
           "client offers 1..3: the server picks 1"),
        _t("wire/server/version/unknown-features",
           ["LS-FEAT-3", "LS-AUTH-3"], server_unknown_feature, S,
           "unknown features offered are ignored, not accepted"),
        _t("wire/server/version/no-common",
           ["LS-VER-2", "LS-HELLO-5", "LS-ERR-4", "LS-ERR-1"],
           server_version_mismatch, S,
           "client offers 2..3: VERSION_MISMATCH with the server's range"),
        _t("wire/server/hello/min-above-max",
           ["LS-HELLO-5"], server_min_above_max, S,
           "ClientHello with min_version > max_version: PROTOCOL_ERROR"),
        _t("wire/server/hello/short-nonce",
           ["LS-HELLO-5", "LS-HELLO-3"], server_short_nonce, S,
           "ClientHello with a 16-byte nonce: PROTOCOL_ERROR"),
        _t("wire/server/auth/wrong-secret",
           ["LS-AUTH-6", "LS-AUTH-7", "LS-SEC-3", "LS-ERR-1"],
           server_wrong_secret, S,
           "client proof under another secret: AUTH_FAILED"),
        _t("wire/server/auth/replayed-proof",
           ["LS-AUTH-3", "LS-AUTH-6", "LS-VER-3"], server_replayed_proof, S,
           "a recorded ClientHello and client_auth replayed: AUTH_FAILED"),
        _t("wire/server/auth/reflected-proof",
           ["LS-AUTH-4", "LS-AUTH-6"], server_reflected_proof, S,
           "client_auth carrying the server-label MAC: AUTH_FAILED"),
        _t("wire/server/auth/short-mac",
           ["LS-AUTH-6"], server_short_mac, S,
           "client_auth with a 31-byte MAC: AUTH_FAILED"),
        _t("wire/server/frame/truncated",
           ["LS-FRAME-10", "LS-COMMIT-6"], server_truncated_frame, S,
           "stream ends inside a frame mid-session: close, unchanged"),
        _t("wire/server/frame/truncated-prefix",
           ["LS-FRAME-10"], server_truncated_prefix, S,
           "stream ends inside a length prefix (V-BAD-8): close"),
        _t("wire/server/frame/too-large",
           ["LS-FRAME-3", "LS-ERR-8"], server_too_large, S,
           "length prefix 16777217 (V-BAD-5): FRAME_TOO_LARGE at once"),
        _t("wire/server/frame/garbage-http",
           ["LS-FRAME-3", "LS-FRAME-1"], server_garbage_http, S,
           "an HTTP request (V-BAD-6): FRAME_TOO_LARGE"),
        _t("wire/server/frame/empty",
           ["LS-FRAME-9"], server_empty_frame, S,
           "an empty Frame (V-BAD-1): UNEXPECTED_MESSAGE"),
        _t("wire/server/frame/undecodable",
           ["LS-FRAME-7"], server_undecodable, S,
           "field length past the frame (V-BAD-4): PROTOCOL_ERROR"),
        _t("wire/server/frame/unknown-body",
           ["LS-FRAME-9", "LS-COMMIT-6"], server_unknown_body, S,
           "Frame field 13 after TablesOpened (V-BAD-2): UNEXPECTED_MESSAGE"),
        _t("wire/server/state/first-frame-not-hello",
           ["LS-HELLO-4", "LS-STATE-3"], server_first_not_hello, S,
           "Rows as the first frame: UNEXPECTED_MESSAGE"),
        _t("wire/server/state/end-turn-before-open",
           ["LS-STATE-3", "LS-TABLE-1"], server_end_turn_before_open, S,
           "EndTurn instead of OpenTables: UNEXPECTED_MESSAGE"),
        _t("wire/server/open/unknown-table",
           ["LS-OPEN-1"], server_unknown_table, S,
           "offer-all server, table missing: UNKNOWN_TABLE"),
        _t("wire/server/open/not-offered",
           ["LS-OPEN-1", "LS-OPEN-3"], server_not_offered, S,
           "existing table not offered: TABLE_NOT_OFFERED"),
        _t("wire/server/open/not-offered-missing",
           ["LS-OPEN-1", "LS-OPEN-3"], server_not_offered_missing, S,
           "missing table not offered: TABLE_NOT_OFFERED"),
        _t("wire/server/open/schema-mismatch",
           ["LS-OPEN-1", "LS-COMMIT-6"], server_schema_mismatch, S,
           "a column of another canonical type: SCHEMA_MISMATCH, unchanged"),
        _t("wire/server/open/bad-schema-fingerprint",
           ["LS-TABLE-7"], server_bad_schema_fingerprint, S,
           "a wrong schema fingerprint: PROTOCOL_ERROR"),
        _t("wire/server/sync/push-itemlist",
           ["LS-TURN-5", "LS-RECON-4", "LS-NEED-3", "LS-TURN-7",
            "LS-VERIFY-1", "LS-VERIFY-2", "LS-COMMIT-2", "LS-CLOSE-1",
            "LS-APPLY-1"], server_sync_push, S,
           "a scripted ItemList sync: the server commits the union"),
        _t("wire/server/verify/mismatch",
           ["LS-COMMIT-1", "LS-COMMIT-3", "LS-COMMIT-6"],
           server_verify_mismatch, S,
           "client Verify with a wrong fingerprint: VERIFY_FAILED, unchanged"),
        _t("wire/server/verify/conflicts",
           ["LS-COMMIT-1", "LS-COMMIT-3", "LS-COMMIT-6"],
           server_verify_conflict, S,
           "client Verify with conflicts 1: CONFLICT, unchanged"),
        _t("wire/server/session/close-mid-transfer",
           ["LS-FRAME-11", "LS-COMMIT-6"], server_close_mid_transfer, S,
           "client closes after sending Rows: server unchanged"),
        _t("wire/server/time/stall",
           ["LS-TIME-1"], server_stall, S,
           "a silent client: Error TIMEOUT within 75 s", level="SHOULD"),
        _t("wire/client/auth/wrong-server-proof",
           ["LS-AUTH-8", "LS-COMMIT-6"], client_wrong_server_proof, K,
           "server_auth under another secret: AUTH_FAILED, unchanged"),
        _t("wire/client/version/outside-range",
           ["LS-VER-4", "LS-ERR-4"], client_version_outside, K,
           "ServerHello version above the client's range: VERSION_MISMATCH"),
        _t("wire/client/open/schema-mismatch-error",
           ["LS-ERR-3", "LS-STATE-2", "LS-COMMIT-6"], client_schema_error, K,
           "server answers OpenTables with Error: no answer, unchanged"),
        _t("wire/client/session/close-mid-transfer",
           ["LS-FRAME-11", "LS-COMMIT-6"], client_close_mid_transfer, K,
           "server closes after sending Rows: client unchanged"),
        _t("wire/client/commit/verify-mismatch",
           ["LS-COMMIT-1", "LS-COMMIT-5"], client_verify_mismatch, K,
           "server Verify mismatch, then Committed: client does not commit"),
        _t("wire/client/sync/pull-itemlist",
           ["LS-HELLO-1", "LS-HELLO-2", "LS-HELLO-3", "LS-AUTH-5",
            "LS-TABLE-1", "LS-TABLE-5", "LS-TURN-5", "LS-RECON-4",
            "LS-VERIFY-2", "LS-COMMIT-4"], client_sync_pull, K,
           "a scripted server sync: the client commits the union"),
    ]

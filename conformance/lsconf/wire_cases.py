"""The wire tests as one table: each entry gives, in one place, a test's
name, the requirement IDs of spec/lipsync.md it checks, the role the
implementation plays, a one-line description, and how the test runs.

Most wire tests are one instance of a generic case: a case kind (a small
class whose fields are the case's data: the frames sent or the mutation of
a valid turn, the Error codes accepted, the expected behaviour in words)
whose run(ctx) sets up the session, sends, and checks the answer and, where
the spec says so, that the implementation's database is unchanged. Tests
with logic of their own are functions of wire.py, referenced from the
table.

wire.tests() imports this module; it imports wire.py's scaffolding.
"""

import os
import struct
import time
from collections import namedtuple

from . import pbwire
from . import peers
from . import wire
from .core import Outcome, Test
from .peers import ClientSession, client_mac, expect_error_close, server_mac
from .wire import (AUTH_EXPECTED, C, COLUMNS, PE, TABLE, Case, ClientRun,
                   _U1, _U2, _MID, _client_sync, _check_sent_frames,
                   _first_turn_sent, _no_conn, _open_session, _rows_sent,
                   _server, _start_turn_case, _sync_case, _unchanged)


def _fresh(data):
    """Case data as sent: |data|, or what it returns when it is a function
    (called each time the case runs: fresh nonces)."""
    return data() if callable(data) else data


def _error_unchanged(case, conn, codes, expected, db, before, settle,
                     allow_close=False):
    """The server must send one Error of |codes| and close (or, with
    |allow_close|, just close); then, |settle| seconds later (its rollback),
    its database must be as |before|."""
    ok, what, _ = expect_error_close(conn, codes, allow_close=allow_close)
    if not ok:
        return case.fail(what, expected, what)
    time.sleep(settle)
    return _unchanged(case, db, before) or case.ok(what)


# ---- case kinds against the implementation's server ----------------------

class HelloError(namedtuple("HelloError", "hello codes expected")):
    """Sends |hello| (a message, or a function that makes one) as the
    ClientHello: the server must answer with one Error of |codes|, then
    close."""

    def run(self, ctx):
        case = Case(ctx)
        db, srv = _server(ctx)
        conn = case.connect(srv.address)
        conn.send_frame("client_hello", _fresh(self.hello))
        ok, what, _ = expect_error_close(conn, self.codes)
        return case.ok(what) if ok else case.fail(what, self.expected, what)


class Auth(namedtuple("Auth", "mac expected")):
    """A valid ClientHello, then a client_auth carrying |mac|(session) (the
    ClientSession: its .secret, .th): the server must fail with
    AUTH_FAILED and close, its database untouched, the secret neither sent
    nor logged."""

    def run(self, ctx):
        case = Case(ctx)
        db, srv = _server(ctx)
        before = db.snapshot()
        conn = case.connect(srv.address)
        s = ClientSession(conn, ctx.secret)
        r = s.hello()
        if not (r.kind == "frame" and r.body == "server_hello"):
            return case.fail("no ServerHello", "ServerHello", r.describe())
        conn.send_frame("client_auth", {"mac": self.mac(s)})
        ok, what, _ = expect_error_close(conn, [C["AUTH_FAILED"]])
        if not ok:
            return case.fail(what, self.expected, what)
        time.sleep(0.2)
        return (_unchanged(case, db, before) or
                _check_sent_frames(case, ctx.secret, srv.stderr()) or
                case.ok(what))


class Raw(namedtuple("Raw", "data codes expected half_close allow_close "
                     "after_open", defaults=(False, False, False))):
    """Sends the bytes |data| on a new connection, or (|after_open|) after
    a handshake and TablesOpened; then (|half_close|) ends our sending
    direction. The server must send one Error of |codes| and close (or,
    with |allow_close|, just close), its database unchanged."""

    def run(self, ctx):
        case = Case(ctx)
        db, srv = _server(ctx)
        before = db.snapshot()
        if self.after_open:
            try:
                conn, s, r = _open_session(case, srv.address)
            except peers.HandshakeFailed as e:
                return case.fail("handshake failed: %s" % e, "handshake",
                                 str(e))
            if r.body != "tables_opened":
                return case.fail("open failed", "TablesOpened",
                                 r.describe())
        else:
            conn = case.connect(srv.address)
        conn.send(_fresh(self.data))
        if self.half_close:
            conn.shutdown_write()
        return _error_unchanged(case, conn, self.codes, self.expected, db,
                                before, 0.3, allow_close=self.allow_close)


class FirstFrame(namedtuple("FirstFrame", "data codes expected hello_ok")):
    """Sends |data| (a complete frame, or a function that makes one) as the
    first frame: the server must answer with an Error of |codes| and
    close, or (when |hello_ok|) with a ServerHello for version 1."""

    def run(self, ctx):
        case = Case(ctx)
        db, srv = _server(ctx)
        conn = case.connect(srv.address)
        conn.send(_fresh(self.data))
        expected = self.expected
        r = conn.recv()
        if r.kind == "frame" and r.body == "server_hello":
            if self.hello_ok and r.msg.get("version") == 1:
                return case.ok("ServerHello, version 1")
            return case.fail("the server answered with %s" % r.describe(),
                             expected, r.describe())
        if r.kind == "frame" and r.body == "error" and r.code in self.codes:
            c = conn.wait_close()
            if c.kind in ("eof", "reset"):
                return case.ok("%s, then closed" % r.describe())
            return case.fail("no close after the Error", expected,
                             c.describe())
        return case.fail("neither %s" % expected, expected, r.describe())


class Open(namedtuple("Open", "msg codes expected server",
                      defaults=(None,))):
    """A valid handshake, then |msg| as the OpenTables, to a server started
    with |server| (keyword arguments of _server; default: TABLE offered):
    the server must fail with |codes| and close, its database
    unchanged."""

    def run(self, ctx):
        case = Case(ctx)
        db, srv = _server(ctx, **(self.server or {}))
        before = db.snapshot()
        conn = case.connect(srv.address)
        s = ClientSession(conn, ctx.secret)
        try:
            s.handshake()
        except peers.HandshakeFailed as e:
            return case.fail("handshake failed: %s" % e, "handshake", str(e))
        conn.send_frame("open_tables", self.msg)
        return _error_unchanged(case, conn, self.codes, self.expected, db,
                                before, 0.3)


class VerifyFail(namedtuple("VerifyFail", "mutate code expected")):
    """A scripted sync (_sync_case) whose Verify |mutate|(message) ->
    message changes: the server must not commit, must fail with |code|
    and close, its database unchanged."""

    def run(self, ctx):
        got = _sync_case(ctx, mutate_verify=self.mutate)
        if isinstance(got, Outcome):
            return got
        case, db, before, res, conn, recon = got
        r, expected = res.last, self.expected
        if res.ending == "committed":
            return case.fail("the server committed", expected, "Committed")
        if not (res.ending == "error" and r is not None
                and r.code == self.code):
            return case.fail(res.what, expected, res.what)
        c = conn.wait_close()
        if c.kind not in ("eof", "reset"):
            return case.fail("no close after the Error", expected,
                             c.describe())
        time.sleep(0.3)
        return _unchanged(case, db, before) or case.ok(res.what)


class Cancelled(namedtuple("Cancelled", "expected")):
    """A scripted sync (_sync_case) that pushes its rows, then sends Error
    CANCELLED where its Verify would go (a dry run): the server must roll
    back, close without answering, its database unchanged."""

    def run(self, ctx):
        got = _sync_case(ctx, mutate_verify=lambda verify: None)
        if isinstance(got, Outcome):
            return got
        case, db, before, res, conn, recon = got
        if res.ending != "cancelled":
            return case.fail(res.what, self.expected, res.what)
        c = conn.wait_close()
        if c.kind not in ("eof", "reset"):
            return case.fail("the server answered the Error",
                             self.expected, c.describe())
        time.sleep(0.3)
        return _unchanged(case, db, before) or case.ok("closed, unchanged")


class FirstTurn(namedtuple("FirstTurn", "frames codes expected")):
    """Sends |frames| ([(body, msg)]) as the client's first turn, then
    EndTurn: the server must fail with one of |codes| and roll back."""

    def run(self, ctx):
        got = _start_turn_case(ctx)
        if isinstance(got, Outcome):
            return got
        case, db, before, conn, srv = got
        for b, m in _fresh(self.frames):
            conn.send_frame(b, m)
        conn.send_frame("end_turn")
        return _error_unchanged(case, conn, self.codes, self.expected, db,
                                before, 0.2)


class SecondTurn(namedtuple("SecondTurn", "mutate codes expected with_turn",
                            defaults=(False,))):
    """A scripted first turn (the ItemList of CLIENT_ROWS); the server
    answers (Need, Rows); our answer is changed by |mutate|([(body,
    msg)]) -> [(body, msg)] (|with_turn|: mutate(frames, the server's
    turn as Received frames)); the server must fail with |codes| and roll
    back."""

    def run(self, ctx):
        got = _first_turn_sent(ctx)
        if isinstance(got, Outcome):
            return got
        case, db, before, conn, srv, recon = got
        conn.send_frame("end_turn")
        turn, end = peers.read_turn(conn)
        if not (end.kind == "frame" and end.body == "end_turn"):
            return case.fail("the server did not answer the first turn",
                             "a turn", end.describe())
        try:
            mine = recon.answer(turn)
        except ValueError as e:
            return case.fail(str(e), "a valid turn", str(e))
        for b, m in (self.mutate(mine, turn) if self.with_turn
                     else self.mutate(mine)):
            conn.send_frame(b, m)
        conn.send_frame("end_turn")
        return _error_unchanged(case, conn, self.codes, self.expected, db,
                                before, 0.2)


# ---- case kinds against the implementation's client ----------------------

class ClientBadHello(namedtuple("ClientBadHello", "hello")):
    """The client's ClientHello is answered by ServerSession.hello(**|hello|)
    (a dict, or a function that makes one): the client must fail with
    PROTOCOL_ERROR and close, send no client_auth, exit non-zero, its
    database unchanged."""

    def run(self, ctx):
        run = ClientRun(ctx)
        if run.conn is None:
            return _no_conn(run)
        s = run.session
        r = s.read_hello()
        if r.body != "client_hello":
            return run.case.fail("no ClientHello", "ClientHello",
                                 r.describe())
        s.hello(**_fresh(self.hello))
        exp = ("Error PROTOCOL_ERROR, then close; no client_auth; non-zero "
               "exit; database unchanged")
        return run.refused([C["PROTOCOL_ERROR"]], exp)


class AfterVerify(namedtuple("AfterVerify", "ending frame expected ok_msg "
                             "mutate_verify", defaults=(None,))):
    """A scripted server syncs with the client up to both Verify (drive's
    |ending|: "committed" when they agree, "decided" when not; nothing
    sent after them; our Verify changed by |mutate_verify|), then sends
    |frame| ((body, msg)): the client must not commit, must exit
    non-zero, its database byte-identical."""

    def run(self, ctx):
        exp = self.expected
        run, res = _client_sync(ctx, mutate_verify=self.mutate_verify,
                                send_committed=False)
        if isinstance(res, Outcome):
            return res
        if res.ending != self.ending:
            run.finish(False, "", exp, allow_frames=("error",))
            return run.case.fail("the session did not reach Verify: %s"
                                 % res.what, exp, res.what)
        run.conn.send_frame(*self.frame)
        return run.finish(False, "", exp, allow_frames=("error",)) or \
            run.case.ok(self.ok_msg)


# ---- case data: frames, first turns, mutations ---------------------------

def _hello_bytes(**fields):
    """A ClientHello message (no Frame around it): version 1 and a fresh
    nonce unless |fields| say otherwise."""
    msg = {"min_version": 1, "max_version": 1, "nonce": os.urandom(32)}
    msg.update(fields)
    return pbwire.encode("ClientHello", msg)


def _in_frame(*fields):
    """A complete frame whose payload is |fields| (raw protobuf fields)."""
    return pbwire.with_prefix(b"".join(fields))


def _len_field(number, data):
    return pbwire.key(number, pbwire.LEN) + pbwire.varint(len(data)) + data


def _merged_hello():
    """The body ClientHello in two occurrences: versions, then the nonce
    (the example of LS-FRAME-6). Merged: a valid ClientHello; the last
    alone: versions 0..0. Nothing else conforms."""
    first = pbwire.encode("ClientHello", {"min_version": 1,
                                          "max_version": 1})
    second = pbwire.encode("ClientHello", {"nonce": os.urandom(32)})
    return _in_frame(_len_field(1, first), _len_field(1, second))


def _overwritten_malformed_hello():
    """A malformed ServerHello body (a length past its end), then a valid
    ClientHello: the later body replaces the earlier, but the earlier
    must still decode (LS-FRAME-7)."""
    return _in_frame(_len_field(2, bytes.fromhex("0a05")),
                     _len_field(1, _hello_bytes()))


def _wrong_wire_type_hello():
    """ClientHello.min_version (field 1, varint) also sent as a
    length-delimited field: undecodable or ignored (LS-FRAME-8)."""
    hello = _len_field(1, b"\x01") + _hello_bytes()
    return _in_frame(_len_field(1, hello))


def _uint32_overflow_hello():
    """ClientHello.max_version = 2^32 + 1: its low 32 bits are 1. Kept as
    1, or refused (LS-FRAME-13); never read as another version."""
    hello = _hello_bytes(max_version=0)  # max_version left out, then:
    hello += pbwire.key(2, pbwire.VARINT) + pbwire.varint((1 << 32) + 1)
    return _in_frame(_len_field(1, hello))


def _item(u, clock=1 << 16, site=b"\x11" * 16, **kw):
    m = {"uuid": u, "version": {"clock": clock, "site": site}}
    m.update(kw)
    return m


def _items(uuids):
    return {"items": [_item(u) for u in uuids]}


def _ranges(*ranges):
    """A first turn of one Ranges frame (table 0) holding |ranges|."""
    return [("ranges", {"table": 0, "ranges": list(ranges)})]


def _mut_rows(fn):
    """A mutation: |fn| changes (in place) the first Row of our answer."""
    def mutate(frames):
        out = []
        for b, m in frames:
            if b == "rows":
                m = dict(m)
                m["rows"] = [dict(r) for r in m["rows"]]
                fn(m["rows"][0])
            out.append((b, m))
        return out
    return mutate


def _then(*extra):
    """A mutation: the frames |extra| ([(body, msg)]) after our answer."""
    return lambda frames: frames + list(extra)


def _need_sent(times):
    """A mutation (with the server's turn): |times| Need frames after our
    answer, each naming the first row the server sent in its turn."""
    def mutate(frames, turn):
        sent = _rows_sent(turn)
        if not sent:
            raise ValueError("the server sent no row in its turn")
        return frames + [("need", {"table": 0, "uuids": sent[:1]})
                         for _ in range(times)]
    return mutate


def _row_again(frames):
    """A mutation: the first Row of our answer again, in a Rows frame of
    its own."""
    rows = [m for b, m in frames if b == "rows"]
    if not rows:
        raise ValueError("no Rows in our answer")
    return frames + [("rows", {"table": 0,
                               "rows": [dict(rows[0]["rows"][0])]})]


def _wrong_fp(v):
    for t in v["tables"]:
        t["fingerprint"] = bytes(b ^ 0xFF for b in t["fingerprint"])
    return v


def _add_conflict(v):
    v["tables"][0]["conflicts"] = 1
    return v


def _extra_table(v):
    v["tables"].append(dict(v["tables"][0]))
    return v


def _short_fingerprint(v):
    v["tables"][0]["fingerprint"] = v["tables"][0]["fingerprint"][:15]
    return v


# ---- the table -----------------------------------------------------------

def case(name, reqs, role, description, how, level="MUST", backends=()):
    """One test of the table: its name, the requirement IDs it checks, the
    role the implementation plays ("server" or "client"), a description,
    and |how| it runs: a case kind with the case's data (FirstTurn, Raw,
    Open, ...: its run method), or a test function of its own."""
    return Test(name=name, requirements=tuple(reqs),
                run=getattr(how, "run", how), level=level, role=role,
                backends=tuple(backends), description=description)


def tests():
    """The wire tests of this table, in their listing order."""
    S, K = "server", "client"
    R = "LS-STATE-4"
    SQ = ("sqlite",)
    return [
        case("wire/server/auth/right-secret",
             ["LS-VER-1", "LS-VER-3", "LS-FEAT-5", "LS-AUTH-3", "LS-AUTH-4",
              "LS-AUTH-7", "LS-OPEN-8", "LS-FRAME-5", "LS-FRAME-11",
              "LS-COMMIT-6", "LS-TOMB-2", "LS-VERSION-2"], S,
             "valid handshake and open, then a close: server rolls back",
             wire.server_baseline),
        case("wire/server/version/highest-common",
             ["LS-VER-1", "LS-VER-3"], S,
             "client offers 1..3: the server picks 1",
             wire.server_version_highest),
        case("wire/server/version/unknown-features",
             ["LS-FEAT-3", "LS-FEAT-4", "LS-AUTH-3"], S,
             "unknown features offered are ignored, not accepted",
             wire.server_unknown_feature),
        case("wire/server/version/no-common",
             ["LS-VER-2", "LS-HELLO-5", "LS-ERR-4", "LS-ERR-1"], S,
             "client offers 2..3: VERSION_MISMATCH with the server's range",
             wire.server_version_mismatch),
        case("wire/server/hello/min-above-max", ["LS-HELLO-5"], S,
             "ClientHello with min_version > max_version: PROTOCOL_ERROR",
             HelloError(lambda: {"min_version": 3, "max_version": 1,
                                 "nonce": os.urandom(32)},
                        [C["PROTOCOL_ERROR"]],
                        "Error PROTOCOL_ERROR (check 1 of LS-HELLO-5), "
                        "close")),
        case("wire/server/hello/short-nonce", ["LS-HELLO-5", "LS-HELLO-3"], S,
             "ClientHello with a 16-byte nonce: PROTOCOL_ERROR",
             HelloError(lambda: {"min_version": 1, "max_version": 1,
                                 "nonce": os.urandom(16)},
                        [C["PROTOCOL_ERROR"]],
                        "Error PROTOCOL_ERROR (nonce not 32 bytes), close")),
        case("wire/server/auth/wrong-secret",
             ["LS-AUTH-6", "LS-AUTH-7", "LS-SEC-3", "LS-ERR-1", "LS-ERR-6",
              "LS-ERR-9"], S,
             "client proof under another secret: AUTH_FAILED",
             Auth(lambda s: client_mac(b"not the secret", s.th),
                  AUTH_EXPECTED)),
        case("wire/server/auth/replayed-proof",
             ["LS-AUTH-3", "LS-AUTH-6", "LS-VER-3"], S,
             "a recorded ClientHello and client_auth replayed: AUTH_FAILED",
             wire.server_replayed_proof),
        # The label-swapped MAC: what the server itself would send as its
        # server_auth. Reflection resistance (section 13) rests on the
        # labels.
        case("wire/server/auth/reflected-proof", ["LS-AUTH-4", "LS-AUTH-6"],
             S, "client_auth carrying the server-label MAC: AUTH_FAILED",
             Auth(lambda s: server_mac(s.secret, s.th), AUTH_EXPECTED)),
        case("wire/server/auth/short-mac", ["LS-AUTH-6"], S,
             "client_auth with a 31-byte MAC: AUTH_FAILED",
             Auth(lambda s: client_mac(s.secret, s.th)[:31],
                  "Error AUTH_FAILED (mac not 32 bytes), then close")),
        # A Rows frame announcing 64 bytes, of which 7 arrive, then the
        # client's sending direction ends: mid-session, after TablesOpened.
        case("wire/server/frame/truncated", ["LS-FRAME-10", "LS-COMMIT-6"],
             S, "stream ends inside a frame mid-session: close, unchanged",
             Raw(struct.pack(">I", 64) + bytes.fromhex("42300801122a0a"),
                 [C["PROTOCOL_ERROR"]],
                 "close, or Error PROTOCOL_ERROR then close "
                 "(LS-FRAME-10); database unchanged",
                 half_close=True, allow_close=True, after_open=True)),
        case("wire/server/frame/truncated-prefix", ["LS-FRAME-10"], S,
             "stream ends inside a length prefix (V-BAD-8): close",
             Raw(bytes.fromhex("0000"), [C["PROTOCOL_ERROR"]],
                 "close, or Error PROTOCOL_ERROR then close (V-BAD-8)",
                 half_close=True, allow_close=True)),
        # V-BAD-5: the prefix alone; the body is never sent, so a server
        # that tries to read it stays silent past the test's timeout.
        case("wire/server/frame/too-large", ["LS-FRAME-3", "LS-ERR-8"], S,
             "length prefix 16777217 (V-BAD-5): FRAME_TOO_LARGE at once",
             Raw(bytes.fromhex("01000001"), [C["FRAME_TOO_LARGE"]],
                 "Error FRAME_TOO_LARGE at once, without waiting for the "
                 "16777217 announced bytes, then close")),
        # V-BAD-6: "GET " read as a length prefix is 1195725856.
        case("wire/server/frame/garbage-http", ["LS-FRAME-3", "LS-FRAME-1"],
             S, "an HTTP request (V-BAD-6): FRAME_TOO_LARGE",
             Raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", [C["FRAME_TOO_LARGE"]],
                 "Error FRAME_TOO_LARGE (V-BAD-6: \"GET \" is a length "
                 "above MAX_FRAME), then close")),
        case("wire/server/frame/empty", ["LS-FRAME-9"], S,
             "an empty Frame (V-BAD-1): UNEXPECTED_MESSAGE",
             Raw(bytes.fromhex("00000000"), [C["UNEXPECTED_MESSAGE"]],
                 "Error UNEXPECTED_MESSAGE (V-BAD-1), then close")),
        case("wire/server/frame/undecodable", ["LS-FRAME-7"], S,
             "field length past the frame (V-BAD-4): PROTOCOL_ERROR",
             Raw(bytes.fromhex("000000020a05"), [C["PROTOCOL_ERROR"]],
                 "Error PROTOCOL_ERROR (V-BAD-4), then close")),
        # V-BAD-2 (Frame field 13) where the server waits for the first
        # turn.
        case("wire/server/frame/unknown-body", ["LS-FRAME-9", "LS-COMMIT-6"],
             S, "Frame field 13 after TablesOpened (V-BAD-2): "
             "UNEXPECTED_MESSAGE",
             Raw(bytes.fromhex("000000026a00"), [C["UNEXPECTED_MESSAGE"]],
                 "Error UNEXPECTED_MESSAGE (V-BAD-2), then close; database "
                 "unchanged", after_open=True)),
        case("wire/server/state/first-frame-not-hello",
             ["LS-HELLO-4", "LS-STATE-3"], S,
             "Rows as the first frame: UNEXPECTED_MESSAGE",
             Raw(pbwire.frame("rows", {"table": 0, "rows": []}),
                 [C["UNEXPECTED_MESSAGE"]],
                 "Error UNEXPECTED_MESSAGE (first frame not a ClientHello), "
                 "then close")),
        case("wire/server/state/end-turn-before-open",
             ["LS-STATE-3", "LS-TABLE-1"], S,
             "EndTurn instead of OpenTables: UNEXPECTED_MESSAGE",
             wire.server_end_turn_before_open),
        case("wire/server/open/unknown-table", ["LS-OPEN-1"], S,
             "offer-all server, table missing: UNKNOWN_TABLE",
             Open({"tables": [peers.table_schema(("ghost", COLUMNS))]},
                  [C["UNKNOWN_TABLE"]],
                  "Error UNKNOWN_TABLE (offered, as every name is, but "
                  "missing), then close",
                  server=dict(all_tables=True, tables=()))),
        # "other" exists in the server's database but is not offered.
        case("wire/server/open/not-offered", ["LS-OPEN-1", "LS-OPEN-3"], S,
             "existing table not offered: TABLE_NOT_OFFERED",
             Open({"tables": [peers.table_schema(("other", COLUMNS))]},
                  [C["TABLE_NOT_OFFERED"]],
                  "Error TABLE_NOT_OFFERED, then close",
                  server=dict(extra_tables=("other",)))),
        # LS-OPEN-3: the same answer for a name that exists nowhere.
        case("wire/server/open/not-offered-missing",
             ["LS-OPEN-1", "LS-OPEN-3"], S,
             "missing table not offered: TABLE_NOT_OFFERED",
             Open({"tables": [peers.table_schema(("nowhere", COLUMNS))]},
                  [C["TABLE_NOT_OFFERED"]],
                  "Error TABLE_NOT_OFFERED (same as for an existing table "
                  "not offered), then close")),
        case("wire/server/open/schema-mismatch", ["LS-OPEN-1", "LS-COMMIT-6"],
             S, "a column of another canonical type: SCHEMA_MISMATCH, "
             "unchanged",
             Open({"tables": [peers.table_schema((TABLE, [
                 ("name", "text"), ("pop", "text"), ("area", "real")]))]},
                  [C["SCHEMA_MISMATCH"]],
                  "Error SCHEMA_MISMATCH, then close; database unchanged")),
        case("wire/server/open/bad-schema-fingerprint",
             ["LS-TABLE-7", "LS-SCHEMA-1"], S,
             "a wrong schema fingerprint: PROTOCOL_ERROR",
             Open({"tables": [peers.table_schema((TABLE, COLUMNS),
                                                 b"\x01" * 32)]},
                  [C["PROTOCOL_ERROR"]],
                  "Error PROTOCOL_ERROR (fingerprint is not the schema "
                  "fingerprint of the columns), then close")),
        case("wire/server/sync/push-itemlist",
             ["LS-TURN-5", "LS-RECON-8", "LS-NEED-3", "LS-TURN-7",
              "LS-VERIFY-1", "LS-VERIFY-5", "LS-COMMIT-2", "LS-CLOSE-1",
              "LS-APPLY-3", "LS-TURN-1", "LS-TURN-3", "LS-TURN-4",
              "LS-RECON-1", "LS-DIGEST-1", "LS-DIGEST-2", "LS-FP-1",
              "LS-FP-3", "LS-EXT-4", "LS-VERSION-6", "LS-FEAT-4", "LS-AUTH-9",
              "LS-FRAME-12", "LS-CLOSE-2", "LS-VER-6", "LS-ITEM-1",
              "LS-VERSION-5", "LS-VERSION-6", "LS-POLICY-1"], S,
             "a scripted ItemList sync: the server commits the union",
             wire.server_sync_push),
        case("wire/server/verify/mismatch",
             ["LS-COMMIT-1", "LS-COMMIT-3", "LS-COMMIT-6"], S,
             "client Verify with a wrong fingerprint: VERIFY_FAILED, "
             "unchanged",
             VerifyFail(_wrong_fp, C["VERIFY_FAILED"],
                        "Error VERIFY_FAILED, then close; database "
                        "unchanged")),
        case("wire/server/verify/conflicts",
             ["LS-COMMIT-1", "LS-COMMIT-3", "LS-COMMIT-6"], S,
             "client Verify with conflicts 1: CONFLICT, unchanged",
             VerifyFail(_add_conflict, C["CONFLICT"],
                        "Error CONFLICT, then close; database unchanged")),
        case("wire/server/session/close-mid-transfer",
             ["LS-FRAME-11", "LS-COMMIT-6"], S,
             "client closes after sending Rows: server unchanged",
             wire.server_close_mid_transfer),
        case("wire/server/time/stall", ["LS-TIME-1"], S,
             "a silent client: Error TIMEOUT within 75 s", wire.server_stall,
             level="SHOULD"),
        case("wire/client/auth/wrong-server-proof",
             ["LS-AUTH-8", "LS-COMMIT-6"], K,
             "server_auth under another secret: AUTH_FAILED, unchanged",
             wire.client_wrong_server_proof),
        case("wire/client/version/outside-range", ["LS-VER-4", "LS-ERR-4"],
             K, "ServerHello version above the client's range: "
             "VERSION_MISMATCH",
             wire.client_version_outside),
        case("wire/client/open/schema-mismatch-error",
             ["LS-ERR-3", "LS-STATE-2", "LS-COMMIT-6"], K,
             "server answers OpenTables with Error: no answer, unchanged",
             wire.client_schema_error),
        case("wire/client/session/close-mid-transfer",
             ["LS-FRAME-11", "LS-COMMIT-6"], K,
             "server closes after sending Rows: client unchanged",
             wire.client_close_mid_transfer),
        case("wire/client/rows/loses",
             ["LS-POLICY-4", "LS-ROWS-6", "LS-TOMB-6", "LS-CAPTURE-1",
              "LS-VERSION-2", "LS-COMMIT-6"], K,
             "after a sync and a local update, a server Row with an older "
             "version: PROTOCOL_ERROR, unchanged",
             wire.client_rows_loses),
        # Both Verify agree, then the scripted server sends Error
        # STORAGE_ERROR (its commit failed) instead of Committed: the
        # client must not have committed (LS-COMMIT-4): exit non-zero, its
        # database byte-identical, bases and last_sync included.
        case("wire/client/commit/error-for-committed",
             ["LS-COMMIT-4", "LS-COMMIT-6"], K,
             "Error instead of Committed after agreeing Verify: no commit",
             AfterVerify("committed",
                         ("error", {"code": C["STORAGE_ERROR"],
                                    "message": "the server's commit "
                                    "failed"}),
                         "no commit before Committed; the Error ends the "
                         "session; non-zero exit; database byte-identical",
                         "client did not commit")),
        # The scripted server sends a wrong Verify, then Committed anyway:
        # the client must not commit (LS-COMMIT-1, LS-COMMIT-5).
        case("wire/client/commit/verify-mismatch",
             ["LS-COMMIT-1", "LS-COMMIT-5"], K,
             "server Verify mismatch, then Committed: client does not commit",
             AfterVerify("decided", ("committed", {}),
                         "no commit even though Committed arrives; Error "
                         "VERIFY_FAILED optional; non-zero exit; database "
                         "unchanged", "client refused to commit",
                         mutate_verify=_wrong_fp)),
        case("wire/client/sync/pull-itemlist",
             ["LS-HELLO-1", "LS-HELLO-2", "LS-HELLO-3", "LS-AUTH-5",
              "LS-TABLE-1", "LS-TABLE-5", "LS-TURN-5", "LS-RECON-8",
              "LS-VERIFY-5", "LS-COMMIT-4", "LS-FEAT-2", "LS-FEAT-4",
              "LS-DIGEST-1", "LS-DIGEST-2", "LS-EXT-4", "LS-VERSION-6",
              "LS-AUTH-9", "LS-FRAME-12", "LS-SCHEMA-1", "LS-FP-1",
              "LS-FP-3", "LS-ITEM-1", "LS-ITEM-2", "LS-VERSION-5",
              "LS-VERSION-6", "LS-POLICY-5", "LS-POLICY-6", "LS-TOMB-6"], K,
             "a scripted server sync: the client commits the union",
             wire.client_sync_pull),

        # ---- more cases: ranges, items, rows, values, turns, transport
        case("wire/server/range/short-bound", ["LS-RANGE-1", R], S,
             "a range bound of 15 bytes: PROTOCOL_ERROR",
             FirstTurn(_ranges(
                 {"lower": b"", "upper": _MID[:15], "items": _items([])},
                 {"lower": _MID[:15], "upper": b"", "items": _items([])}),
                 [C["PROTOCOL_ERROR"]], PE + " (a bound of 15 bytes)")),
        case("wire/server/range/inverted", ["LS-RANGE-1", R], S,
             "a range with lower >= upper: PROTOCOL_ERROR",
             FirstTurn(_ranges(
                 {"lower": _MID, "upper": _MID, "items": _items([])}),
                 [C["PROTOCOL_ERROR"]], PE + " (lower >= upper)")),
        case("wire/server/range/no-summary", ["LS-RANGE-2", R], S,
             "a Range with no summary: PROTOCOL_ERROR",
             FirstTurn(_ranges({"lower": b"", "upper": b""}),
                       [C["PROTOCOL_ERROR"]],
                       PE + " (a Range with no summary)")),
        case("wire/server/range/items-unordered", ["LS-RANGE-3", R], S,
             "an ItemList not in ascending UUID order: PROTOCOL_ERROR",
             FirstTurn(_ranges(
                 {"lower": b"", "upper": b"", "items": _items([_U2, _U1])}),
                 [C["PROTOCOL_ERROR"]],
                 PE + " (ItemList UUIDs not ascending)")),
        case("wire/server/range/item-outside", ["LS-RANGE-3", R], S,
             "an Item outside its range: PROTOCOL_ERROR",
             FirstTurn(_ranges(
                 {"lower": b"", "upper": _MID,
                  "items": _items([_U1, b"\x90" * 16])},
                 {"lower": _MID, "upper": b"", "items": _items([])}),
                 [C["PROTOCOL_ERROR"]], PE + " (an item outside its range)")),
        case("wire/server/item/short-site", ["LS-ITEM-2", "LS-VERSION-6", R],
             S, "an Item version with a 15-byte site: PROTOCOL_ERROR",
             FirstTurn(_ranges(
                 {"lower": b"", "upper": b"", "items": {"items": [
                     _item(_U1, site=b"\x11" * 15)]}}),
                 [C["PROTOCOL_ERROR"]],
                 PE + " (an Item version whose site is 15 bytes)")),
        case("wire/server/item/no-version", ["LS-ITEM-2", "LS-VERSION-6", R],
             S, "an Item without a version: PROTOCOL_ERROR",
             FirstTurn(_ranges(
                 {"lower": b"", "upper": b"", "items": {"items": [
                     {"uuid": _U1}]}}),
                 [C["PROTOCOL_ERROR"]], PE + " (an Item without a version)")),
        case("wire/server/item/short-base",
             ["LS-VERSION-6", "LS-POLICY-5", R], S,
             "an Item base_version with a 15-byte site: PROTOCOL_ERROR",
             FirstTurn(_ranges(
                 {"lower": b"", "upper": b"", "items": {"items": [
                     _item(_U1, base_version={"clock": 0,
                                              "site": b"\0" * 15})]}}),
                 [C["PROTOCOL_ERROR"]],
                 PE + " (an Item base_version whose site is 15 bytes)")),
        case("wire/server/rows/no-version", ["LS-VERSION-6", R, "LS-COMMIT-6"],
             S, "a Row without a version: PROTOCOL_ERROR",
             SecondTurn(_mut_rows(lambda r: r.pop("version")),
                        [C["PROTOCOL_ERROR"]],
                        PE + " (a Row without a version)")),
        case("wire/server/rows/short-site", ["LS-VERSION-6", R], S,
             "a Row version with a 15-byte site: PROTOCOL_ERROR",
             SecondTurn(_mut_rows(lambda r: r.update(version={
                 "clock": r["version"]["clock"],
                 "site": r["version"]["site"][:15]})),
                 [C["PROTOCOL_ERROR"]],
                 PE + " (a Row version whose site is 15 bytes)")),
        case("wire/server/rows/tombstone-with-values", ["LS-TOMB-1", R], S,
             "a tombstone Row carrying values: PROTOCOL_ERROR",
             SecondTurn(_mut_rows(lambda r: r.update(deleted=True)),
                        [C["PROTOCOL_ERROR"]],
                        PE + " (a tombstone Row, deleted = true, with "
                        "values)")),
        case("wire/server/rows/loses",
             ["LS-POLICY-4", "LS-ROWS-6", "LS-POLICY-1", R, "LS-COMMIT-6"], S,
             "a Row whose version loses to the server's: PROTOCOL_ERROR, "
             "unchanged",
             wire.server_rows_loses),
        case("wire/server/sync/observe-clock",
             ["LS-VERSION-3", "LS-VERSION-2", "LS-CAPTURE-1", "LS-POLICY-1"],
             S, "versions from the future are observed: later local updates "
             "still win",
             wire.server_observe_clock),
        case("wire/server/open/unknown-policy", ["LS-POLICY-6", R], S,
             "OpenTables with policy 7: PROTOCOL_ERROR",
             Open({"tables": [peers.table_schema((TABLE, COLUMNS))],
                   "policy": 7},
                  [C["PROTOCOL_ERROR"]],
                  "Error PROTOCOL_ERROR (OpenTables.policy 7 is not a "
                  "Policy), then close; database unchanged")),
        case("wire/server/range/short-fingerprint", ["LS-FP-2", R], S,
             "a Fingerprint value of 15 bytes: PROTOCOL_ERROR",
             FirstTurn(_ranges(
                 {"lower": b"", "upper": b"", "fingerprint": {
                     "value": b"\x22" * 15, "count": 3}}),
                 [C["PROTOCOL_ERROR"]],
                 PE + " (a Fingerprint value of 15 bytes)")),
        case("wire/server/rows/value-count", ["LS-ROWS-2", R, "LS-COMMIT-6"],
             S, "a Row with one value too few: PROTOCOL_ERROR",
             SecondTurn(_mut_rows(lambda r: r.update(values=r["values"][:-1])),
                        [C["PROTOCOL_ERROR"]],
                        PE + " (a Row with one value too few)")),
        case("wire/server/rows/short-uuid", ["LS-ROWS-2", R], S,
             "a Row with a 15-byte uuid: PROTOCOL_ERROR",
             SecondTurn(_mut_rows(lambda r: r.update(uuid=r["uuid"][:15])),
                        [C["PROTOCOL_ERROR"]],
                        PE + " (a Row with a 15-byte uuid)")),
        case("wire/server/rows/value-no-kind", ["LS-VALUE-1", R], S,
             "a Value with no kind: PROTOCOL_ERROR",
             SecondTurn(_mut_rows(lambda r: r.update(
                 values=[{}] + r["values"][1:])),
                 [C["PROTOCOL_ERROR"]], PE + " (a Value with no kind)")),
        case("wire/server/need/not-held", ["LS-NEED-2", R], S,
             "a Need for a UUID the server does not hold: PROTOCOL_ERROR",
             SecondTurn(_then(("need", {"table": 0,
                                        "uuids": [b"\x77" * 16]})),
                        [C["PROTOCOL_ERROR"]],
                        PE + " (a Need for a UUID the server does not "
                        "hold)")),
        case("wire/server/need/already-sent", ["LS-NEED-4", R], S,
             "a Need for a row the server already sent: PROTOCOL_ERROR",
             SecondTurn(_need_sent(1), [C["PROTOCOL_ERROR"]],
                        PE + " (a Need for a row the server sent in its "
                        "previous turn)", with_turn=True)),
        case("wire/server/need/twice", ["LS-NEED-4", R], S,
             "two Need frames naming one row: PROTOCOL_ERROR",
             SecondTurn(_need_sent(2), [C["PROTOCOL_ERROR"]],
                        PE + " (two Need frames naming the same row, one "
                        "the server already sent)", with_turn=True)),
        case("wire/server/state/frame-in-own-turn",
             ["LS-STATE-3", "LS-STATE-6"], S,
             "a Need sent with the client's EndTurn: UNEXPECTED_MESSAGE",
             wire.server_need_in_own_turn),
        case("wire/server/frame/oneof-merged", ["LS-FRAME-6"], S,
             "a body in two occurrences: merged, or the last alone",
             FirstFrame(_merged_hello, [C["VERSION_MISMATCH"]],
                        "ServerHello (the two occurrences merged), or Error "
                        "VERSION_MISMATCH (the last occurrence alone, with "
                        "versions 0..0) then close (LS-FRAME-6)",
                        hello_ok=True)),
        case("wire/server/frame/oneof-overwritten-malformed", ["LS-FRAME-7"],
             S, "an overwritten body that does not decode: PROTOCOL_ERROR",
             FirstFrame(_overwritten_malformed_hello, [C["PROTOCOL_ERROR"]],
                        "Error PROTOCOL_ERROR: an overwritten oneof body "
                        "that does not decode makes the frame undecodable "
                        "(LS-FRAME-7), then close", hello_ok=False)),
        case("wire/server/frame/wrong-wire-type", ["LS-FRAME-8"], S,
             "a known field with the wrong wire type: PROTOCOL_ERROR or "
             "ignored",
             FirstFrame(_wrong_wire_type_hello, [C["PROTOCOL_ERROR"]],
                        "Error PROTOCOL_ERROR, or the field ignored and a "
                        "ServerHello for version 1 (LS-FRAME-8)",
                        hello_ok=True)),
        case("wire/server/frame/uint32-overflow", ["LS-FRAME-13"], S,
             "a uint32 field of 2^32 + 1: its low 32 bits, or PROTOCOL_ERROR",
             FirstFrame(_uint32_overflow_hello, [C["PROTOCOL_ERROR"]],
                        "Error PROTOCOL_ERROR, or the value's low 32 bits "
                        "(1) and a ServerHello for version 1 (LS-FRAME-13)",
                        hello_ok=True)),
        case("wire/server/rows/twice", ["LS-ROWS-6", R], S,
             "the same Row twice in one session: PROTOCOL_ERROR",
             SecondTurn(_row_again, [C["PROTOCOL_ERROR"]],
                        PE + " (the same Row a second time, in a Rows frame "
                        "of its own)")),
        case("wire/server/policy/lww-equal-clocks",
             ["LS-VERSION-1", "LS-POLICY-1"], S,
             "lww: versions with equal clocks are ordered by site",
             wire.server_lww_equal_clocks),
        case("wire/server/need/short-uuid", ["LS-NEED-2", R], S,
             "a Need entry of 15 bytes: PROTOCOL_ERROR",
             SecondTurn(_then(("need", {"table": 0,
                                        "uuids": [b"\x77" * 15]})),
                        [C["PROTOCOL_ERROR"]],
                        PE + " (a Need entry of 15 bytes)")),
        case("wire/server/verify/table-count", ["LS-VERIFY-3", R], S,
             "a Verify with 2 tables in a 1-table session: PROTOCOL_ERROR",
             VerifyFail(_extra_table, C["PROTOCOL_ERROR"],
                        PE + " (Verify with 2 tables in a 1-table "
                        "session)")),
        case("wire/server/commit/cancelled", ["LS-DRY-2", "LS-ERR-3",
                                              "LS-COMMIT-6"], S,
             "rows pushed, then Error CANCELLED for Verify: unchanged",
             Cancelled("no answer to the Error, then close; the pushed rows "
                       "rolled back (LS-DRY-2): database unchanged")),
        case("wire/server/verify/short-fingerprint", ["LS-VERIFY-3", R], S,
             "a Verify with a 15-byte fingerprint: PROTOCOL_ERROR",
             VerifyFail(_short_fingerprint, C["PROTOCOL_ERROR"],
                        PE + " (Verify with a 15-byte fingerprint)")),
        case("wire/server/sync/fingerprint-range",
             ["LS-RECON-7", "LS-RECON-3", "LS-RECON-1", "LS-TURN-4",
              "LS-FP-1", "LS-FP-3", "LS-DIGEST-1", "LS-DIGEST-2",
              "LS-EXT-4", "LS-VERSION-6", "LS-ITEM-1", "LS-VERSION-5"], S,
             "a full-range Fingerprint: answered by option (a) or (b)",
             wire.server_fingerprint_range),
        case("wire/server/transport/split-coalesce",
             ["LS-TRANS-1", "LS-TRANS-2", "LS-TRANS-3", "LS-TURN-2",
              "LS-STATE-5"], S,
             "byte-wise and coalesced writes; silence during our turn",
             wire.server_transport),
        case("wire/server/frame/max-size-unknown-fields",
             ["LS-FRAME-2", "LS-FRAME-6"], S,
             "reordered/repeated/unknown fields; a frame of MAX_FRAME bytes",
             wire.server_max_frame),
        case("wire/server/sync/edge-values",
             ["LS-UUID-1", "LS-UUID-2", "LS-VALUE-2"], S,
             "UUIDs without version bits, edge values, null: false",
             wire.server_edge_values),
        case("wire/client/version/short-server-nonce", ["LS-VER-5"], K,
             "ServerHello with a 16-byte nonce: PROTOCOL_ERROR",
             ClientBadHello(lambda: {"nonce": os.urandom(16)})),
        case("wire/client/version/feature-not-offered", ["LS-VER-5"], K,
             "ServerHello naming a feature not offered: PROTOCOL_ERROR",
             ClientBadHello({"features": ["x-lsconf-not-offered"]})),
        case("wire/server/open/pg-unmapped-type",
             ["LS-TYPE-4", "LS-TYPE-11", "LS-OPEN-1"], S,
             "PostgreSQL interval column: SCHEMA_MISMATCH naming it",
             wire.server_pg_unmapped_type, backends=("postgres",)),
        case("wire/server/open/internal-table", ["LS-OPEN-4"], S,
             "offer-all server, table SQLite_Master: TABLE_NOT_OFFERED",
             Open({"tables": [peers.table_schema(("SQLite_Master",
                                                  COLUMNS))]},
                  [C["TABLE_NOT_OFFERED"]],
                  "Error TABLE_NOT_OFFERED (an offer-all server never "
                  "offers sqlite_ tables, whatever their case), then "
                  "close; no TablesOpened", server=dict(all_tables=True)),
             backends=SQ),
        case("wire/server/open/metadata-table", ["LS-OPEN-4"], S,
             "offer-all server, table _LipSync_meta_cities: "
             "TABLE_NOT_OFFERED",
             Open({"tables": [peers.table_schema(("_LipSync_meta_cities",
                                                  COLUMNS))]},
                  [C["TABLE_NOT_OFFERED"]],
                  "Error TABLE_NOT_OFFERED (an offer-all server never "
                  "offers a name that starts with _lipsync, whatever its "
                  "case), then close; no TablesOpened",
                  server=dict(all_tables=True)),
             backends=SQ),
        case("wire/server/open/sqlite-declared-types", ["LS-TYPE-5"], S,
             "declared types of V-TYPE-n map to their canonical types",
             wire.server_sqlite_declared_types, backends=SQ),
        case("wire/server/value/invalid-utf8", ["LS-VALUE-5", "LS-ERR-9"], S,
             "a stored TEXT that is not UTF-8: INVALID_VALUE, not sent",
             wire.server_invalid_utf8, backends=SQ),
        case("wire/server/open/prepared-in-transaction", ["LS-OPEN-9"], S,
             "after TablesOpened the server's transaction holds the table",
             wire.server_prepared_in_transaction, backends=SQ),
        case("wire/server/apply/constraint", ["LS-APPLY-2", "LS-COMMIT-6"], S,
             "a pushed row breaks a UNIQUE constraint: STORAGE_ERROR",
             wire.server_constraint, backends=SQ),
        case("wire/server/store/locked",
             ["LS-ERR-10", "LS-OPEN-9", "LS-ERR-9", "LS-COMMIT-6"], S,
             "another writer holds the lock: TRY_AGAIN, then the sync "
             "succeeds",
             wire.server_locked, backends=SQ),
    ]

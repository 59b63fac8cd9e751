"""Wire tests of the feature incremental (spec 8.8): checkpoints, Changes,
and their misuse, against an implementation's server (a scripted client
over several sessions) and client (a scripted server over several runs of
the client program).

The implementation's programs run once per session, as a user runs them.
Between sessions the harness changes rows in the implementation's database
through SQL (its change capture records them) and in the scripted peer's
tables; the next session then carries exactly those changes, or, where a
checkpoint is refused, the whole tables by ranges.

Every test needs the feature ("features" = {"incremental"}): for an
implementation that does not declare it, they are unsupported.
"""

import time

from . import pbwire
from . import peers
from . import wire
from .core import Outcome, Test
from .databases import HarnessError
from .peers import FEATURE, ScriptedClient, ScriptedServer, TableData
from .wire import (C, COLUMNS, PE, SERVER_ROWS, TABLE, Case,
                   ClientRun, expect_error_close)

NAMES = [n for n, _ in COLUMNS]
STEP = 0.005        # seconds between writes: later changes, later clocks


def _uuid_sql(u):
    return "'%s'" % peers.uuid_text(u)


def _rows_of(db):
    """{uuid bytes: (name, pop, area)} of the implementation's table."""
    out = {}
    for r in db.rows(TABLE):
        u = bytes.fromhex(str(r[peers.UUID_COLUMN]).replace("-", ""))
        out[u] = tuple(r[n] for n in NAMES)
    return out


def _rows_of_table(t):
    """The same for a scripted peer's TableData."""
    pos = {n: i for i, (n, _) in enumerate(t.columns)}
    return {u: tuple(pbwire.value_py(vals[pos[n]]) for n in NAMES)
            for u, vals in t.rows.items()}


def _same_rows(case, db, t, who):
    """None when the implementation's table holds exactly the scripted
    peer's rows (UUIDs and values), else a failing Outcome."""
    have, want = _rows_of(db), _rows_of_table(t)
    if have == want:
        return None
    o = case.fail("the %s's table does not hold the synced rows" % who,
                  "the %d rows of the scripted peer (-)" % len(want),
                  "%d rows (+)" % len(have))
    o.diff = "\n".join(
        ["- %s %r" % (peers.uuid_text(u), v) for u, v in sorted(
            want.items()) if have.get(u) != v] +
        ["+ %s %r" % (peers.uuid_text(u), v) for u, v in sorted(
            have.items()) if want.get(u) != v])
    return o


def _describe(frames):
    return "; ".join(pbwire.render({b: m}) for b, m in frames) or "nothing"


def _uuids(frames, body):
    """The UUIDs of the items (Changes), uuids (Need) or rows (Rows) of
    the (body, msg) frames of one kind, in order."""
    out = []
    for b, m in frames:
        if b != body:
            continue
        if body == "changes":
            out += [i["uuid"] for i in m["items"]]
        elif body == "need":
            out += list(m["uuids"])
        elif body == "rows":
            out += [r["uuid"] for r in m["rows"]]
    return out


def _bodies(received):
    """[(body, msg)] of Received frames."""
    return [(r.body, r.msg) for r in received]


def _check_set(case, what, got, want, rule, ascending=True):
    """None when |got| (a list of UUIDs) is |want| (a set), each once and
    (with |ascending|) in ascending order, else a failing Outcome."""
    show = lambda us: "[" + ", ".join(peers.uuid_text(u) for u in us) + "]"
    if sorted(got) != sorted(want) or len(set(got)) != len(got):
        return case.fail("%s: not the expected UUIDs" % what,
                         "%s (%s)" % (show(sorted(want)), rule), show(got))
    if ascending and got != sorted(got):
        return case.fail("%s: not in ascending UUID order" % what,
                         "%s (%s)" % (show(sorted(want)), rule), show(got))
    return None


def _checkpoint_problem(cp, site):
    """What is wrong with a Checkpoint (decoded) a server sent, or None:
    LS-INC-3, LS-INC-4."""
    if cp is None:
        return "no Checkpoint for the table"
    if len(cp.get("token", b"")) != 16:
        return "a token of %d bytes" % len(cp.get("token", b""))
    if cp.get("server_site") != site:
        return "server_site %s, not the TablesOpened.server_site %s" % (
            cp.get("server_site", b"").hex(), site.hex())
    if len(cp.get("server_position", b"")) > peers.MAX_POSITION:
        return "a server_position of %d bytes" % len(cp["server_position"])
    return None


# ---- against the implementation's server ------------------------------------

class Sessions:
    """The implementation's server over several sessions: its database
    (the standard table with SERVER_ROWS), a server process started for
    each session, and a scripted client (CLIENT_ROWS) that keeps its
    checkpoints from one session to the next."""

    def __init__(self, ctx):
        self.ctx, self.case = ctx, Case(ctx)
        self.db = wire._db_with_table(ctx, "server", rows=SERVER_ROWS)
        self.client = ScriptedClient([wire._client_table()])
        self.srv = None

    @property
    def table(self):
        return self.client.tables[0]

    def start(self, retention_ms=None):
        if self.srv is not None:
            self.srv.stop()
        kw = {} if retention_ms is None else {"retention_ms": retention_ms}
        self.srv = self.ctx.start_server(self.ctx.impl, self.db, [TABLE],
                                         **kw)
        return self.srv

    def sync(self, retention_ms=None, keep_open=False, **kw):
        """One session of the scripted client (ScriptedClient.sync(**kw))
        with a freshly started server. Returns the ClientSync, or a
        failing Outcome when the handshake failed. With |keep_open| the
        stream stays open (.conn)."""
        self.start(retention_ms)
        self.conn = self.case.connect(self.srv.address)
        try:
            out = self.client.sync(self.conn, self.ctx.secret, **kw)
        except peers.HandshakeFailed as e:
            self.conn.close()
            return self.case.fail("handshake failed: %s" % e, "handshake",
                                  str(e))
        if not keep_open:
            self.conn.close()
        return out

    def committed(self, out, what, expect_incremental=None):
        """None when session |out| committed (and its table was, or was
        not, incremental as |expect_incremental| says), else a failing
        Outcome."""
        if isinstance(out, Outcome):
            return out
        if not out.feature:
            return self.case.fail(
                "%s: the server did not accept the feature %s offered"
                % (what, FEATURE), "ServerHello.features = [\"%s\"] "
                "(LS-FEAT-3: the implementation declares it)" % FEATURE,
                pbwire.render({"server_hello": out.server_hello}))
        if out.result.ending != "committed":
            return self.case.fail("%s did not complete: %s" % (
                what, out.result.what), "Committed", out.result.what)
        inc = out.opened.get("incremental", [])
        if expect_incremental is not None and inc != (
                [0] if expect_incremental else []):
            return self.case.fail(
                "%s: the table is %sincremental" % (
                    what, "not " if expect_incremental else ""),
                "TablesOpened.incremental = %s (LS-INC-8, LS-INC-9)" % (
                    "[0]" if expect_incremental else "[]"),
                pbwire.render({"tables_opened": out.opened}))
        cps = out.committed.get("checkpoints", [])
        bad = ("%d Checkpoints for 1 table" % len(cps) if len(cps) != 1
               else _checkpoint_problem(cps[0],
                                        out.opened.get("server_site")))
        if bad:
            return self.case.fail(
                "%s: Committed does not carry a checkpoint for the table: "
                "%s" % (what, bad), "Committed{checkpoints: [one "
                "Checkpoint per table: server_site = TablesOpened."
                "server_site, token of 16 bytes, server_position of at "
                "most 1024 bytes]} (LS-INC-4, LS-INC-3; a 3-row table "
                "that the client syncs again)",
                pbwire.render({"committed": out.committed}))
        return None

    def first(self):
        """The first session, which must commit and give a checkpoint:
        None, or a failing Outcome."""
        return self.committed(self.sync(), "the first session", False)

    def incremental_session(self, **kw):
        """After first(): a session presenting the checkpoint, which the
        server must accept. Returns the ClientSync or a failing Outcome."""
        out = self.sync(**kw)
        if isinstance(out, Outcome):
            return out
        if out.opened is not None and out.opened.get("incremental") != [0]:
            return self.case.fail(
                "the server did not accept the checkpoint it gave in the "
                "previous session", "TablesOpened.incremental = [0] "
                "(LS-INC-8: its site, its token, its position, a session "
                "that is not stale)", pbwire.render({"tables_opened":
                                                     out.opened}))
        return out

    def refused(self, out, codes, expected):
        """Session |out| (kept open) must have ended with one Error of
        |codes|, the close, and the server's database as it was before."""
        if isinstance(out, Outcome):
            return out
        r = out.result.last
        try:
            if not (out.result.ending == "error" and r.code in codes):
                return self.case.fail(out.result.what, expected,
                                      out.result.what)
            c = self.conn.wait_close()
            if c.kind not in ("eof", "reset"):
                return self.case.fail("no close after the Error", expected,
                                      c.describe())
        finally:
            self.conn.close()
        time.sleep(0.3)
        return wire._unchanged(self.case, self.db, self.before)


def server_checkpoint(ctx):
    """A client offering the feature: the server accepts it, names its
    site in TablesOpened, lists no table as incremental (no checkpoint
    presented), and ends a successful sync with one Checkpoint per table
    in Committed."""
    ss = Sessions(ctx)
    out = ss.sync()
    bad = ss.committed(out, "the session", False)
    if bad:
        return bad
    site = out.opened.get("server_site", b"")
    if len(site) != 16:
        return ss.case.fail("TablesOpened.server_site is not 16 bytes",
                            "the server's site id, 16 bytes (LS-INC-9)",
                            pbwire.render({"tables_opened": out.opened}))
    bad = (wire._check_sent_frames(ss.case, ctx.secret, ss.srv.stderr(),
                                   features=(FEATURE,))
           or _same_rows(ss.case, ss.db, ss.table, "server"))
    if bad:
        return bad
    return ss.case.ok("feature accepted; Committed carries a checkpoint")


def server_changes(ctx):
    """LS-INC-12. After a first session, the scripted client changes rows
    (an update, a delete, an insert) and the harness changes the server's
    rows through SQL (an update, a delete, an insert, and an update of a
    row the client also changed, later than the client: the server's
    version wins). The next session presents the checkpoint: the server
    must list the table as incremental, answer the client's Changes with
    a Need for the client's winning rows and Rows for its own, and list in
    its own Changes exactly the rows changed through SQL that the client
    did not list, ascending, and no Ranges; the session then commits and
    both hold the same rows."""
    ss = Sessions(ctx)
    bad = ss.first()
    if bad:
        return bad
    t = ss.table
    u = {n: t.uuid_of("name", n) for n in ("Zürich", "東京", "Genève",
                                            "St. Gallen", "Lyon")}
    basel = peers.uuid_bytes(1, b"basel")
    ss.client.change(0, u["Genève"], {"name": "Genève", "pop": 203857,
                                      "area": 15.93})
    ss.client.change(0, u["St. Gallen"], None, deleted=True)
    ss.client.change(0, basel, {"name": "Basel", "pop": 177654,
                                "area": 23.91})
    ss.client.change(0, u["Lyon"], {"name": "Lyon", "pop": 1,
                                    "area": -0.5})
    time.sleep(STEP)
    bern = peers.uuid_bytes(2, b"bern")
    for sql in ("UPDATE cities SET pop = 421879 WHERE name = 'Zürich'",
                "DELETE FROM cities WHERE name = '東京'",
                "INSERT INTO cities (name, pop, area, _lipsync_uuid) VALUES "
                "('Bern', 134794, 51.62, %s)" % _uuid_sql(bern),
                "UPDATE cities SET pop = 2 WHERE name = 'Lyon'"):
        ss.db.execute(sql)
    turns = []
    out = ss.incremental_session(on_turn=lambda f: turns.append(
        _bodies(f)))
    bad = ss.committed(out, "the incremental session", True)
    if bad:
        return bad
    sent = _uuids(out.first_turn, "changes")
    mine = {u["Genève"], u["St. Gallen"], basel, u["Lyon"]}
    if set(sent) != mine:
        raise HarnessError("the scripted client listed other changes "
                           "than it made")
    answer = turns[0] if turns else []
    rule = "LS-INC-12, LS-RECON-8"
    bad = (_check_set(ss.case, "the server's Need", _uuids(answer, "need"),
                      {u["Genève"], u["St. Gallen"], basel}, rule,
                      ascending=False)
           or _check_set(ss.case, "the server's Rows answering the "
                         "client's Changes", _uuids(answer, "rows"),
                         {u["Lyon"]}, rule, ascending=False)
           or _check_set(ss.case, "the server's Changes",
                         _uuids(answer, "changes"),
                         {u["Zürich"], u["東京"], bern},
                         "LS-INC-10, LS-INC-12: the rows changed since its "
                         "position that the client did not list"))
    if bad:
        return bad
    if any(b == "ranges" for b, _ in answer):
        return ss.case.fail("the server sent Ranges in an incremental "
                            "session", "no Ranges for an incremental table "
                            "(LS-INC-14)", _describe(answer))
    deleted = {i["uuid"]: i.get("deleted", False) for b, m in answer
               if b == "changes" for i in m["items"]}
    if not deleted[u["東京"]] or deleted[u["Zürich"]] or deleted[bern]:
        return ss.case.fail("the server's Changes do not carry the deleted "
                            "flags of its items", "東京 a tombstone, Zürich "
                            "and Bern live (LS-INC-10)", _describe(answer))
    bad = (wire._check_sent_frames(ss.case, ctx.secret, ss.srv.stderr(),
                                   features=(FEATURE,))
           or _same_rows(ss.case, ss.db, t, "server"))
    if bad:
        return bad
    want = {"Zürich": 421879, "Genève": 203857, "Lyon": 2, "Basel": 177654,
            "Bern": 134794}
    have = {v[0]: v[1] for v in _rows_of(ss.db).values()}
    if have != want:
        return ss.case.fail("the server's table does not hold the later "
                            "change of every row", repr(want), repr(have))
    return ss.case.ok("Changes answered; only the changed rows travelled")


def server_unchanged(ctx):
    """Nothing changed since the last session: the client's first turn is
    its EndTurn alone, which is not quiet (LS-INC-11): the server must
    answer with a turn, and that turn holds nothing (no Changes, Need or
    Rows: nothing changed since its position, LS-INC-1, LS-INC-10); the
    client then sends Verify and the server commits."""
    ss = Sessions(ctx)
    bad = ss.first()
    if bad:
        return bad
    turns = []
    out = ss.incremental_session(on_turn=lambda f: turns.append(
        _bodies(f)))
    if isinstance(out, Outcome):
        return out
    if out.first_turn:
        raise HarnessError("the scripted client listed changes")
    bad = ss.committed(out, "the incremental session", True)
    if bad:
        return bad
    if not turns:
        return ss.case.fail("the server took the client's first turn, its "
                            "EndTurn alone, as quiet: it answered with "
                            "Verify, not a turn", "a turn in answer "
                            "(LS-INC-11: the client's first turn is never "
                            "quiet; LS-TURN-4)", "Verify")
    if turns[0]:
        return ss.case.fail("the server sent frames although nothing "
                            "changed since the last session",
                            "EndTurn alone (LS-INC-10, LS-INC-12)",
                            _describe(turns[0]))
    return ss.case.ok("an empty incremental session committed")


def server_empty_changes(ctx):
    """LS-INC-22: nothing changed, but the client's first turn holds a
    Changes frame with no items for the incremental table. The server
    accepts it and, the turn not being quiet, answers with a turn of its
    own, then commits."""
    ss = Sessions(ctx)
    bad = ss.first()
    if bad:
        return bad
    turns = []
    out = ss.incremental_session(
        first_turn=_add(("changes", {"table": 0, "items": []})),
        on_turn=lambda f: turns.append(_bodies(f)))
    bad = ss.committed(out, "the session with an empty Changes frame",
                       True)
    if bad:
        return bad
    if not turns:
        return ss.case.fail("the server took a turn holding an empty "
                            "Changes frame as quiet: it answered with "
                            "Verify", "a turn in answer (LS-INC-22: an "
                            "empty Changes frame makes its turn not "
                            "quiet)", "Verify")
    return ss.case.ok("empty Changes accepted, answered with a turn")


def server_changes_without_feature(ctx):
    """LS-INC-23: a Changes frame when the feature is not in effect (the
    client did not offer it): UNEXPECTED_MESSAGE, not PROTOCOL_ERROR."""
    ss = Sessions(ctx)
    ss.before = ss.db.snapshot()
    out = ss.sync(keep_open=True, feature=False,
                  first_turn=_add(("changes", {"table": 0, "items": []})))
    return ss.refused(out, [C["UNEXPECTED_MESSAGE"]], "Error "
                      "UNEXPECTED_MESSAGE (a Changes frame without the "
                      "feature in effect, LS-INC-23), then close; database "
                      "unchanged") or ss.case.ok(out.result.what)


def server_token(ctx):
    """LS-INC-5 (SHOULD): a session that changes the server's table gets a
    new token; one that changes nothing keeps it."""
    ss = Sessions(ctx)
    bad = ss.first()
    if bad:
        return bad
    t0 = ss.client.checkpoints[TABLE]["token"]
    ss.client.change(0, peers.uuid_bytes(3, b"chur"), {
        "name": "Chur", "pop": 37000, "area": 54.2})
    out = ss.incremental_session()
    bad = ss.committed(out, "the session that changes the table", True)
    if bad:
        return bad
    t1 = ss.client.checkpoints[TABLE]["token"]
    if t1 == t0:
        return ss.case.fail("the server kept its token although the "
                            "session changed its table", "a new token "
                            "(LS-INC-5)", "the same token %s" % t1.hex())
    out = ss.incremental_session()
    bad = ss.committed(out, "the session that changes nothing", True)
    if bad:
        return bad
    t2 = ss.client.checkpoints[TABLE]["token"]
    if t2 != t1:
        return ss.case.fail("the server stored a new token although the "
                            "session changed nothing", "the token it held "
                            "(LS-INC-5)", "%s, then %s" % (t1.hex(),
                                                           t2.hex()))
    return ss.case.ok("new token after a change, kept after none")


def _refused_case(ctx, field, value):
    """A session presenting the checkpoint of the first one with |field|
    replaced by |value|: the server must refuse it (the table is not
    incremental) and the session still succeeds with ranges, carrying a
    change of the client."""
    ss = Sessions(ctx)
    bad = ss.first()
    if bad:
        return bad
    ss.client.checkpoints[TABLE][field] = value
    chur = peers.uuid_bytes(3, b"chur")
    ss.client.change(0, chur, {"name": "Chur", "pop": 37000, "area": 54.2})
    out = ss.sync()
    bad = ss.committed(out, "the session with a checkpoint to refuse",
                       False)
    if bad:
        return bad
    if not any(b == "ranges" for b, _ in out.first_turn):
        raise HarnessError("no Ranges in the first turn")
    return _same_rows(ss.case, ss.db, ss.table, "server") or ss.case.ok(
        "checkpoint refused; reconciled with ranges")


def server_refused_token(ctx):
    return _refused_case(ctx, "token", b"\x5a" * 16)


def server_refused_site(ctx):
    return _refused_case(ctx, "server_site", b"\xa5" * 16)


def server_refused_position(ctx):
    # The longest position a checkpoint may carry, all ones: a position
    # the server cannot have made.
    return _refused_case(ctx, "server_position", b"\xff" * 1024)


def server_stale(ctx):
    """A checkpoint presented in a stale session (the server runs with
    retention 0, so the client's last_sync is below the horizon) is
    refused (LS-INC-8); the session succeeds with ranges."""
    ss = Sessions(ctx)
    bad = ss.first()
    if bad:
        return bad
    time.sleep(STEP)
    out = ss.sync(retention_ms=0)
    bad = ss.committed(out, "the stale session", False)
    return bad or _same_rows(ss.case, ss.db, ss.table, "server") or \
        ss.case.ok("stale: reconciled with ranges")


def _bad_open(ctx, client_site):
    """OpenTables with the feature in effect and |client_site| (None:
    absent): Error PROTOCOL_ERROR, database unchanged (LS-INC-7)."""
    case = Case(ctx)
    db, srv = wire._server(ctx)
    before = db.snapshot()
    conn = case.connect(srv.address)
    s = peers.ClientSession(conn, ctx.secret)
    try:
        s.handshake(features=[FEATURE])
    except peers.HandshakeFailed as e:
        return case.fail("handshake failed: %s" % e, "handshake", str(e))
    if s.server_hello["features"] != [FEATURE]:
        return case.fail("the server did not accept the feature",
                         "ServerHello.features = [\"%s\"]" % FEATURE,
                         pbwire.render({"server_hello": s.server_hello}))
    msg = {"tables": [peers.table_schema((TABLE, COLUMNS))]}
    if client_site is not None:
        msg["client_site"] = client_site
    conn.send_frame("open_tables", msg)
    exp = ("Error PROTOCOL_ERROR (client_site is not 16 bytes, LS-INC-7), "
           "then close; database unchanged")
    ok, what, _ = expect_error_close(conn, [C["PROTOCOL_ERROR"]])
    if not ok:
        return case.fail(what, exp, what)
    time.sleep(0.3)
    return wire._unchanged(case, db, before) or case.ok(what)


def server_client_site_short(ctx):
    return _bad_open(ctx, b"\x11" * 15)


def server_client_site_missing(ctx):
    return _bad_open(ctx, None)


def _first_turn_refused(ctx, incremental, mutate_first=None,
                        mutate_answer=None, expected=PE):
    """A session (after a first one when |incremental|) whose first turn
    is changed by |mutate_first| or whose answering turns by
    |mutate_answer|: the server must fail with PROTOCOL_ERROR, close and
    leave its database unchanged."""
    ss = Sessions(ctx)
    if incremental:
        bad = ss.first()
        if bad:
            return bad
    ss.client.change(0, peers.uuid_bytes(3, b"chur"), {
        "name": "Chur", "pop": 37000, "area": 54.2})
    ss.before = ss.db.snapshot()
    out = ss.sync(keep_open=True, first_turn=mutate_first,
                  mutate_answer=mutate_answer)
    if not isinstance(out, Outcome) and out.opened is not None and \
            out.opened.get("incremental", []) != ([0] if incremental else []):
        ss.conn.close()
        return ss.case.fail("the table is %sincremental" % (
            "not " if incremental else ""), "TablesOpened.incremental = %s"
            % ("[0]" if incremental else "[]"),
            pbwire.render({"tables_opened": out.opened}))
    return ss.refused(out, [C["PROTOCOL_ERROR"]], expected) or \
        ss.case.ok(out.result.what)


def _add(frame):
    return lambda frames: frames + [frame]


def server_changes_not_incremental(ctx):
    return _first_turn_refused(
        ctx, False, _add(("changes", {"table": 0, "items": []})),
        expected=PE + " (a Changes frame for a table that is not "
        "incremental, LS-INC-14)")


def server_changes_late(ctx):
    once = []

    def late(frames):
        if once:
            return frames
        once.append(1)
        return frames + [("changes", {"table": 0, "items": []})]
    return _first_turn_refused(
        ctx, True, mutate_answer=late,
        expected=PE + " (a Changes frame in the client's second turn, "
        "LS-INC-14)")


def server_ranges_for_incremental(ctx):
    whole = ("ranges", {"table": 0, "ranges": [
        {"lower": b"", "upper": b"", "items": {"items": []}}]})
    return _first_turn_refused(
        ctx, True, lambda frames: [whole] + frames,
        expected=PE + " (a Ranges frame for an incremental table, then "
        "its Changes: LS-INC-11, LS-INC-14)")


def _bad_item(change):
    def mutate(frames):
        out = []
        for b, m in frames:
            if b == "changes":
                m = dict(m, items=[dict(i) for i in m["items"]])
                change(m, m["items"][0])
            out.append((b, m))
        return out
    return mutate


def server_changes_short_uuid(ctx):
    return _first_turn_refused(
        ctx, True, _bad_item(lambda m, i: i.update(uuid=i["uuid"][:15])),
        expected=PE + " (a Changes item whose uuid is 15 bytes, "
        "LS-INC-14, LS-ITEM-2)")


def server_changes_no_version(ctx):
    return _first_turn_refused(
        ctx, True, _bad_item(lambda m, i: i.pop("version")),
        expected=PE + " (a Changes item without a version, LS-INC-14, "
        "LS-ITEM-2)")


def server_changes_table_index(ctx):
    return _first_turn_refused(
        ctx, True, _bad_item(lambda m, i: m.update(table=5)),
        expected=PE + " (Changes{table: 5} in a 1-table session, "
        "LS-INC-14)")


def server_not_offered(ctx):
    """A client that does not offer the feature: empty ServerHello.features,
    and no field of the feature in TablesOpened or Committed (LS-FEAT-4),
    although the server implements it."""
    ss = Sessions(ctx)
    out = ss.sync(feature=False)
    if isinstance(out, Outcome):
        return out
    if out.server_hello["features"]:
        return ss.case.fail("the server accepted a feature not offered",
                            "ServerHello.features = [] (LS-FEAT-3)",
                            pbwire.render({"server_hello":
                                           out.server_hello}))
    if out.result.ending != "committed":
        return ss.case.fail("the sync did not complete: %s" %
                            out.result.what, "Committed", out.result.what)
    return wire._check_sent_frames(ss.case, ctx.secret, ss.srv.stderr()) \
        or ss.case.ok("no field of the feature sent")


# ---- against the implementation's client ------------------------------------

BASEL = peers.uuid_bytes(1, b"basel")


def _scripted_server():
    """The scripted server's table: SERVER_ROWS (initial versions) and
    Basel, whose version is a real one of this moment."""
    t = TableData(TABLE, COLUMNS, [
        (peers.uuid_bytes(i, b"server"), dict(zip(NAMES, r)))
        for i, r in enumerate(SERVER_ROWS)])
    srv = ScriptedServer([t])
    srv.change(0, BASEL, {"name": "Basel", "pop": 177654, "area": 23.91})
    return srv


class Runs:
    """The implementation's client over several runs (sessions) against a
    scripted server that keeps its tokens from one session to the next."""

    def __init__(self, ctx, server=None):
        self.run = ClientRun(ctx)
        self.ctx, self.case = ctx, self.run.case
        self.server = server or _scripted_server()
        self.sr = None

    @property
    def table(self):
        return self.server.tables[0]

    def open(self, mutate_opened=None, check_open=None):
        """Serves the opening of one run of the client: the handshake,
        |check_open|(ServerRun) (which may return a failing Outcome before
        TablesOpened is sent), TablesOpened. Returns the ServerRun, or a
        failing Outcome."""
        run = self.run
        if run.conn is None:
            return wire._no_conn(run)
        self.sr = sr = self.server.session(run.conn, self.ctx.secret)
        try:
            sr.handshake()
        except peers.HandshakeFailed as e:
            run.finish(False, "", "a handshake")
            return self.case.fail("handshake failed: %s" % e,
                                  "a valid handshake", str(e))
        if not sr.feature:
            run.finish(False, "", "")
            return self.case.fail(
                "the client did not offer the feature %s" % FEATURE,
                "ClientHello.features = [\"%s\"] (the implementation "
                "declares it)" % FEATURE, pbwire.render({
                    "client_hello": sr.session.client_hello}))
        bad = check_open(sr) if check_open is not None else None
        problem = bad or sr.open(mutate_opened=mutate_opened)
        if problem:
            run.finish(False, "", "")
            return bad or self.case.fail(
                problem, "a valid OpenTables",
                pbwire.render({"open_tables": sr.open_msg}))
        return sr

    def session(self, mutate_opened=None, check_open=None, **drive_kw):
        """One run of the client: open(), then drive(**drive_kw). Returns
        the SyncResult, or a failing Outcome."""
        sr = self.open(mutate_opened, check_open)
        return sr if isinstance(sr, Outcome) else sr.drive(**drive_kw)

    def ok_session(self, what, **kw):
        """A session that must commit, and the client exit 0 with the
        scripted server's rows. None, or a failing Outcome."""
        res = self.session(**kw)
        if isinstance(res, Outcome):
            return res
        exp = "Committed; exit 0; the client holds the server's rows"
        if res.ending != "committed":
            self.run.finish(False, "", exp)
            return self.case.fail("%s did not complete: %s" % (
                what, res.what), exp, res.what)
        return self.run.finish(True, "", exp) or _same_rows(
            self.case, self.run.db, self.table, "client")

    def again(self):
        time.sleep(0.1)
        self.run.again()


def _open_checks(runs, checkpoint):
    """A check_open for Runs.session: OpenTables carries the client's
    site (the same in every session) and |checkpoint| (None: none) for
    the table (LS-INC-7, LS-INC-6)."""
    def check(sr):
        msg = sr.open_msg
        site = msg.get("client_site", b"")
        exp = ("OpenTables{client_site: 16 bytes, the same in every "
               "session, tables: [{checkpoint: %s}]} (LS-INC-7, LS-INC-6, "
               "LS-INC-3, LS-INC-16)" % (
                   "none" if checkpoint is None else
                   pbwire._render_msg("Checkpoint", checkpoint)))
        got = pbwire.render({"open_tables": msg})
        if len(site) != 16 or getattr(runs, "site", site) != site:
            return runs.case.fail("the client's OpenTables does not carry "
                                  "its site id", exp, got)
        runs.site = site
        cp = msg["tables"][0].get("checkpoint")
        if cp is not None and not cp.get("token"):
            cp = None           # an empty token is no checkpoint
        if checkpoint is None and cp is not None:
            return runs.case.fail("the client presented a checkpoint it "
                                  "must not present", exp, got)
        if checkpoint is not None and (cp is None or {
                k: cp.get(k, b"") for k in checkpoint} != checkpoint):
            return runs.case.fail("the client did not present the "
                                  "checkpoint of its last session", exp,
                                  got)
        return None
    return check


def _given(runs):
    """The checkpoint the scripted server gave in the last session."""
    return dict(runs.sr.checkpoints[0])


def client_checkpoint(ctx):
    """LS-INC-6, LS-INC-7, LS-INC-11. The client offers the feature and
    sends its site; after a successful session it presents, in its next
    one, the checkpoint the server gave, with the same site; listed as
    incremental with nothing changed, its first turn is its EndTurn
    alone, and it sends Verify after the server's empty (quiet) turn."""
    runs = Runs(ctx)
    bad = runs.ok_session("the first session",
                          check_open=_open_checks(runs, None))
    if bad:
        return bad
    given = _given(runs)
    turns = []
    runs.again()
    bad = runs.ok_session("the incremental session",
                          check_open=_open_checks(runs, given),
                          on_turn=lambda f: turns.append(_bodies(f)))
    if bad:
        return bad
    if runs.sr.opened.get("incremental") != [0]:
        raise HarnessError("the checkpoint was refused")
    if not turns or turns[0]:
        return runs.case.fail("the client sent frames in its first turn "
                              "although nothing changed", "EndTurn alone "
                              "(LS-INC-10, LS-INC-11)",
                              _describe(turns[0]) if turns else "no turn")
    return wire._check_sent_frames(runs.case, ctx.secret,
                                   runs.run.proc.stderr(),
                                   features=(FEATURE,)) or runs.case.ok(
        "checkpoint presented; empty incremental session committed")


def client_changes(ctx):
    """LS-INC-10, LS-INC-11, LS-INC-13. After a first session, the harness
    changes the client's rows through SQL (an update, a delete, an
    insert) and the scripted server its own (an update, a delete, an
    insert, and Basel set to a version older than the client's, as a
    session of another client under client-wins can leave it). Listed as
    incremental, the client's first turn must hold only Changes listing
    exactly the rows changed through SQL, ascending, with new versions;
    then it must ask (Need) for the server's changed rows it loses and
    send Basel, which it wins."""
    runs = Runs(ctx)
    bad = runs.ok_session("the first session")
    if bad:
        return bad
    first_clock = runs.sr.opened["clock"]
    t = runs.table
    u = {n: t.uuid_of("name", n) for n in ("Zürich", "東京", "Genève",
                                            "St. Gallen")}
    lugano = peers.uuid_bytes(4, b"lugano")
    for sql in ("UPDATE cities SET pop = 203857 WHERE name = 'Genève'",
                "DELETE FROM cities WHERE name = 'St. Gallen'",
                "INSERT INTO cities (name, pop, area, _lipsync_uuid) VALUES "
                "('Lugano', 62315, 75.98, %s)" % _uuid_sql(lugano)):
        runs.run.db.execute(sql)
    chur = peers.uuid_bytes(3, b"chur")
    srv = runs.server
    srv.change(0, u["Zürich"], {"name": "Zürich", "pop": 421879,
                                "area": 87.88})
    srv.change(0, u["東京"], None, deleted=True)
    srv.change(0, chur, {"name": "Chur", "pop": 37000, "area": 54.2})
    older = t.meta[BASEL].version[0] - 1
    srv.tables[0].change(BASEL, {"name": "Basel", "pop": 1, "area": 1.0},
                         b"\x0b" * 16, clock=older)
    given = _given(runs)
    turns = []
    runs.again()
    res = runs.session(check_open=_open_checks(runs, given),
                       on_turn=lambda f: turns.append(_bodies(f)))
    if isinstance(res, Outcome):
        return res
    exp = "the session commits; exit 0"
    if res.ending != "committed":
        runs.run.finish(False, "", exp)
        return runs.case.fail("the incremental session did not complete: "
                              "%s" % res.what, exp, res.what)
    bad = runs.run.finish(True, "", exp)
    if bad:
        return bad
    first, third = turns[0], (turns[1] if len(turns) > 1 else [])
    if any(b != "changes" for b, _ in first):
        return runs.case.fail("the client's first turn holds other frames "
                              "than Changes for its incremental table",
                              "Changes only (LS-INC-11)", _describe(first))
    bad = _check_set(runs.case, "the client's Changes",
                     _uuids(first, "changes"),
                     {u["Genève"], u["St. Gallen"], lugano},
                     "LS-INC-10, LS-INC-11: the rows changed since its "
                     "last session")
    if bad:
        return bad
    for b, m in first:
        for i in m["items"]:
            v = peers.version_of(i)
            gone = i["uuid"] == u["St. Gallen"]
            if not peers.well_formed(v) or v[0] <= first_clock or \
                    i.get("deleted", False) != gone:
                return runs.case.fail(
                    "a changed item of the client does not carry a new "
                    "version and its deleted flag",
                    "a clock above %d, the last TablesOpened.clock, and "
                    "deleted only for St. Gallen (LS-VERSION-3, "
                    "LS-CAPTURE-1)" % first_clock,
                    pbwire._render_msg("Item", i))
    rule = "LS-INC-13, LS-RECON-8"
    bad = (_check_set(runs.case, "the client's Need after the server's "
                      "Changes", _uuids(third, "need"),
                      {u["Zürich"], u["東京"], chur}, rule, ascending=False)
           or _check_set(runs.case, "the client's Rows after the server's "
                         "Changes", [x for x in _uuids(third, "rows")
                                     if x == BASEL or x not in
                                     (u["Genève"], u["St. Gallen"],
                                      lugano)],
                         {BASEL}, rule + " (Basel: the client's version "
                         "is later)", ascending=False))
    if bad:
        return bad
    return _same_rows(runs.case, runs.run.db, t, "client") or \
        wire._check_sent_frames(runs.case, ctx.secret,
                                runs.run.proc.stderr(),
                                features=(FEATURE,)) or runs.case.ok(
        "Changes sent and decided; only changed rows travelled")


def _client_refusal(mutate_opened, after_first, what, **drive_kw):
    """A test: a session whose TablesOpened is changed by |mutate_opened|
    (after a first session when |after_first|), driven with |drive_kw|:
    the client must fail with PROTOCOL_ERROR (|what| it refuses), exit
    non-zero and leave its database unchanged."""
    expected = ("Error PROTOCOL_ERROR (%s), close, non-zero exit, database "
                "unchanged" % what)

    def test(ctx):
        runs = Runs(ctx)
        if after_first:
            bad = runs.ok_session("the first session")
            if bad:
                return bad
            runs.again()
        run = runs.run
        sr = runs.open(mutate_opened)
        if isinstance(sr, Outcome):
            return sr
        if not drive_kw:
            return run.refused([C["PROTOCOL_ERROR"]], expected)
        res = sr.drive(**drive_kw)
        if res.ending != "error":
            run.finish(False, "", expected)
            return runs.case.fail(res.what, expected, res.what)
        ok, what = res.last.code == C["PROTOCOL_ERROR"], res.what
        c = run.conn.wait_close()
        if ok and c.kind not in ("eof", "reset"):
            ok, what = False, "no close after the Error: %s" % c.describe()
        bad = run.finish(False, what, expected)
        if not ok:
            return runs.case.fail(what, expected, what)
        return bad or runs.case.ok(what)
    return test


def client_verify_failed(ctx):
    """LS-INC-16. In an incremental session the scripted server's Verify
    disagrees (its item of Zürich changed without being listed, as a write
    that escaped its change capture would): the client must not commit,
    and its next session, which it may start at once on a new connection
    (SHOULD) or in its next run, must present no checkpoint; that session
    reconciles the table with ranges and converges."""
    runs = Runs(ctx)
    bad = runs.ok_session("the first session")
    if bad:
        return bad
    t = runs.table
    zurich = t.uuid_of("name", "Zürich")
    st = t.meta[zurich]
    st.version = (peers.now_clock(), runs.server.site)  # not in t.changed
    runs.again()
    res = runs.session()
    exp = ("VERIFY_FAILED: no commit (LS-COMMIT-1, LS-COMMIT-5); then a "
           "new session at once, or a non-zero exit with the database "
           "unchanged")
    if isinstance(res, Outcome):
        return res
    if runs.sr.opened.get("incremental") != [0] or res.ending == "committed":
        runs.run.finish(False, "", exp, allow_frames=("error",))
        return runs.case.fail("the drifted session was not incremental or "
                              "committed: %s" % res.what, exp, res.what)
    run = runs.run
    while True:             # only Error frames may follow
        r = run.conn.recv(1.0)
        if r.kind != "frame" or r.body != "error":
            break
    run.conn.close()
    conn = _next_connection(run)
    if conn is None:
        status = run.proc.wait(ctx.timeout + 5)
        if status is None or status == 0:
            if status is None:
                run.proc.kill()
            return runs.case.fail(
                "after VERIFY_FAILED the client neither started a new "
                "session nor exited non-zero", exp,
                "still running" if status is None else "exit status 0")
        bad = wire._unchanged(runs.case, run.db, run.before)
        if bad:
            return bad
        runs.again()
        how = "in its next run"
    else:
        run.conn = conn
        how = "at once"
    return runs.ok_session("the session after VERIFY_FAILED",
                           check_open=_open_checks(runs, None)) or \
        runs.case.ok("no checkpoint presented after VERIFY_FAILED (%s)"
                     % how)


def _next_connection(run):
    """A new connection of the client process of |run| on its listener,
    accepted while the process runs (within the timeout), or None."""
    deadline = time.monotonic() + run.ctx.timeout
    while time.monotonic() < deadline:
        conn = peers.accept(run.listener, 0.2, run.case.records)
        if conn is not None:
            run.session = peers.ServerSession(conn, run.ctx.secret)
            return conn
        if run.proc.wait(0) is not None:
            return None
    return None


def _malformed_checkpoint(ctx, change, mutate_list=None):
    """The first session's Committed carries a malformed checkpoint (each
    changed by |change|, or the list by |mutate_list|): the client still
    commits (LS-INC-3: it is no checkpoint; LS-INC-19) and presents none
    in its next session."""
    runs = Runs(ctx)

    def mutate(cps):
        if mutate_list is not None:
            return mutate_list(cps)
        return [change(dict(cp)) for cp in cps]
    bad = runs.ok_session("the session whose Committed carries a malformed "
                          "checkpoint",
                          check_open=lambda sr: setattr(
                              sr, "mutate_checkpoints", mutate))
    if bad:
        return bad
    runs.again()
    return runs.ok_session("the next session",
                           check_open=_open_checks(runs, None)) or \
        runs.case.ok("malformed checkpoint ignored")


def client_checkpoint_count(ctx):
    """LS-INC-19: the first session's Committed carries two checkpoints
    for a one-table session: the client still commits, keeps neither, and
    presents none in its next session."""
    return _malformed_checkpoint(ctx, None, lambda cps: cps + [dict(cps[0])])


def client_no_checkpoint_removes(ctx):
    """LS-INC-20: the first session gives a checkpoint; the second one's
    Committed gives none for the table (an empty token, LS-INC-3): the
    client must remove the checkpoint it held, and present none in the
    third session."""
    runs = Runs(ctx)
    bad = runs.ok_session("the first session")
    if bad:
        return bad
    runs.again()

    def drop(cps):
        return [dict(cp, token=b"") for cp in cps]
    bad = runs.ok_session("the session whose Committed gives no checkpoint",
                          check_open=lambda sr: setattr(
                              sr, "mutate_checkpoints", drop))
    if bad:
        return bad
    runs.again()
    return runs.ok_session("the next session",
                           check_open=_open_checks(runs, None)) or \
        runs.case.ok("the checkpoint held was removed")


def client_malformed_token(ctx):
    return _malformed_checkpoint(ctx, lambda cp: dict(cp,
                                                      token=cp["token"][:3]))


def client_malformed_position(ctx):
    return _malformed_checkpoint(ctx, lambda cp: dict(
        cp, server_position=b"\x07" * 1025))


def client_feature_declined(ctx):
    """After an incremental-capable session, a server that does not accept
    the feature: the client sends no field of it (no client_site, no
    checkpoint: LS-FEAT-4) and syncs with ranges."""
    runs = Runs(ctx)
    bad = runs.ok_session("the first session")
    if bad:
        return bad
    runs.server.feature = False
    runs.again()
    run = runs.run
    if run.conn is None:
        return wire._no_conn(run)
    sr = runs.server.session(run.conn, ctx.secret)
    try:
        sr.handshake()
    except peers.HandshakeFailed as e:
        return runs.case.fail("handshake failed: %s" % e, "handshake",
                              str(e))
    msg = sr.open_msg
    if msg.get("client_site") or any("checkpoint" in ts
                                     for ts in msg["tables"]):
        run.finish(False, "", "")
        return runs.case.fail("the client sent fields of a feature not in "
                              "effect", "OpenTables without client_site "
                              "and checkpoint (LS-FEAT-4)",
                              pbwire.render({"open_tables": msg}))
    sr.open()
    res = sr.drive()
    exp = "Committed; exit 0"
    if res.ending != "committed":
        run.finish(False, "", exp)
        return runs.case.fail("the sync did not complete: %s" % res.what,
                              exp, res.what)
    return run.finish(True, "", exp) or _same_rows(
        runs.case, run.db, runs.table, "client") or runs.case.ok(
        "no feature field; ranges")


# ---- the list ---------------------------------------------------------------

def _t(name, reqs, fn, role, description, level="MUST", keys=()):
    t = Test(name=name, requirements=tuple(reqs), run=fn, level=level,
             features=frozenset({FEATURE}), role=role,
             description=description)
    t.impl_keys = frozenset(keys)
    return t


def tests():
    S, K = "server", "client"
    P = "wire/server/incremental/"
    Q = "wire/client/incremental/"
    R = ["LS-INC-14", "LS-STATE-4", "LS-COMMIT-6"]
    return [
        _t(P + "checkpoint",
           ["LS-FEAT-3", "LS-FEAT-4", "LS-INC-3", "LS-INC-4", "LS-INC-9",
            "LS-INC-7"], server_checkpoint, S,
           "the feature accepted; Committed carries one checkpoint per "
           "table"),
        _t(P + "changes",
           ["LS-INC-1", "LS-INC-2", "LS-INC-8", "LS-INC-9", "LS-INC-10",
            "LS-INC-12", "LS-INC-14", "LS-INC-15", "LS-RECON-8",
            "LS-CAPTURE-1", "LS-POLICY-1", "LS-COMMIT-2"],
           server_changes, S,
           "a checkpoint presented: only the changed rows travel, decided "
           "as item lists"),
        _t(P + "unchanged",
           ["LS-INC-11", "LS-INC-1", "LS-INC-10", "LS-TURN-4",
            "LS-TURN-6", "LS-TURN-7"], server_unchanged, S,
           "nothing changed: the client's empty first turn is answered, "
           "not taken as quiet"),
        _t(P + "token", ["LS-INC-5"], server_token, S,
           "a new token when the session changed the table, the same one "
           "otherwise", level="SHOULD"),
        _t(P + "refused-token", ["LS-INC-8", "LS-INC-9"],
           server_refused_token, S,
           "a checkpoint with another token: refused, the sync succeeds "
           "with ranges"),
        _t(P + "refused-site", ["LS-INC-8", "LS-INC-9"],
           server_refused_site, S,
           "a checkpoint with another server_site: refused, ranges"),
        _t(P + "refused-position", ["LS-INC-8", "LS-INC-2"],
           server_refused_position, S,
           "a checkpoint with a position the server never made: refused, "
           "ranges"),
        _t(P + "stale", ["LS-INC-8", "LS-TOMB-5"], server_stale, S,
           "a checkpoint presented in a stale session: refused, ranges",
           keys=("retention_option",)),
        _t(P + "client-site-short", ["LS-INC-7", "LS-STATE-4",
                                     "LS-COMMIT-6"],
           server_client_site_short, S,
           "OpenTables.client_site of 15 bytes: PROTOCOL_ERROR"),
        _t(P + "client-site-missing", ["LS-INC-7", "LS-STATE-4"],
           server_client_site_missing, S,
           "OpenTables without client_site: PROTOCOL_ERROR"),
        _t(P + "changes-not-incremental", R + ["LS-INC-23"],
           server_changes_not_incremental, S,
           "Changes for a table that is not incremental: PROTOCOL_ERROR"),
        _t(P + "changes-late", R + ["LS-INC-23"], server_changes_late, S,
           "Changes in the client's second turn: PROTOCOL_ERROR"),
        _t(P + "changes-without-feature", ["LS-INC-23", "LS-STATE-3"],
           server_changes_without_feature, S,
           "a Changes frame without the feature: UNEXPECTED_MESSAGE"),
        _t(P + "empty-changes", ["LS-INC-22", "LS-TURN-6"],
           server_empty_changes, S,
           "an empty Changes frame: accepted, and its turn is not quiet"),
        _t(P + "ranges-for-incremental", R + ["LS-INC-11", "LS-INC-24"],
           server_ranges_for_incremental, S,
           "Ranges for an incremental table, then its Changes: "
           "PROTOCOL_ERROR"),
        _t(P + "changes-short-uuid", R + ["LS-ITEM-2"],
           server_changes_short_uuid, S,
           "a Changes item with a 15-byte uuid: PROTOCOL_ERROR"),
        _t(P + "changes-no-version", R + ["LS-ITEM-2", "LS-VERSION-6"],
           server_changes_no_version, S,
           "a Changes item without a version: PROTOCOL_ERROR"),
        _t(P + "changes-table-index", R, server_changes_table_index, S,
           "Changes naming table 5 of 1: PROTOCOL_ERROR"),
        _t(P + "not-offered", ["LS-FEAT-4", "LS-FEAT-3"],
           server_not_offered, S,
           "a client without the feature: no field of it in the server's "
           "frames"),
        _t(Q + "checkpoint",
           ["LS-FEAT-2", "LS-INC-6", "LS-INC-7", "LS-INC-11",
            "LS-VERSION-4", "LS-TURN-7"], client_checkpoint, K,
           "the next session presents the checkpoint given, with the same "
           "client_site"),
        _t(Q + "changes",
           ["LS-INC-1", "LS-INC-2", "LS-INC-10", "LS-INC-11", "LS-INC-13",
            "LS-INC-14", "LS-INC-15", "LS-RECON-8", "LS-CAPTURE-1",
            "LS-VERSION-3", "LS-COMMIT-4"], client_changes, K,
           "only the rows changed since the checkpoint sent; the server's "
           "Changes decided"),
        _t(Q + "listed-without-checkpoint", ["LS-INC-9", "LS-COMMIT-6"],
           _client_refusal(lambda o: dict(o, incremental=[0]), False,
                           "TablesOpened.incremental names a table the "
                           "client presented no checkpoint for, LS-INC-9"),
           K, "TablesOpened lists a table presented without checkpoint: "
           "PROTOCOL_ERROR"),
        _t(Q + "listed-twice", ["LS-INC-9"],
           _client_refusal(lambda o: dict(o, incremental=[0, 0]), True,
                           "TablesOpened.incremental [0, 0], not strictly "
                           "ascending, LS-INC-9"),
           K, "TablesOpened.incremental [0, 0]: PROTOCOL_ERROR"),
        _t(Q + "listed-out-of-range", ["LS-INC-9"],
           _client_refusal(lambda o: dict(o, incremental=[0, 1]), True,
                           "TablesOpened.incremental names table 1 of a "
                           "1-table session, LS-INC-9"),
           K, "TablesOpened.incremental names table 1 of 1: PROTOCOL_ERROR"),
        _t(Q + "server-site-short", ["LS-INC-9"],
           _client_refusal(lambda o: dict(o, server_site=o["server_site"][
               :15]), False, "TablesOpened.server_site of 15 bytes, "
               "LS-INC-9"),
           K, "TablesOpened.server_site of 15 bytes: PROTOCOL_ERROR"),
        _t(Q + "changes-not-incremental", ["LS-INC-14", "LS-STATE-4"],
           _client_refusal(None, False, "the server's Changes for a table "
                           "that is not incremental, LS-INC-14",
                           mutate_answer=_add(("changes", {
                               "table": 0, "items": []}))),
           K, "the server's Changes for a table that is not incremental: "
           "PROTOCOL_ERROR"),
        _t(Q + "verify-failed",
           ["LS-INC-16", "LS-INC-15", "LS-COMMIT-1", "LS-COMMIT-5"],
           client_verify_failed, K,
           "VERIFY_FAILED in an incremental session: no checkpoint next "
           "time, ranges converge"),
        _t(Q + "checkpoint-count", ["LS-INC-19", "LS-INC-6"],
           client_checkpoint_count, K,
           "two checkpoints for one table: committed, neither kept"),
        _t(Q + "no-checkpoint-removes", ["LS-INC-20", "LS-INC-6"],
           client_no_checkpoint_removes, K,
           "a Committed with no checkpoint removes the one held"),
        _t(Q + "malformed-token", ["LS-INC-3", "LS-INC-6"],
           client_malformed_token, K,
           "a checkpoint whose token is 3 bytes: committed, not presented"),
        _t(Q + "malformed-position", ["LS-INC-3", "LS-INC-6"],
           client_malformed_position, K,
           "a checkpoint whose position is 1025 bytes: committed, not "
           "presented"),
        _t(Q + "feature-declined", ["LS-FEAT-4", "LS-INC-7"],
           client_feature_declined, K,
           "a server without the feature: no client_site, no checkpoint, "
           "ranges"),
    ]

"""Scripted LipSync peers for the wire tests: frame I/O with timeouts and a
record of every frame, the handshake of spec 5 with HMAC proofs (5.3),
the hashes of sections 6 to 8 (row digests, item digests, fingerprints),
row versions and the decision for one UUID (8.6: lww, server-wins,
client-wins, the T0 rule of a stale client), and a minimal reconciliation
engine (the ItemList strategy of 8.5) that both a scripted client and a
scripted server drive.

Standard library only. Written from spec/lipsync.md.
"""

import hashlib
import hmac
import os
import socket
import struct
import threading
import time

from . import pbwire
from .core import FrameRecord

CLIENT_LABEL = b"LipSync v1 client auth"
SERVER_LABEL = b"LipSync v1 server auth"
MAX_FRAME = pbwire.MAX_FRAME
UUID_COLUMN = "_lipsync_uuid"


# ---- hashes (spec 5.3, 6.3, 7.2, 8.1, 8.2) ------------------------------------

def sha256(b):
    return hashlib.sha256(b).digest()


def transcript_hash(ch_frame, sh_frame):
    return sha256(ch_frame + sh_frame)


def client_mac(secret, th):
    return hmac.new(secret, CLIENT_LABEL + th, hashlib.sha256).digest()


def server_mac(secret, th):
    return hmac.new(secret, SERVER_LABEL + th, hashlib.sha256).digest()


def schema_fingerprint(columns):
    """columns: [(name, canonical type)] in canonical column order."""
    out = struct.pack(">I", len(columns))
    for name, typ in columns:
        n = name.encode("utf-8")
        t = typ.encode("ascii")
        out += struct.pack(">I", len(n)) + n + struct.pack(">I", len(t)) + t
    return sha256(out)


def canonical_order(columns):
    """Canonical columns of (name, type) pairs: without the UUID column, in
    bytewise order of the UTF-8 names (LS-TABLE-3, LS-TABLE-4)."""
    cols = [(n, t) for n, t in columns if n != UUID_COLUMN]
    return sorted(cols, key=lambda c: c[0].encode("utf-8"))


def canon_value(v):
    """enc(v) of LS-VALUE-6, from a Value dict."""
    if "null" in v:
        return b"\x00"
    if "integer" in v:
        return b"\x01" + struct.pack(">q", v["integer"])
    if "real" in v:
        bits = v.get("real_bits")
        if bits is None:
            bits = struct.unpack("<Q", struct.pack("<d", v["real"]))[0]
        if (bits >> 52) & 0x7FF == 0x7FF and bits & ((1 << 52) - 1):
            bits = 0x7FF8000000000000
        return b"\x02" + struct.pack(">Q", bits)
    if "text" in v:
        return b"\x03" + struct.pack(">I", len(v["text"])) + v["text"]
    if "blob" in v:
        return b"\x04" + struct.pack(">I", len(v["blob"])) + v["blob"]
    raise ValueError("Value with no kind")


def row_digest(uuid, values):
    """LS-DIGEST-1, LS-DIGEST-2; values are Value dicts."""
    data = uuid + struct.pack(">I", len(values)) + b"".join(
        canon_value(v) for v in values)
    return sha256(data)[:16]


ZERO_VERSION = (0, b"\0" * 16)
LWW, SERVER_WINS, CLIENT_WINS = 0, 1, 2
POLICY_NAMES = {"lww": LWW, "server-wins": SERVER_WINS,
                "client-wins": CLIENT_WINS}


def item_digest(uuid, version, deleted):
    """LS-ITEM-1: SHA-256(uuid || u64be(clock) || site || u8(deleted))[0:16];
    version is (clock, site)."""
    clock, site = version
    return sha256(uuid + struct.pack(">Q", clock) + site
                  + (b"\x01" if deleted else b"\x00"))[:16]


def initial_version(uuid, values):
    """LS-VERSION-5: (clock 0, site = row digest) for a row that existed
    when capture was installed; values are Value dicts."""
    return (0, row_digest(uuid, values))


def now_clock():
    """A clock of this moment: wall milliseconds << 16 (LS-VERSION-2)."""
    return int(time.time() * 1000) << 16


def version_msg(v):
    return {"clock": v[0], "site": v[1]}


def version_of(msg, name="version"):
    """(clock, site) of a decoded Item or Row's |name| field, or None when
    it is absent."""
    m = msg.get(name)
    if m is None:
        return None
    return (m.get("clock", 0), m.get("site", b""))


def base_of(msg):
    """(clock, site) of a decoded Item or Row's base_version, None when it
    is absent; the short form of the zero version (no field set: clock 0,
    empty site, LS-POLICY-5) reads as ZERO_VERSION."""
    b = version_of(msg, "base_version")
    if b is not None and b[0] == 0 and b[1] == b"":
        return ZERO_VERSION
    return b


def well_formed(v):
    return v is not None and len(v[1]) == 16


class ItemState:
    """What a side knows of one UUID: version (clock, site), deleted, and
    (client side) base, the version after its last sync as a client;
    base defaults to the version (a clean row)."""

    def __init__(self, version, deleted=False, base=None):
        self.version = tuple(version)
        self.deleted = bool(deleted)
        self.base = tuple(base) if base is not None else self.version

    def __repr__(self):
        return "ItemState(%r, deleted=%s, base=%r)" % (
            self.version, self.deleted, self.base)


def stale_t0(horizon):
    """LS-TOMB-5: the implicit tombstone T0 of a stale session."""
    return ItemState((max(horizon - 1, 0), b"\0" * 16), True)


def decide(c, s, policy=LWW):
    """The decision for one UUID (LS-POLICY-1, LS-POLICY-2): c and s are
    the client's and the server's ItemState (or None); returns "CLIENT" or
    "SERVER" (whose row the other side must take), "NONE" or "CONFLICT".
    A caller applies the T0 rule (stale_t0) first."""
    if c is None:
        return "SERVER" if s is not None else "NONE"
    if s is None:
        return "CLIENT"
    if c.version == s.version:
        return "CONFLICT" if c.deleted != s.deleted else "NONE"
    if policy == LWW:
        if c.version[0] == 0 and s.version[0] == 0:
            return "CONFLICT"
        return "CLIENT" if c.version > s.version else "SERVER"
    cc, sc = c.version != c.base, s.version != c.base
    if cc and sc:
        return "SERVER" if policy == SERVER_WINS else "CLIENT"
    return "CLIENT" if cc else "SERVER"


def fingerprint(digests):
    """LS-FP-1: (16-byte fingerprint) of a collection of digests."""
    acc = 0
    n = 0
    for d in digests:
        acc = (acc + int.from_bytes(d, "big")) % (1 << 128)
        n += 1
    return sha256(acc.to_bytes(16, "big") + struct.pack(">Q", n))[:16]


def uuid_bytes(i, salt=b"lsconf"):
    """A deterministic 16-byte UUID (version 4 bits set) for test rows."""
    b = bytearray(sha256(salt + struct.pack(">I", i))[:16])
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return bytes(b)


def uuid_text(b):
    h = b.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


# ---- frame I/O ----------------------------------------------------------------

class Received:
    """What one read from the implementation gave.

    kind: "frame"      a whole frame (raw, frame, body, msg set)
          "eof"        the stream ended at a frame boundary
          "truncated"  the stream ended inside a frame (raw holds the part)
          "reset"      the connection was reset (ECONNRESET, EPIPE)
          "timeout"    nothing complete arrived in time
          "too_large"  a length prefix above MAX_FRAME
          "undecodable" a frame whose payload is not a Frame
    """

    def __init__(self, kind, raw=b"", frame=None, error=""):
        self.kind = kind
        self.raw = raw
        self.frame = frame
        self.error = error
        self.body, self.msg = (pbwire.body_of(frame) if frame is not None
                               else (None, None))

    def is_error(self, codes=None):
        return (self.kind == "frame" and self.body == "error"
                and (codes is None or self.msg.get("code") in codes))

    @property
    def code(self):
        return self.msg.get("code") if self.body == "error" else None

    def describe(self):
        if self.kind == "frame":
            return pbwire.render(self.frame)
        if self.kind == "truncated":
            return "stream ended inside a frame after %d bytes" % len(self.raw)
        if self.kind == "too_large":
            return "length prefix above MAX_FRAME: %s" % self.raw.hex()
        if self.kind == "undecodable":
            return "undecodable frame (%s)" % self.error
        if self.kind == "eof":
            return "stream closed"
        if self.kind == "reset":
            return "connection reset (%s)" % self.error
        return "no frame within the timeout"


class Conn:
    """One stream to the implementation. A reader thread drains the socket
    as soon as bytes arrive (so an Error followed by a reset is not lost),
    and every frame sent and received is recorded for the report."""

    def __init__(self, sock, timeout=10.0, records=None):
        self.sock = sock
        self.timeout = timeout
        self.records = records if records is not None else []
        self._buf = bytearray()
        self._eof = False
        self._err = ""
        self._cond = threading.Condition()
        self._closed = False
        sock.settimeout(None)
        self._thread = threading.Thread(target=self._reader, daemon=True)
        self._thread.start()

    def _reader(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError as e:
                with self._cond:
                    self._err = e.__class__.__name__
                    self._eof = True
                    self._cond.notify_all()
                return
            with self._cond:
                if not data:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._buf += data
                self._cond.notify_all()

    # -- sending

    def send(self, raw, decoded=None):
        """Sends raw bytes; records them as one "sent" frame. Returns False
        when the peer already closed (a send error is not fatal here)."""
        if decoded is None:
            decoded = pbwire.render_bytes(raw)
        self.records.append(FrameRecord("sent", bytes(raw), decoded))
        try:
            self.sock.sendall(raw)
            return True
        except OSError as e:
            self.records.append(FrameRecord(
                "received", b"", "(send failed: %s)" % e.__class__.__name__))
            return False

    def send_frame(self, body, msg=None):
        raw = pbwire.frame(body, msg or {})
        self.send(raw)
        return raw

    def shutdown_write(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        if not self._closed:
            self._closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    # -- receiving

    def _wait(self, n, deadline):
        """Waits until the buffer holds n bytes, the stream ended or the
        deadline passed; returns True when n bytes are there."""
        with self._cond:
            while len(self._buf) < n and not self._eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return len(self._buf) >= n

    def _take(self, n):
        with self._cond:
            b = bytes(self._buf[:n])
            del self._buf[:n]
            return b

    def recv(self, timeout=None):
        """Reads the next frame; returns a Received (never raises)."""
        deadline = time.monotonic() + (self.timeout if timeout is None
                                       else timeout)
        r = self._recv(deadline)
        if r.kind in ("frame", "truncated", "too_large", "undecodable"):
            self.records.append(FrameRecord("received", r.raw, r.describe()))
        elif r.kind == "reset":
            self.records.append(FrameRecord("received", b"", r.describe()))
        return r

    def _recv(self, deadline):
        if not self._wait(4, deadline):
            with self._cond:
                if self._eof:
                    rest = bytes(self._buf)
                    self._buf.clear()
                    if rest:
                        return Received("truncated", rest)
                    if self._err:
                        return Received("reset", error=self._err)
                    return Received("eof")
            return Received("timeout")
        with self._cond:
            n = struct.unpack(">I", bytes(self._buf[:4]))[0]
        if n > MAX_FRAME:
            return Received("too_large", self._take(4))
        if not self._wait(4 + n, deadline):
            with self._cond:
                if self._eof:
                    rest = bytes(self._buf)
                    self._buf.clear()
                    return Received("truncated", rest)
            return Received("timeout")
        raw = self._take(4 + n)
        try:
            fr = pbwire.decode_payload(raw[4:])
        except pbwire.DecodeError as e:
            return Received("undecodable", raw, error=str(e))
        return Received("frame", raw, fr)

    def wait_close(self, timeout=None):
        """After the implementation's last frame: waits for the stream to
        end. Returns a Received: "eof" or "reset" when it closed, "timeout"
        when it stayed open, or whatever else arrived (a frame after the
        Error, which LS-ERR-1 forbids)."""
        return self.recv(timeout)


def connect(address, timeout=10.0, records=None):
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host.strip("[]"), int(port)),
                                    timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Conn(sock, timeout, records)


def accept(listener, timeout=10.0, records=None):
    """Accepts one connection on |listener|; None on timeout."""
    listener.settimeout(timeout)
    try:
        sock, _ = listener.accept()
    except socket.timeout:
        return None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Conn(sock, timeout, records)


# ---- expectations ---------------------------------------------------------------

def code_names(codes):
    return " or ".join(pbwire.ERROR_CODES.get(c, str(c)) for c in codes)


def expect_error_close(conn, codes, allow_close=False, timeout=None):
    """Reads the implementation's answer: it must be one Error with a code
    in |codes| followed by the end of the stream, or (with |allow_close|)
    the end of the stream alone. Returns (ok, what happened, received
    Error or None)."""
    r = conn.recv(timeout)
    if r.kind in ("eof", "reset"):
        if allow_close:
            return True, "closed without an Error", None
        return False, "closed without sending an Error (%s)" % r.kind, None
    if r.kind == "timeout":
        return False, "neither an Error nor a close within %.0f s" % (
            timeout or conn.timeout), None
    if r.kind != "frame":
        return False, r.describe(), None
    if r.body != "error":
        return False, "sent %s instead of an Error" % r.describe(), None
    if r.code not in codes:
        return False, "sent %s, expected code %s" % (
            r.describe(), code_names(codes)), r
    if r.code != pbwire.CODES["VERSION_MISMATCH"] and (
            r.msg.get("min_version") or r.msg.get("max_version")):
        return False, ("%s sets min_version/max_version, which LS-ERR-4 "
                       "allows only with VERSION_MISMATCH" % r.describe()), r
    c = conn.wait_close(timeout)
    if c.kind in ("eof", "reset"):
        return True, "%s, then closed" % r.describe(), r
    if c.kind == "timeout":
        return False, ("sent %s but did not close the stream within %.0f s"
                       % (r.describe(), timeout or conn.timeout)), r
    return False, "sent %s after its Error" % c.describe(), r


# ---- handshake ---------------------------------------------------------------

class HandshakeFailed(Exception):
    def __init__(self, what, received=None):
        Exception.__init__(self, what)
        self.received = received


class ClientSession:
    """A scripted client's handshake state."""

    def __init__(self, conn, secret):
        self.conn = conn
        self.secret = secret
        self.ch = b""
        self.sh = b""
        self.th = b""
        self.server_hello = None

    def hello(self, min_version=1, max_version=1, features=(), nonce=None):
        """Sends ClientHello; returns the Received answer."""
        if nonce is None:
            nonce = os.urandom(32)
        msg = {"min_version": min_version, "max_version": max_version,
               "features": list(features), "nonce": nonce}
        self.ch = self.conn.send_frame("client_hello", msg)
        r = self.conn.recv()
        if r.kind == "frame" and r.body == "server_hello":
            self.sh = r.raw
            self.server_hello = r.msg
            self.th = transcript_hash(self.ch, self.sh)
        return r

    def auth(self, mac=None):
        """Sends client_auth (the correct MAC unless |mac|); returns the
        Received answer."""
        if mac is None:
            mac = client_mac(self.secret, self.th)
        self.conn.send_frame("client_auth", {"mac": mac})
        return self.conn.recv()

    def handshake(self):
        """The whole valid handshake; raises HandshakeFailed."""
        r = self.hello()
        if not (r.kind == "frame" and r.body == "server_hello"):
            raise HandshakeFailed("expected ServerHello, got %s"
                                  % r.describe(), r)
        if len(self.server_hello["nonce"]) != 32 or \
                self.server_hello["version"] != 1:
            raise HandshakeFailed("bad ServerHello %s" % r.describe(), r)
        r = self.auth()
        if not (r.kind == "frame" and r.body == "server_auth"):
            raise HandshakeFailed("expected server_auth, got %s"
                                  % r.describe(), r)
        if not hmac.compare_digest(r.msg["mac"],
                                   server_mac(self.secret, self.th)):
            raise HandshakeFailed("server_auth MAC does not verify", r)
        return r

    def open_tables(self, tables, policy=LWW):
        """tables: [TableData] or [(name, columns)]; returns the answer."""
        msg = {"tables": [table_schema(t) for t in tables]}
        if policy:
            msg["policy"] = policy
        self.conn.send_frame("open_tables", msg)
        return self.conn.recv()


def table_schema(t, fingerprint_override=None):
    if isinstance(t, TableData):
        name, cols = t.name, t.columns
    else:
        name, cols = t[0], canonical_order(t[1])
    return {"name": name,
            "columns": [{"name": n, "type": ty} for n, ty in cols],
            "fingerprint": (fingerprint_override if fingerprint_override
                            is not None else schema_fingerprint(cols)),
            "last_sync": 0}


class ServerSession:
    """A scripted server's handshake state."""

    def __init__(self, conn, secret):
        self.conn = conn
        self.secret = secret
        self.ch = b""
        self.sh = b""
        self.th = b""
        self.client_hello = None

    def read_hello(self):
        r = self.conn.recv()
        if r.kind == "frame" and r.body == "client_hello":
            self.ch = r.raw
            self.client_hello = r.msg
        return r

    def hello(self, version=1, nonce=None, features=()):
        if nonce is None:
            nonce = os.urandom(32)
        self.sh = self.conn.send_frame("server_hello", {
            "version": version, "features": list(features), "nonce": nonce})
        self.th = transcript_hash(self.ch, self.sh)

    def read_auth(self):
        """Reads client_auth; returns (Received, MAC valid?)."""
        r = self.conn.recv()
        ok = (r.kind == "frame" and r.body == "client_auth" and
              hmac.compare_digest(r.msg["mac"],
                                  client_mac(self.secret, self.th)))
        return r, ok

    def auth(self, mac=None):
        if mac is None:
            mac = server_mac(self.secret, self.th)
        self.conn.send_frame("server_auth", {"mac": mac})

    def handshake(self):
        """Valid server handshake up to and including reading OpenTables;
        returns the Received OpenTables. Raises HandshakeFailed."""
        r = self.read_hello()
        if not (r.kind == "frame" and r.body == "client_hello"):
            raise HandshakeFailed("expected ClientHello, got %s"
                                  % r.describe(), r)
        self.hello()
        r, ok = self.read_auth()
        if not ok:
            raise HandshakeFailed("expected a valid client_auth, got %s"
                                  % r.describe(), r)
        self.auth()
        r = self.conn.recv()
        if not (r.kind == "frame" and r.body == "open_tables"):
            raise HandshakeFailed("expected OpenTables, got %s"
                                  % r.describe(), r)
        return r


# ---- reconciliation ------------------------------------------------------------

class TableData:
    """One table of a scripted peer: canonical columns, live rows by UUID
    (values as Value dicts, in canonical column order) and an ItemState for
    every UUID, tombstones included."""

    def __init__(self, name, columns, rows=()):
        """columns: [(name, canonical type)] in any order; rows: [(uuid
        bytes, {column name: Python value})] or (uuid, [Value dicts]).
        Rows given here exist before the session: they get initial
        versions (0, row digest) and the zero base, as a database whose
        capture is installed by its first sync (LS-VERSION-5)."""
        self.name = name
        self.columns = canonical_order(columns)
        self.rows = {}
        self.meta = {}
        for uuid, values in rows:
            self.add(uuid, values)

    def add(self, uuid, values, version=None, deleted=False,
            base=ZERO_VERSION):
        """Adds a row (or, with deleted, a tombstone: values ignored);
        version None means its initial version."""
        uuid = bytes(uuid)
        if isinstance(values, dict):
            values = [pbwire.value_msg(values.get(n))
                      for n, _ in self.columns]
        values = list(values or [])
        if version is None:
            version = initial_version(uuid, values)
        if deleted:
            self.rows.pop(uuid, None)
        else:
            self.rows[uuid] = values
        self.meta[uuid] = ItemState(version, deleted, base)

    def visible(self, horizon=0, server=False):
        """LS-TOMB-3: the UUIDs of the visible item set, ascending."""
        out = []
        for u in sorted(self.meta):
            st = self.meta[u]
            if st.deleted and st.version[0] < horizon and (
                    server or st.version == st.base):
                continue
            out.append(u)
        return out

    def items_in(self, lower, upper, horizon=0, server=False):
        """[(uuid, ItemState)] of the visible items in [lower, upper)."""
        out = []
        for u in self.visible(horizon, server):
            if lower and u < lower:
                continue
            if upper and u >= upper:
                continue
            out.append((u, self.meta[u]))
        return out

    def digest(self, uuid):
        st = self.meta[uuid]
        return item_digest(uuid, st.version, st.deleted)

    def state(self, horizon=0):
        """(count, fingerprint) for Verify: every item but tombstones below
        the horizon."""
        digests = [self.digest(u) for u, st in self.meta.items()
                   if not (st.deleted and st.version[0] < horizon)]
        return len(digests), fingerprint(digests)


class Reconciler:
    """The ItemList strategy of spec 8.5 for a scripted peer: the first
    turn sends one ItemList range per table; a Fingerprint range is
    answered with option (a); an ItemList with a Need for the UUIDs the
    peer wins and Rows for those it wins itself (conflicts counted); a Need
    with Rows. Received rows must win (LS-POLICY-4, else ValueError) and
    are applied to the tables.

    server: the scripted peer plays the server (decisions take the peer's
    items as the client's); policy: LWW, SERVER_WINS or CLIENT_WINS;
    horizon: the session's tombstone horizon."""

    def __init__(self, tables, server=False, policy=LWW, horizon=0):
        self.tables = tables
        self.server = server
        self.policy = policy
        self.horizon = horizon
        self.conflicts = [0] * len(tables)
        self.sent = [set() for _ in tables]

    def item_msg(self, uuid, st):
        m = {"uuid": uuid, "version": version_msg(st.version)}
        if st.deleted:
            m["deleted"] = True
        if not self.server and st.base != st.version:
            # A zero base in both forms (LS-POLICY-5): the short one, no
            # field set, for every other UUID.
            short = st.base == ZERO_VERSION and uuid[-1] % 2 == 0
            m["base_version"] = {} if short else version_msg(st.base)
        return m

    def row_msg(self, t, uuid):
        st = t.meta[uuid]
        m = self.item_msg(uuid, st)
        m["values"] = [] if st.deleted else t.rows[uuid]
        return m

    def first_turn(self):
        out = []
        for i, t in enumerate(self.tables):
            items = [self.item_msg(u, st) for u, st in
                     t.items_in(b"", b"", self.horizon, self.server)]
            out.append(("ranges", {"table": i, "ranges": [
                {"lower": b"", "upper": b"", "items": {"items": items}}]}))
        return out

    def _rows_frame(self, ti, uuids):
        t = self.tables[ti]
        rows = []
        for u in uuids:
            if u in self.sent[ti]:
                continue
            self.sent[ti].add(u)
            rows.append(self.row_msg(t, u))
        return ("rows", {"table": ti, "rows": rows}) if rows else None

    @staticmethod
    def theirs(msg):
        """The ItemState of a decoded Item or Row (ValueError when its
        version is missing or malformed: LS-ITEM-2, LS-VERSION-6)."""
        v = version_of(msg)
        if not well_formed(v):
            raise ValueError("an Item or Row without a well-formed version")
        b = base_of(msg)
        if b is not None and len(b[1]) != 16:
            raise ValueError("a base_version whose site is not 16 bytes")
        return ItemState(v, msg.get("deleted", False), b)

    def winner(self, mine, theirs):
        """"ME", "PEER", "NONE" or "CONFLICT" for one UUID."""
        c, s = (theirs, mine) if self.server else (mine, theirs)
        d = decide(c, s, self.policy)
        if d in ("NONE", "CONFLICT"):
            return d
        return "ME" if (d == "SERVER") == self.server else "PEER"

    def _apply(self, t, row):
        u = row["uuid"]
        st = self.theirs(row)
        mine = t.meta.get(u)
        if self.winner(mine, st) != "PEER":
            raise ValueError("received a Row for %s whose version does not "
                             "win over ours (LS-POLICY-4)" % u.hex())
        if st.deleted and row["values"]:
            raise ValueError("a tombstone Row with values (LS-TOMB-1)")
        # a server keeps no base but the zero one of new rows; a client's
        # base changes only when its sync succeeds
        base = mine.base if mine is not None else ZERO_VERSION
        t.add(u, row["values"], st.version, st.deleted, base)

    def answer(self, turn):
        """turn: the Received frames of the peer's turn, EndTurn excluded.
        Returns the frames (body, msg) of our turn, EndTurn excluded, and
        raises ValueError on a frame we cannot process."""
        out = []
        for r in turn:
            body, msg = r.body, r.msg
            ti = msg.get("table", 0)
            if ti >= len(self.tables):
                raise ValueError("table index %d out of range" % ti)
            t = self.tables[ti]
            if body == "rows":
                for row in msg["rows"]:
                    self._apply(t, row)
            elif body == "need":
                f = self._rows_frame(ti, msg["uuids"])
                if f:
                    out.append(f)
            elif body == "ranges":
                for rg in msg["ranges"]:
                    lo, hi = rg["lower"], rg["upper"]
                    mine = t.items_in(lo, hi, self.horizon, self.server)
                    if "fingerprint" in rg:
                        fp = rg["fingerprint"]
                        if (fp["value"] == fingerprint(
                                item_digest(u, st.version, st.deleted)
                                for u, st in mine)
                                and fp["count"] == len(mine)):
                            continue
                        out.append(("ranges", {"table": ti, "ranges": [{
                            "lower": lo, "upper": hi, "items": {"items": [
                                self.item_msg(u, st) for u, st in mine]}}]}))
                    elif "items" in rg:
                        theirs = {i["uuid"]: self.theirs(i)
                                  for i in rg["items"]["items"]}
                        mine_d = dict(mine)
                        need, give = [], []
                        for u in sorted(set(theirs) | set(mine_d)):
                            w = self.winner(mine_d.get(u), theirs.get(u))
                            if w == "PEER":
                                need.append(u)
                            elif w == "ME":
                                give.append(u)
                            elif w == "CONFLICT":
                                self.conflicts[ti] += 1
                        if need:
                            out.append(("need", {"table": ti,
                                                 "uuids": need}))
                        f = self._rows_frame(ti, give)
                        if f:
                            out.append(f)
                    else:
                        raise ValueError("Range with no summary")
            else:
                raise ValueError("unexpected %s in a turn" % body)
        return out

    def verify(self):
        states = []
        for i, t in enumerate(self.tables):
            count, fp = t.state(self.horizon)
            states.append({"count": count, "fingerprint": fp,
                           "conflicts": self.conflicts[i]})
        return {"tables": states}

    @staticmethod
    def decide(a, b):
        """LS-COMMIT-1: None on success, else "CONFLICT"/"VERIFY_FAILED"."""
        if len(a["tables"]) != len(b["tables"]):
            return "PROTOCOL_ERROR"
        for x, y in zip(a["tables"], b["tables"]):
            if x["conflicts"] + y["conflicts"]:
                return "CONFLICT"
        for x, y in zip(a["tables"], b["tables"]):
            if x["count"] != y["count"] or x["fingerprint"] != y["fingerprint"]:
                return "VERIFY_FAILED"
        return None


def quiet(frames):
    return not any(b in ("ranges", "need") for b, _ in frames)


class SyncResult:
    def __init__(self, ending, what, last=None, peer_verify=None):
        self.ending = ending      # "committed", "error", "sent_error",
        #                           "stopped", "broken"
        self.what = what
        self.last = last          # the last Received
        self.peer_verify = peer_verify

    def __repr__(self):
        return "SyncResult(%s, %s)" % (self.ending, self.what)


def read_turn(conn):
    """Reads frames up to and including EndTurn. Returns (frames, end)
    where end is the Received EndTurn, or the Received that broke the turn
    (Error, Verify, close, ...)."""
    frames = []
    while True:
        r = conn.recv()
        if r.kind == "frame" and r.body in ("ranges", "rows", "need"):
            frames.append(r)
            continue
        return frames, r


def drive(conn, recon, is_server, mutate_verify=None,
          stop_after_rows=False, send_committed=True):
    """Drives the reconciliation and commit phases, starting by reading
    the peer's turn (a client calls it after sending its first turn, a
    server after sending TablesOpened).

    mutate_verify(dict) -> dict changes our Verify before it is sent.
    stop_after_rows: in our first answering turn that carries Rows, send
      the Rows frames only, then stop (return "stopped"): the caller
      closes the stream mid-transfer.
    send_committed: a scripted server sends Committed on success (and
      Error on failure); with False it sends neither.
    Returns a SyncResult."""
    while True:
        turn, end = read_turn(conn)
        if end.kind != "frame":
            return SyncResult("broken", end.describe(), end)
        if end.body == "error":
            return SyncResult("error", end.describe(), end)
        if end.body == "verify":
            # our previous turn was quiet: the peer verifies first
            if turn:
                return SyncResult("broken", "Verify after turn frames", end)
            return _finish(conn, recon, is_server, end, mutate_verify,
                           first=False, send_committed=send_committed)
        if end.body != "end_turn":
            return SyncResult("broken", "unexpected %s" % end.describe(), end)
        peer_quiet = not any(r.body in ("ranges", "need") for r in turn)
        try:
            mine = recon.answer(turn)
        except ValueError as e:
            return SyncResult("broken", str(e), end)
        if peer_quiet:
            return _finish(conn, recon, is_server, None, mutate_verify,
                           first=True, send_committed=send_committed)
        if stop_after_rows and any(b == "rows" for b, _ in mine):
            for b, m in mine:
                if b == "rows":
                    conn.send_frame(b, m)
            return SyncResult("stopped", "stopped after Rows")
        for b, m in mine:
            conn.send_frame(b, m)
        conn.send_frame("end_turn")


def _finish(conn, recon, is_server, peer_verify_r, mutate_verify, first,
            send_committed=True):
    mine = recon.verify()
    if mutate_verify:
        mine = mutate_verify(mine)
    if first:
        conn.send_frame("verify", mine)
        r = conn.recv()
        if not (r.kind == "frame" and r.body == "verify"):
            if r.is_error():
                return SyncResult("error", r.describe(), r)
            return SyncResult("broken", "expected Verify, got %s"
                              % r.describe(), r)
        peer_verify_r = r
    else:
        conn.send_frame("verify", mine)
    peer = peer_verify_r.msg
    if is_server:
        outcome = Reconciler.decide(mine, peer)
        if outcome is None or not send_committed:
            if send_committed:
                conn.send_frame("committed")
            return SyncResult("committed" if outcome is None else
                              "decided", outcome or "success",
                              peer_verify_r, peer)
        conn.send_frame("error", {"code": pbwire.CODES[outcome],
                                  "message": "verification failed"})
        return SyncResult("sent_error", outcome, peer_verify_r, peer)
    r = conn.recv()
    if r.kind == "frame" and r.body == "committed":
        return SyncResult("committed", "Committed", r, peer)
    if r.is_error():
        return SyncResult("error", r.describe(), r, peer)
    return SyncResult("broken", "expected Committed, got %s" % r.describe(),
                      r, peer)

"""Scripted LipSync peers for the wire tests: frame I/O with timeouts and a
record of every frame, the handshake of spec 5 with HMAC proofs (5.3),
the hashes of sections 6 to 8 (row digests, item digests, fingerprints),
row versions and the decision for one UUID (8.6: lww, server-wins,
client-wins, the T0 rule of a stale client), and a minimal reconciliation
engine (the ItemList strategy of 8.5) that both a scripted client and a
scripted server drive.

The feature incremental (8.8): every change of a scripted peer's item
takes the next number of a per-table counter (TableData.seq), which is its
change position; a ScriptedClient and a ScriptedServer keep site ids,
checkpoints and tokens across sessions, and the engine sends and answers
Changes.

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

    def handshake(self, features=()):
        """The whole valid handshake; raises HandshakeFailed."""
        r = self.hello(features=features)
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

    def handshake(self, accept=()):
        """Valid server handshake up to and including reading OpenTables,
        accepting the offered features that |accept| names (in the
        client's order: .features); returns the Received OpenTables.
        Raises HandshakeFailed."""
        r = self.read_hello()
        if not (r.kind == "frame" and r.body == "client_hello"):
            raise HandshakeFailed("expected ClientHello, got %s"
                                  % r.describe(), r)
        self.features = [f for f in self.client_hello["features"]
                         if f in accept]
        self.hello(features=self.features)
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
        # Change positions (spec 8.8.1): every change of an item, local or
        # applied, takes the next number of the table's change counter;
        # a position is the counter's value, and the items changed since
        # it are those whose last change has a higher number.
        self.seq = 0
        self.changed = {}
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
        self.seq += 1
        self.changed[uuid] = self.seq

    def change(self, uuid, values=None, site=b"\x5c" * 16, deleted=False,
               clock=None):
        """A local write of this peer's database (what capture records,
        LS-CAPTURE-1): a new version (clock: a tick of this moment, or
        |clock|) of |site|; the base stays (the zero base for a new
        UUID). |values|: a dict of column values (ignored with
        deleted)."""
        if clock is None:
            top = max((st.version[0] for st in self.meta.values()),
                      default=0)
            clock = max(now_clock(), top + 1)
        old = self.meta.get(bytes(uuid))
        self.add(uuid, {} if deleted else values, (clock, site), deleted,
                 old.base if old is not None else ZERO_VERSION)

    def synced(self):
        """After a successful sync as a client: every base := its version
        (LS-POLICY-5)."""
        for st in self.meta.values():
            st.base = st.version

    def changed_since(self, position, horizon=0, server=False):
        """LS-INC-10: the UUIDs of the visible item set changed since
        |position| (a value of seq), ascending."""
        return [u for u in self.visible(horizon, server)
                if self.changed.get(u, 0) > position]

    def uuid_of(self, column, value):
        """The UUID of the live row whose |column| holds |value| (a
        Python value), or None."""
        i = [n for n, _ in self.columns].index(column)
        for u, vals in self.rows.items():
            if pbwire.value_py(vals[i]) == value:
                return u
        return None

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
    horizon: the session's tombstone horizon.

    Feature incremental (spec 8.8): |incremental| holds the indexes of the
    incremental tables and |since| our change position (a TableData.seq
    value) for each of them. The client's first turn then holds Changes
    for them (LS-INC-11); the server answers the client's Changes and
    lists its own other changed items (LS-INC-12); the client decides the
    server's (LS-INC-13). A Changes frame the rules do not allow, or a
    Ranges frame for an incremental table, raises ValueError (LS-INC-14).
    |on_commit|, on a server, returns the Committed message it sends."""

    def __init__(self, tables, server=False, policy=LWW, horizon=0,
                 incremental=(), since=None, on_commit=None):
        self.tables = tables
        self.server = server
        self.policy = policy
        self.horizon = horizon
        self.conflicts = [0] * len(tables)
        self.sent = [set() for _ in tables]
        self.incremental = set(incremental)
        self.since = dict(since or {})
        self.on_commit = on_commit
        self.received_turns = 0
        self.listed = [set() for _ in tables]   # UUIDs of the peer's Changes
        self.own_listed = [set() for _ in tables]   # and of ours

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
            if i in self.incremental:
                out += self.changes_frames(i)
                continue
            items = [self.item_msg(u, st) for u, st in
                     t.items_in(b"", b"", self.horizon, self.server)]
            out.append(("ranges", {"table": i, "ranges": [
                {"lower": b"", "upper": b"", "items": {"items": items}}]}))
        return out

    def changes_frames(self, ti, skip=()):
        """Our changed items of incremental table |ti| (LS-INC-10) but
        those in |skip|, as Changes frames of at most 4096 items; none
        when there is none."""
        t = self.tables[ti]
        uuids = [u for u in t.changed_since(self.since.get(ti, 0),
                                            self.horizon, self.server)
                 if u not in skip]
        self.own_listed[ti].update(uuids)
        items = [self.item_msg(u, t.meta[u]) for u in uuids]
        return [("changes", {"table": ti, "items": items[i:i + 4096]})
                for i in range(0, len(items), 4096)]

    def committed(self):
        """The Committed message a server sends on success."""
        return self.on_commit() if self.on_commit else {}

    def turn_is_quiet(self, turn):
        """Whether the peer's turn (Received frames, EndTurn excluded) is
        quiet: no Ranges, Need or Changes (LS-TURN-6, LS-INC-14); the
        client's first turn never is (LS-INC-11)."""
        if self.server and self.received_turns == 0:
            return False
        return not any(r.body in ("ranges", "need", "changes")
                       for r in turn)

    def _rows_frame(self, ti, uuids):
        t = self.tables[ti]
        rows = []
        for u in uuids:
            if u not in t.meta:
                raise ValueError("a Need for %s, which we do not hold "
                                 "(LS-NEED-2)" % u.hex())
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

    def _decide(self, ti, theirs, mine, out):
        """Decides each UUID of |theirs| and |mine| ({uuid: ItemState}),
        as for an ItemList (LS-RECON-8): a Need for what the peer wins,
        Rows for what we win, conflicts counted. Adds frames to |out|."""
        need, give = [], []
        for u in sorted(set(theirs) | set(mine)):
            w = self.winner(mine.get(u), theirs.get(u))
            if w == "PEER":
                need.append(u)
            elif w == "ME":
                give.append(u)
            elif w == "CONFLICT":
                self.conflicts[ti] += 1
        if need:
            out.append(("need", {"table": ti, "uuids": need}))
        f = self._rows_frame(ti, give)
        if f:
            out.append(f)

    def _changes(self, ti, msg, out):
        """A Changes frame of the peer (LS-INC-12, LS-INC-13)."""
        t = self.tables[ti]
        if ti not in self.incremental:
            raise ValueError("a Changes frame for table %d, which is not "
                             "incremental (LS-INC-14)" % ti)
        if self.received_turns != 0:
            raise ValueError("a Changes frame in a turn other than the "
                             "first two (LS-INC-14)")
        theirs = {}
        last = max(self.listed[ti], default=None)
        for i in msg["items"]:
            u = i["uuid"]
            if len(u) != 16:
                raise ValueError("a Changes item whose uuid is not 16 "
                                 "bytes (LS-ITEM-2)")
            if last is not None and u <= last:
                raise ValueError("Changes items not in strictly ascending "
                                 "UUID order (LS-INC-11, LS-INC-12)")
            if u in self.own_listed[ti]:
                raise ValueError("the server's Changes repeat a UUID of the "
                                 "client's (LS-INC-12)")
            last = u
            theirs[u] = self.theirs(i)
        self.listed[ti].update(theirs)
        visible = set(t.visible(self.horizon, self.server))
        mine = {u: t.meta[u] for u in theirs if u in visible}
        self._decide(ti, theirs, mine, out)

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
            if body == "changes":
                self._changes(ti, msg, out)
            elif body == "ranges" and ti in self.incremental:
                raise ValueError("a Ranges frame for incremental table %d "
                                 "(LS-INC-14)" % ti)
            elif body == "rows":
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
                        self._decide(ti, theirs, dict(mine), out)
                    else:
                        raise ValueError("Range with no summary")
            else:
                raise ValueError("unexpected %s in a turn" % body)
        if self.server and self.received_turns == 0:
            # LS-INC-12: our other changed items, after the decisions
            for ti in sorted(self.incremental):
                out += self.changes_frames(ti, self.listed[ti])
        self.received_turns += 1
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
    return not any(b in ("ranges", "need", "changes") for b, _ in frames)


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
        if r.kind == "frame" and r.body in ("ranges", "rows", "need",
                                            "changes"):
            frames.append(r)
            continue
        return frames, r


def drive(conn, recon, is_server, mutate_verify=None,
          stop_after_rows=False, send_committed=True, on_turn=None,
          mutate_answer=None):
    """Drives the reconciliation and commit phases, starting by reading
    the peer's turn (a client calls it after sending its first turn, a
    server after sending TablesOpened).

    mutate_verify(dict) -> dict changes our Verify before it is sent; if
      it returns None, Error CANCELLED goes instead (a dry run).
    stop_after_rows: in our first answering turn that carries Rows, send
      the Rows frames only, then stop (return "stopped"): the caller
      closes the stream mid-transfer.
    send_committed: a scripted server sends Committed on success (and
      Error on failure); with False it sends neither.
    on_turn(frames): called with the Received frames of each turn of the
      peer (EndTurn excluded) before we answer it.
    mutate_answer([(body, msg)]) -> [(body, msg)] changes each of our
      answering turns (EndTurn excluded) before it is sent.
    Returns a SyncResult."""
    while True:
        turn, end = read_turn(conn)
        if on_turn is not None and end.kind == "frame" and \
                end.body == "end_turn":
            on_turn(turn)
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
        peer_quiet = recon.turn_is_quiet(turn)
        try:
            mine = recon.answer(turn)
        except ValueError as e:
            return SyncResult("broken", str(e), end)
        if peer_quiet:
            return _finish(conn, recon, is_server, None, mutate_verify,
                           first=True, send_committed=send_committed)
        if mutate_answer is not None:
            mine = mutate_answer(mine)
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
    if mine is None:  # a dry run (LS-DRY-1): Error CANCELLED, no Verify
        conn.send_frame("error", {"code": pbwire.CODES["CANCELLED"],
                                  "message": "dry run: nothing is committed"})
        return SyncResult("cancelled", "sent Error CANCELLED", peer_verify_r)
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
                conn.send_frame("committed", recon.committed())
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


# ---- feature incremental: scripted databases across sessions (spec 8.8) ----

FEATURE = "incremental"
MAX_POSITION = 1024
DAY_MS = 86400 * 1000


def position_bytes(seq):
    """Our change position for a table (TableData.seq), as the opaque
    bytes a checkpoint carries."""
    return struct.pack(">Q", seq)


def checkpoint_ok(cp):
    """LS-INC-3: a Checkpoint dict with a 16-byte server_site and token and
    a server_position of at most 1024 bytes; anything else is no
    checkpoint."""
    return (cp is not None and len(cp.get("server_site", b"")) == 16
            and len(cp.get("token", b"")) == 16
            and len(cp.get("server_position", b"")) <= MAX_POSITION)


def check_tables_opened(opened, presented, ntables):
    """LS-INC-9, the client's checks of a TablesOpened (decoded) with the
    feature in effect; |presented|: the table indexes we presented a
    checkpoint for. None, or what is wrong."""
    if len(opened.get("server_site", b"")) != 16:
        return "TablesOpened.server_site is not 16 bytes"
    inc = opened.get("incremental", [])
    if any(b <= a for a, b in zip(inc, inc[1:])):
        return "TablesOpened.incremental is not strictly ascending"
    for i in inc:
        if i >= ntables:
            return "TablesOpened.incremental names table %d of %d" % (
                i, ntables)
        if i not in presented:
            return ("TablesOpened.incremental names table %d, for which "
                    "no checkpoint was presented" % i)
    return None


class ClientSync:
    """What one session of a ScriptedClient gave: the ServerHello and
    TablesOpened (decoded), whether the feature was in effect, the
    OpenTables and first turn we sent, the Reconciler, the SyncResult."""

    def __init__(self, **kw):
        self.server_hello = self.opened = self.open_msg = None
        self.first_turn, self.recon, self.result = [], None, None
        self.feature = False
        self.__dict__.update(kw)

    @property
    def committed(self):
        r = self.result
        return r.last.msg if r is not None and r.ending == "committed" \
            else None


class ScriptedClient:
    """A scripted client database across sessions: its tables (TableData),
    its site id, and per table the last_sync (LS-TOMB-6) and the
    checkpoint of its last session with the feature in effect (LS-INC-6):
    the server's site, token and position, and our own position (a
    TableData.seq value)."""

    def __init__(self, tables, site=None):
        self.tables = list(tables)
        self.site = site if site is not None else os.urandom(16)
        self.last_sync = {}
        self.checkpoints = {}

    def change(self, ti, uuid, values=None, deleted=False, clock=None):
        """A local write on table |ti| (TableData.change) with our site."""
        self.tables[ti].change(uuid, values, self.site, deleted, clock)

    def open_msg(self, feature, policy=LWW, present=True):
        """OpenTables: client_site and our checkpoints (unless |present|
        is False) when the feature is in effect (LS-INC-7)."""
        tables = []
        for t in self.tables:
            ts = table_schema(t)
            ts["last_sync"] = self.last_sync.get(t.name, 0)
            cp = self.checkpoints.get(t.name)
            if feature and present and cp is not None:
                ts["checkpoint"] = {k: cp[k] for k in (
                    "server_site", "token", "server_position")}
            tables.append(ts)
        msg = {"tables": tables}
        if policy:
            msg["policy"] = policy
        if feature:
            msg["client_site"] = self.site
        return msg

    def record(self, opened, committed, feature):
        """After Committed: bases and last_sync (LS-POLICY-5, LS-TOMB-6),
        and with the feature in effect the checkpoints Committed gives,
        with our positions (LS-INC-6; a malformed one is none, LS-INC-3)."""
        cps = committed.get("checkpoints", [])
        for i, t in enumerate(self.tables):
            t.synced()
            self.last_sync[t.name] = opened.get("clock", 0)
            if not feature:
                continue
            cp = cps[i] if i < len(cps) else None
            if checkpoint_ok(cp):
                self.checkpoints[t.name] = dict(
                    {k: cp.get(k, b"") for k in (
                        "server_site", "token", "server_position")},
                    own=t.seq)
            else:
                self.checkpoints.pop(t.name, None)

    def sync(self, conn, secret, policy=LWW, feature=True, present=True,
             first_turn=None, **drive_kw):
        """One whole session on |conn|: the handshake (offering the
        feature when |feature|), OpenTables, our first turn (changed by
        |first_turn|([(body, msg)]) -> [(body, msg)] if given), then
        drive(**drive_kw); records the result when the server commits.
        Returns a ClientSync; raises HandshakeFailed."""
        s = ClientSession(conn, secret)
        s.handshake(features=[FEATURE] if feature else [])
        out = ClientSync(server_hello=s.server_hello)
        out.feature = FEATURE in s.server_hello["features"]
        out.open_msg = self.open_msg(out.feature, policy, present)
        conn.send_frame("open_tables", out.open_msg)
        r = conn.recv()
        if not (r.kind == "frame" and r.body == "tables_opened"):
            out.result = SyncResult("error" if r.is_error() else "broken",
                                    r.describe(), r)
            return out
        out.opened = r.msg
        presented = {i for i, ts in enumerate(out.open_msg["tables"])
                     if "checkpoint" in ts}
        if out.feature:
            bad = check_tables_opened(r.msg, presented, len(self.tables))
            if bad:
                out.result = SyncResult("broken", bad, r)
                return out
        inc = r.msg.get("incremental", []) if out.feature else []
        out.recon = Reconciler(
            self.tables, policy=policy, horizon=r.msg.get("horizon", 0),
            incremental=inc, since={
                i: self.checkpoints[self.tables[i].name]["own"]
                for i in inc})
        out.first_turn = out.recon.first_turn()
        if first_turn is not None:
            out.first_turn = first_turn(out.first_turn)
        for b, m in out.first_turn:
            conn.send_frame(b, m)
        conn.send_frame("end_turn")
        out.result = drive(conn, out.recon, False, **drive_kw)
        if out.committed is not None:
            self.record(out.opened, out.committed, out.feature)
        return out


class ScriptedServer:
    """A scripted server database across sessions: its tables (TableData),
    its site id, and the token it holds per client site and table
    (LS-INC-4, LS-INC-5). Its change positions are TableData.seq values
    (position_bytes). It accepts the feature when a client offers it and
    |feature| is True."""

    def __init__(self, tables, site=None, feature=True,
                 retention_ms=30 * DAY_MS):
        self.tables = list(tables)
        self.site = site if site is not None else os.urandom(16)
        self.feature = feature
        self.retention_ms = retention_ms
        self.tokens = {}

    def change(self, ti, uuid, values=None, deleted=False, clock=None):
        """A local write on table |ti| (TableData.change) with our site."""
        self.tables[ti].change(uuid, values, self.site, deleted, clock)

    def accepts(self, client_site, ts, t, stale):
        """LS-INC-8: our position (a seq value) when we accept the
        checkpoint of TableSchema |ts| (a decoded dict) of table |t|, else
        None."""
        cp = ts.get("checkpoint")
        if not cp or not cp.get("token") or stale:
            return None
        pos = cp.get("server_position", b"")
        if (cp.get("server_site") != self.site or len(pos) != 8 or
                self.tokens.get((client_site, t.name)) != cp["token"]):
            return None
        seq = struct.unpack(">Q", pos)[0]
        return seq if seq <= t.seq else None

    def session(self, conn, secret):
        return ServerRun(self, conn, secret)


class ServerRun:
    """One session of a ScriptedServer: handshake(), open(), then drive()
    (or the steps by hand with .recon)."""

    def __init__(self, server, conn, secret):
        self.server, self.conn = server, conn
        self.session = ServerSession(conn, secret)
        self.feature = False
        self.open_msg = self.opened = self.recon = None
        self.tables, self.accepted, self.start_seq = [], [], []
        self.mutate_checkpoints = None
        self.checkpoints = None     # those of the Committed we sent

    def handshake(self):
        """The server handshake; returns the Received OpenTables. Raises
        HandshakeFailed."""
        r = self.session.handshake(
            accept=[FEATURE] if self.server.feature else [])
        self.feature = FEATURE in self.session.features
        self.open_msg = r.msg
        return r

    def open(self, policy=None, mutate_opened=None):
        """Answers the OpenTables read by handshake(): TablesOpened (changed
        by |mutate_opened|(dict) -> dict if given) with the checkpoints we
        accept listed as incremental. Returns None, or what is wrong with
        the OpenTables (then we have sent Error PROTOCOL_ERROR)."""
        srv, msg = self.server, self.open_msg
        client_site = msg.get("client_site", b"")
        if self.feature and len(client_site) != 16:
            self.conn.send_frame("error", {
                "code": pbwire.CODES["PROTOCOL_ERROR"],
                "message": "client_site is not 16 bytes"})
            return "OpenTables.client_site is not 16 bytes (LS-INC-7)"
        by_name = {t.name: t for t in srv.tables}
        names = [ts["name"] for ts in msg["tables"]]
        if any(n not in by_name for n in names):
            self.conn.send_frame("error", {
                "code": pbwire.CODES["TABLE_NOT_OFFERED"], "message": ""})
            return "OpenTables names a table we do not have: %r" % names
        clock = max([now_clock()] + [st.version[0] + 1 for t in srv.tables
                                     for st in t.meta.values()])
        horizon = max(now_clock() - (srv.retention_ms << 16), 0)
        self.tables = [by_name[n] for n in names]
        self.start_seq = [t.seq for t in self.tables]
        self.accepted = [
            srv.accepts(client_site, ts, t, 0 < ts.get("last_sync", 0)
                        < horizon) if self.feature else None
            for ts, t in zip(msg["tables"], self.tables)]
        inc = [i for i, a in enumerate(self.accepted) if a is not None]
        opened = {"horizon": horizon, "clock": clock}
        if self.feature:
            opened.update(server_site=srv.site, incremental=inc)
        if mutate_opened is not None:
            opened = mutate_opened(opened)
        self.opened = opened
        self.conn.send_frame("tables_opened", opened)
        pol = msg.get("policy", 0) if policy is None else policy
        self.recon = Reconciler(
            self.tables, server=True, policy=pol, horizon=horizon,
            incremental=inc, since={i: self.accepted[i] for i in inc},
            on_commit=self._committed)
        return None

    def _committed(self):
        """Committed: with the feature in effect one checkpoint per table
        (LS-INC-4); a new token when the table changed in the session or
        no checkpoint was accepted, else the one we hold (LS-INC-5)."""
        if not self.feature:
            return {}
        srv, site = self.server, self.open_msg.get("client_site", b"")
        cps = []
        for i, t in enumerate(self.tables):
            key = (site, t.name)
            if (self.accepted[i] is None or t.seq != self.start_seq[i]
                    or key not in srv.tokens):
                srv.tokens[key] = os.urandom(16)
            cps.append({"server_site": srv.site, "token": srv.tokens[key],
                        "server_position": position_bytes(t.seq)})
        if self.mutate_checkpoints is not None:
            cps = self.mutate_checkpoints(cps)
        self.checkpoints = cps
        return {"checkpoints": cps}

    def drive(self, **kw):
        return drive(self.conn, self.recon, True, **kw)

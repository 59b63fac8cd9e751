"""Unit tests of the wire plane's codec and peer hashes: pbwire reproduces
the Appendix A frames (V-FRAME-*, V-AUTH-*) of spec/lipsync.md byte for
byte, parsed from the spec itself, and decode(encode(x)) == x.

Run: python3 -m unittest discover -s conformance/tests  (from the repo root)
"""

import math
import re
import struct
import sys
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "conformance"))

from lsconf import pbwire, peers  # noqa: E402

SPEC = ROOT / "spec" / "lipsync.md"


def parse_vectors():
    """{ID: {label: bytes-or-text}} from the ``` blocks of Appendix A."""
    text = SPEC.read_text(encoding="utf-8")
    text = text[text.index("## Appendix A"):]
    out = {}
    for block in re.findall(r"```\n(.*?)```", text, re.S):
        lines = block.splitlines()
        m = re.match(r"(V-[A-Z]+-\d+)\s+(.*)", lines[0])
        if not m:
            continue
        vec = {"title": m.group(2)}
        last = None
        for line in lines[1:]:
            cm = re.match(r"^\s+([0-9a-f]+)$", line)
            if cm and last is not None:
                vec[last] += cm.group(1)
                continue
            lm = re.match(r"^(\S.*?)\s{2,}(\S.*)$", line)
            if lm:
                last = lm.group(1)
                vec[last] = lm.group(2)
        out[m.group(1)] = vec
    return out


VEC = parse_vectors()


def hx(vid, label):
    return bytes.fromhex(VEC[vid][label])


U1 = hx("V-ROW-1", "uuid")
U2 = hx("V-ROW-2", "uuid")
U3 = hx("V-ROW-3", "uuid")
U5 = hx("V-ROW-5", "uuid")


def V(**kw):
    return kw


ROW1 = [V(real=87.88), V(text="Zürich".encode()), V(integer=421878)]
ROW2 = [V(real=2194.07), V(text="東京".encode()), V(integer=14047594)]
ROW3 = [V(null=True), V(text="Genève".encode()), V(null=True)]
CITIES = [("area", "real"), ("name", "text"), ("pop", "integer")]


def frames():
    """The frames of Appendix A that do not depend on row versions, built
    from their description. (The others, whose items, rows, fingerprints
    and TablesOpened carry versions and clocks the spec picks, are checked
    by test_versioned_frames.)"""
    return {
        "V-FRAME-1": {"end_turn": {}},
        "V-FRAME-3": {"committed": {}},
        "V-FRAME-4": {"error": {"code": 4, "message": "no common version",
                                "min_version": 1, "max_version": 1}},
        "V-FRAME-7": {"ranges": {"table": 2, "ranges": [
            {"lower": U1, "upper": U3,
             "fingerprint": {"value": peers.fingerprint([]), "count": 0}}]}},
        "V-FRAME-10": {"need": {"table": 0, "uuids": [U3]}},
        "V-FRAME-12": {"open_tables": {"tables": [
            peers.table_schema(("cities", CITIES))]}},
    }


# Frames that carry versions. V-FRAME-6, 8, 9 and 13 are the spec's
# examples of Items and Rows without one (withdrawn digest fields), which a
# receiver rejects (LS-ITEM-2, LS-VERSION-6): see test_unversioned_frames.
VERSIONED = ("V-FRAME-2", "V-FRAME-5", "V-FRAME-11") + tuple(
    "V-FRAME-%d" % i for i in range(14, 23))
# Frames of the feature incremental (spec 8.8; fields and bodies 1000 and
# up), V-FRAME-23 on, when the spec has them.
FEATURE_FRAMES = tuple(sorted(
    (v for v in VEC if v.startswith("V-FRAME-")
     and int(v.rsplit("-", 1)[1]) >= 23),
    key=lambda v: int(v.rsplit("-", 1)[1])))
UNVERSIONED = ("V-FRAME-6", "V-FRAME-8", "V-FRAME-9", "V-FRAME-13")


def versions_in(x, path="frame"):
    """[(path, message)] of every Item and Row in a decoded message."""
    out = []
    if isinstance(x, dict):
        if "uuid" in x and ("values" in x or "deleted" in x):
            out.append((path, x))
        for k, v in x.items():
            out += versions_in(v, path + "." + k)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            out += versions_in(v, "%s[%d]" % (path, i))
    return out


def strip_bits(x):
    """Removes the real_bits keys the decoder adds, for comparisons."""
    if isinstance(x, dict):
        return {k: strip_bits(v) for k, v in x.items()
                if not k.endswith("_bits")}
    if isinstance(x, list):
        return [strip_bits(v) for v in x]
    return x


def normalized(msg_name, msg):
    """|msg| with every absent scalar/repeated field at its default, as the
    decoder returns it."""
    out = {}
    for number, name, typ, repeated, oneof in pbwire.SCHEMA[msg_name]:
        if name in msg:
            v = msg[name]
            if typ in pbwire.SCHEMA:
                v = ([normalized(typ, e) for e in v] if repeated
                     else normalized(typ, v))
            out[name] = v
        elif repeated:
            out[name] = []
        elif oneof is None and typ not in pbwire.SCHEMA:
            out[name] = pbwire._SCALAR_DEFAULTS[typ]
    return out


class Vectors(unittest.TestCase):
    def test_parsed(self):
        for i in range(1, 14):
            self.assertIn("V-FRAME-%d" % i, VEC)
        self.assertIn("V-AUTH-1", VEC)
        self.assertIn("V-AUTH-2", VEC)

    def test_hashes(self):
        rows = {1: (U1, ROW1), 2: (U2, ROW2), 3: (U3, ROW3), 5: (U5, [])}
        for i, (u, vals) in rows.items():
            self.assertEqual(peers.row_digest(u, vals).hex(),
                             VEC["V-ROW-%d" % i]["digest"], i)
        self.assertEqual(peers.fingerprint([]).hex(),
                         VEC["V-FP-1"]["fingerprint"])
        self.assertEqual(peers.schema_fingerprint(CITIES).hex(),
                         VEC["V-SCHEMA-1"]["fingerprint"])

    def test_item_digest(self):
        # SHA-256(uuid || u64be(clock) || site || u8(deleted))[0:16]
        import hashlib
        site = bytes(range(16))
        want = hashlib.sha256(U1 + (0x0123456789abcdef).to_bytes(8, "big")
                              + site + b"\x01").digest()[:16]
        self.assertEqual(peers.item_digest(U1, (0x0123456789abcdef, site),
                                           True), want)
        self.assertNotEqual(peers.item_digest(U1, (1, site), False),
                            peers.item_digest(U1, (1, site), True))
        # vectors of the spec's item digests, when it gives them
        for vid, v in VEC.items():
            if not vid.startswith("V-ITEM-") or not {
                    "uuid", "clock", "site", "deleted", "digest"} <= set(v):
                continue
            with self.subTest(vid):
                clock = v["clock"].split()[0]
                clock = int(clock, 16 if clock.startswith("0x") else 10)
                deleted = v["deleted"].split()[0] in ("1", "true")
                self.assertEqual(peers.item_digest(
                    hx(vid, "uuid"), (clock, hx(vid, "site")),
                    deleted).hex(), v["digest"])

    def test_decide(self):
        Z = peers.ZERO_VERSION
        a, b = (5 << 16, b"\x01" * 16), (6 << 16, b"\x00" * 16)
        i0a, i0b = (0, b"\x0a" * 16), (0, b"\x0b" * 16)
        d = peers.decide
        It = peers.ItemState
        self.assertEqual(d(None, It(a), 0), "SERVER")
        self.assertEqual(d(It(a), None, 0), "CLIENT")
        self.assertEqual(d(None, None, 0), "NONE")
        self.assertEqual(d(It(a), It(a), 0), "NONE")
        self.assertEqual(d(It(a), It(a, True), 0), "CONFLICT")
        self.assertEqual(d(It(a), It(b), 0), "SERVER")
        self.assertEqual(d(It(b), It(a), 0), "CLIENT")
        # same clock: the site decides, bytewise
        self.assertEqual(d(It((7, b"\x02" * 16)), It((7, b"\x01" * 16)), 0),
                         "CLIENT")
        self.assertEqual(d(It(i0a), It(i0b), 0), "CONFLICT")
        # server-wins / client-wins with the client's base
        self.assertEqual(d(It(b, base=Z), It(a), 1), "SERVER")
        self.assertEqual(d(It(b, base=Z), It(a), 2), "CLIENT")
        self.assertEqual(d(It(a, base=b), It(b), 1), "CLIENT")  # sc false
        self.assertEqual(d(It(b, base=b), It(a), 2), "SERVER")  # cc false
        self.assertEqual(d(It(i0a, base=Z), It(i0b), 1), "SERVER")
        # a stale client: T0 for a UUID only the client holds, base set
        t0 = peers.stale_t0(100 << 16)
        self.assertEqual(t0.version, ((100 << 16) - 1, b"\0" * 16))
        self.assertTrue(t0.deleted)
        self.assertEqual(d(It(a, base=a), t0, 0), "SERVER")

    @unittest.skipUnless("LS-VERSION-1" in SPEC.read_text(encoding="utf-8"),
                         "spec/lipsync.md predates row versions (issue 5): "
                         "its vectors carry no versions yet")
    def test_versioned_frames(self):
        """Frames whose contents depend on versions: decoding and encoding
        again gives the same bytes (the canonical encoding), every Item and
        Row carries a version with a 16-byte site, and a tombstone Row
        has no values."""
        for vid in VERSIONED:
            with self.subTest(vid):
                raw = bytes.fromhex(VEC[vid]["frame"])
                got = pbwire.decode_payload(raw[4:])
                self.assertEqual(pbwire.encode_frame(got), raw)
                for path, m in versions_in(got):
                    self.assertIn("version", m, path)
                    self.assertEqual(len(m["version"]["site"]), 16, path)
                    if m.get("deleted") and "values" in m:
                        self.assertEqual(m["values"], [], path)
        opened = pbwire.decode_payload(bytes.fromhex(
            VEC["V-FRAME-2"]["frame"])[4:])
        self.assertIn("tables_opened", opened)

    def test_unversioned_frames(self):
        """The withdrawn forms decode to Items or Rows without a version."""
        for vid in UNVERSIONED:
            with self.subTest(vid):
                got = pbwire.decode_payload(
                    bytes.fromhex(VEC[vid]["frame"])[4:])
                found = list(versions_in(got))
                self.assertTrue(found, "no Item or Row")
                self.assertTrue(all("version" not in m for _, m in found))

    def test_frames(self):
        for vid, fr in frames().items():
            with self.subTest(vid):
                want = VEC[vid]["frame"]
                self.assertEqual(pbwire.encode_frame(fr).hex(), want)
                got = pbwire.decode_payload(bytes.fromhex(want)[4:])
                body = next(iter(fr))
                self.assertEqual(
                    strip_bits(got),
                    {body: normalized(pbwire._BODY_BY_NAME[body][2],
                                      fr[body])})

    def test_feature_frames(self):
        """The frames of the feature incremental: decoding and encoding
        again gives the same bytes; the bodies and fields with 2-byte keys
        decode to what their titles name."""
        if not FEATURE_FRAMES:
            self.skipTest("spec/lipsync.md has no frames of the feature "
                          "incremental (V-FRAME-23 on)")
        seen = set()
        for vid in FEATURE_FRAMES:
            with self.subTest(vid):
                raw = bytes.fromhex(VEC[vid]["frame"])
                got = pbwire.decode_payload(raw[4:])
                self.assertNotIn("_unknown", got)
                self.assertEqual(pbwire.encode_frame(got), raw)
                body, m = pbwire.body_of(got)
                self.assertIsNotNone(body)
                title = VEC[vid]["title"]
                if body == "changes":
                    self.assertTrue(title.startswith("Changes{"))
                    for it in m["items"]:
                        self.assertEqual(len(it["uuid"]), 16)
                        self.assertEqual(len(it["version"]["site"]), 16)
                elif body == "open_tables" and "client_site" in title:
                    self.assertEqual(len(m["client_site"]), 16)
                    cp = m["tables"][0].get("checkpoint")
                    self.assertEqual(cp is not None, "checkpoint:" in title)
                    if cp is not None:
                        self.assertTrue(peers.checkpoint_ok(cp))
                elif body == "tables_opened":
                    self.assertEqual(len(m["server_site"]), 16)
                    want = re.search(r"incremental: \[([0-9, ]*)\]", title)
                    self.assertEqual(m["incremental"], [
                        int(x) for x in want.group(1).split(",")]
                        if want else [])
                elif body == "committed":
                    self.assertTrue(m["checkpoints"])
                    for cp in m["checkpoints"]:
                        self.assertTrue(peers.checkpoint_ok(cp))
                elif body == "error" and "TRY_AGAIN" in title:
                    self.assertEqual(m["code"], 16)
                    self.assertIn("TRY_AGAIN", pbwire.render(got))
                seen.add(body)
        self.assertTrue({"changes", "open_tables", "tables_opened",
                         "committed"} <= seen, seen)

    def test_auth(self):
        for vid, feats_c, feats_s, max_v in (
                ("V-AUTH-1", [], [], 1),
                ("V-AUTH-2", ["x-example-one", "x-example-two"],
                 ["x-example-two"], 3),
                ("V-AUTH-3", ["incremental"], ["incremental"], 1),
                ("V-AUTH-4", ["incremental"], ["incremental"], 1)):
            if vid not in VEC:
                continue
            with self.subTest(vid):
                v = VEC[vid]
                ch = pbwire.frame("client_hello", {
                    "min_version": 1, "max_version": max_v,
                    "features": feats_c, "nonce": hx(vid, "CN")})
                sh = pbwire.frame("server_hello", {
                    "version": 1, "features": feats_s,
                    "nonce": hx(vid, "SN")})
                self.assertEqual(ch.hex(), v["CH"])
                self.assertEqual(sh.hex(), v["SH"])
                th = peers.transcript_hash(ch, sh)
                self.assertEqual(th.hex(), v["TH"])
                self.assertEqual(peers.CLIENT_LABEL.hex(), v["client label"])
                self.assertEqual(peers.SERVER_LABEL.hex(), v["server label"])
                k = hx(vid, "K")
                cm = peers.client_mac(k, th)
                sm = peers.server_mac(k, th)
                self.assertEqual(cm.hex(), v["client mac"])
                self.assertEqual(sm.hex(), v["server mac"])
                self.assertEqual(pbwire.frame("client_auth", {"mac": cm}).hex(),
                                 v["client_auth frame"])
                self.assertEqual(pbwire.frame("server_auth", {"mac": sm}).hex(),
                                 v["server_auth frame"])
                d = pbwire.decode_payload(ch[4:])["client_hello"]
                self.assertEqual(d["features"], feats_c)
                self.assertEqual(d["max_version"], max_v)


class Decoder(unittest.TestCase):
    def test_bad_vectors(self):
        self.assertEqual(pbwire.body_of(pbwire.decode_payload(b"")),
                         (None, None))
        f = pbwire.decode_payload(bytes.fromhex("6a00"))
        self.assertEqual(pbwire.body_of(f), (None, None))
        self.assertEqual(f["_unknown"], [13])
        for bad in ("0a", "0a05", "0b", "08ffffffffffffffffffff01", "00"):
            with self.assertRaises(pbwire.DecodeError, msg=bad):
                pbwire.decode_payload(bytes.fromhex(bad))

    def test_render(self):
        s = pbwire.render_bytes(bytes.fromhex(VEC["V-FRAME-4"]["frame"]))
        self.assertEqual(s, 'Error{code: 4 (VERSION_MISMATCH), message: '
                            '"no common version", min_version: 1, '
                            'max_version: 1}')
        self.assertIn("MAX_FRAME", pbwire.render_bytes(b"GET / HT"))
        self.assertIn("truncated", pbwire.render_bytes(b"\0\0\0\x05R"))

    def test_last_wins_and_unknown(self):
        # two error bodies: the last wins; an unknown varint field skipped
        p = (pbwire.encode_payload({"error": {"code": 1}})
             + pbwire.encode_payload({"error": {"code": 7}})
             + bytes.fromhex("f80301"))
        f = pbwire.decode_payload(p)
        self.assertEqual(f["error"]["code"], 7)
        # oneof: a later body replaces an earlier one
        p = (pbwire.encode_payload({"end_turn": {}})
             + pbwire.encode_payload({"committed": {}}))
        self.assertEqual(pbwire.body_of(pbwire.decode_payload(p))[0],
                         "committed")

    def test_message_occurrences_merge(self):
        # the example of LS-FRAME-6: two client_hello bodies merge
        p = (pbwire.encode_payload({"client_hello": {
            "min_version": 1, "max_version": 1}})
             + pbwire.encode_payload({"client_hello": {"nonce": b"n" * 32,
                                                       "features": ["a"]}})
             + pbwire.encode_payload({"client_hello": {"features": ["b"]}}))
        h = pbwire.decode_payload(p)["client_hello"]
        self.assertEqual((h["min_version"], h["max_version"], h["nonce"],
                          h["features"]), (1, 1, b"n" * 32, ["a", "b"]))
        # an overwritten body must still decode (LS-FRAME-7)
        bad = bytes.fromhex("12020a05") + pbwire.encode_payload(
            {"end_turn": {}})
        with self.assertRaises(pbwire.DecodeError):
            pbwire.decode_payload(bad)

    def test_real_bits(self):
        nan = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000001))[0]
        enc = pbwire.encode("Value", {"real": nan,
                                      "real_bits": 0xFFF8000000000001})
        self.assertEqual(enc.hex(), "19010000000000f8ff")
        d = pbwire.decode("Value", enc)
        self.assertTrue(math.isnan(d["real"]))
        self.assertEqual(d["real_bits"], 0xFFF8000000000001)


class RoundTrip(unittest.TestCase):
    SAMPLES = [
        {"client_hello": {"min_version": 1, "max_version": 3,
                          "features": ["x-a", "é"], "nonce": b"\x01" * 32}},
        {"server_hello": {"version": 1, "features": [], "nonce": b"\x02" * 32}},
        {"client_auth": {"mac": b"\x03" * 32}},
        {"server_auth": {"mac": b""}},
        {"open_tables": {"tables": [
            {"name": "t", "columns": [{"name": "a", "type": "blob"}],
             "fingerprint": b"\x04" * 32},
            {"name": "ü", "columns": [], "fingerprint": b""}]}},
        {"open_tables": {"policy": 2, "tables": [
            {"name": "t", "columns": [], "fingerprint": b"\x04" * 32,
             "last_sync": 2 ** 64 - 1}]}},
        {"tables_opened": {}},
        {"tables_opened": {"horizon": 1 << 40, "clock": (1 << 56) + 3}},
        {"ranges": {"table": 0, "ranges": [
            {"lower": b"", "upper": b"", "items": {"items": [
                {"uuid": b"\x08" * 16,
                 "version": {"clock": 0, "site": b"\x09" * 16}},
                {"uuid": b"\x09" * 16, "deleted": True,
                 "version": {"clock": 5, "site": b"\x0a" * 16},
                 "base_version": {"clock": 0, "site": b"\0" * 16}},
                {"uuid": b"\x0a" * 16}]}}]}},
        {"rows": {"table": 0, "rows": [
            {"uuid": b"\x0b" * 16, "values": [], "deleted": True,
             "version": {"clock": 2 ** 64 - 1, "site": b"\x0c" * 16}},
            {"uuid": b"\x0c" * 16, "values": [{"integer": 1}],
             "version": {"site": b"\x0d" * 16},
             "base_version": {"clock": 1, "site": b""}}]}},
        {"ranges": {"table": 7, "ranges": [
            {"lower": b"", "upper": b"\xff" * 16,
             "fingerprint": {"value": b"\x05" * 16, "count": 2 ** 64 - 1}},
            {"lower": b"\x00" * 16, "upper": b"",
             "items": {"items": []}}]}},
        {"rows": {"table": 4294967295, "rows": [
            {"uuid": b"\x06" * 16, "values": [
                {"null": True}, {"integer": -(2 ** 63)},
                {"integer": 2 ** 63 - 1}, {"integer": 0}, {"real": 0.0},
                {"real": float("inf")}, {"text": b"a\0b"}, {"blob": b""}]},
            {"uuid": b"", "values": []}]}},
        {"need": {"table": 0, "uuids": [b"\x07" * 16, b""]}},
        {"end_turn": {}},
        {"verify": {"tables": [{"count": 0, "fingerprint": b"",
                                "conflicts": 3}]}},
        {"committed": {}},
        {"error": {"code": 15, "message": "x\ny", "min_version": 0,
                   "max_version": 9}},
        # feature incremental (spec 8.8): fields and a body numbered 1000
        # and up
        {"open_tables": {"client_site": b"\xc0" * 16, "tables": [
            {"name": "t", "columns": [], "fingerprint": b"\x04" * 32,
             "last_sync": 7, "checkpoint": {
                 "server_site": b"\xe0" * 16, "token": b"\xd0" * 16,
                 "server_position": b"\x00" * 1024}},
            {"name": "u", "columns": [], "fingerprint": b"",
             "checkpoint": {}}]}},
        {"tables_opened": {"horizon": 1, "clock": 2,
                           "server_site": b"\xe0" * 16,
                           "incremental": [0, 3, 200, 4294967295]}},
        {"tables_opened": {"server_site": b"\xe0" * 16,
                           "incremental": []}},
        {"changes": {"table": 2, "items": [
            {"uuid": b"\x01" * 16, "deleted": True,
             "version": {"clock": 9, "site": b"\x02" * 16},
             "base_version": {}},
            {"uuid": b"\x03" * 16,
             "version": {"clock": 2 ** 64 - 1, "site": b"\x04" * 16}}]}},
        {"changes": {}},
        {"committed": {"checkpoints": [
            {"server_site": b"\xe0" * 16, "token": b"\xd0" * 16,
             "server_position": b"\x07"}, {}]}},
        {"error": {"code": 16, "message": "table t: row changed by "
                   "another writer"}},
    ]

    def test_feature_keys(self):
        """Field 1000 of wire type 2 has the 2-byte key c2 3e; the packed
        TablesOpened.incremental (1001) ca 3e; a receiver accepts it
        unpacked (c8 3e, one varint each), as proto3 wants."""
        self.assertEqual(pbwire.encode_frame({"changes": {}}).hex(),
                         "00000003c23e00")
        packed = pbwire.encode("TablesOpened", {"incremental": [0, 1, 300]})
        self.assertEqual(packed.hex(), "ca3e040001ac02")
        unpacked = pbwire.encode("TablesOpened", {
            "incremental": [0, 1, 300], "_unpacked": True})
        self.assertEqual(unpacked.hex(), "c83e00c83e01c83eac02")
        mixed = unpacked + packed
        self.assertEqual(pbwire.decode("TablesOpened", mixed)["incremental"],
                         [0, 1, 300, 0, 1, 300])
        self.assertEqual(pbwire.render({"committed": pbwire.decode(
            "Committed", pbwire.encode("Committed", {"checkpoints": [
                {"token": b"\x01"}]}))}),
            "Committed{checkpoints: [{token: 01}]}")
        self.assertEqual(pbwire.ERROR_CODES[16], "TRY_AGAIN")

    def test_roundtrip(self):
        for x in self.SAMPLES:
            with self.subTest(next(iter(x))):
                raw = pbwire.encode_frame(x)
                self.assertEqual(struct.unpack(">I", raw[:4])[0],
                                 len(raw) - 4)
                got = strip_bits(pbwire.decode_payload(raw[4:]))
                body = next(iter(x))
                self.assertEqual(got, {body: normalized(
                    pbwire._BODY_BY_NAME[body][2], x[body])})
                self.assertEqual(pbwire.encode_frame(got), raw)


class ScriptedPeers(unittest.TestCase):
    """The scripted client and server of the wire tests reconcile with
    each other: versions decide, tombstones travel, Verify agrees."""

    def sync(self, client, server, policy=peers.LWW):
        import socket
        import threading
        a, b = socket.socketpair()
        ca, cb = peers.Conn(a, 5), peers.Conn(b, 5)
        rc = peers.Reconciler([client], policy=policy)
        rs = peers.Reconciler([server], server=True, policy=policy)
        out = {}
        th = threading.Thread(target=lambda: out.update(
            s=peers.drive(cb, rs, True)))
        th.start()
        for body, m in rc.first_turn():
            ca.send_frame(body, m)
        ca.send_frame("end_turn")
        out["c"] = peers.drive(ca, rc, False)
        th.join(5)
        ca.close(), cb.close()
        return out["c"], out["s"]

    def test_versions_decide(self):
        cols = [("v", "text")]
        u = [bytes([i]) * 16 for i in range(8)]
        site_c, site_s = b"\xcc" * 16, b"\x55" * 16
        old = (1 << 16, site_s)
        client = peers.TableData("t", cols)
        server = peers.TableData("t", cols)
        for t in (client, server):
            t.add(u[1], {"v": "same"})             # identical initial rows
        client.add(u[0], {"v": "client only"})
        server.add(u[2], {"v": "server only"})
        # u3: both had it at `old`; the client updated it later
        client.add(u[3], {"v": "client edit"}, (5 << 16, site_c), base=old)
        server.add(u[3], {"v": "before"}, old)
        # u4: the server deleted it later; the client's copy is clean
        client.add(u[4], {"v": "before"}, old, base=old)
        server.add(u[4], None, (6 << 16, site_s), deleted=True)
        # u5: the client deleted it later than the server's update
        client.add(u[5], None, (9 << 16, site_c), deleted=True, base=old)
        server.add(u[5], {"v": "server edit"}, (7 << 16, site_s))
        c, s = self.sync(client, server)
        self.assertEqual((c.ending, s.ending), ("committed", "committed"),
                         (c.what, s.what))
        for t in (client, server):
            self.assertEqual(
                {k: pbwire.value_py(v[0]) for k, v in t.rows.items()},
                {u[0]: "client only", u[1]: "same", u[2]: "server only",
                 u[3]: "client edit"})
            self.assertTrue(t.meta[u[4]].deleted and t.meta[u[5]].deleted)
        self.assertEqual(client.state(), server.state())

    def test_initial_conflict_and_policies(self):
        cols = [("v", "text")]
        u = b"\x01" * 16
        for policy, want in ((peers.LWW, None),
                             (peers.SERVER_WINS, "server"),
                             (peers.CLIENT_WINS, "client")):
            with self.subTest(policy):
                client = peers.TableData("t", cols, [(u, {"v": "client"})])
                server = peers.TableData("t", cols, [(u, {"v": "server"})])
                c, s = self.sync(client, server, policy)
                if want is None:
                    self.assertEqual(s.ending, "sent_error")
                    self.assertEqual(s.what, "CONFLICT")
                    continue
                self.assertEqual(c.ending, "committed", c.what)
                for t in (client, server):
                    self.assertEqual(pbwire.value_py(t.rows[u][0]), want)

    def test_losing_row_refused(self):
        cols = [("v", "text")]
        u = b"\x01" * 16
        server = peers.TableData("t", cols)
        server.add(u, {"v": "new"}, (9 << 16, b"\x01" * 16))
        r = peers.Reconciler([server], server=True)
        row = {"uuid": u, "values": [pbwire.value_msg("old")],
               "version": {"clock": 1 << 16, "site": b"\x01" * 16}}

        class Rx:
            body, msg = "rows", {"table": 0, "rows": [row]}
        with self.assertRaises(ValueError):
            r.answer([Rx()])
        row["version"]["clock"] = 10 << 16
        r.answer([Rx()])
        self.assertEqual(pbwire.value_py(server.rows[u][0]), "old")
        row["deleted"] = True
        row["version"]["clock"] = 11 << 16
        with self.assertRaises(ValueError):       # tombstone with values
            r.answer([Rx()])


if __name__ == "__main__":
    unittest.main()

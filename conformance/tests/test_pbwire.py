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
    d2 = peers.row_digest(U2, ROW2)
    d3 = peers.row_digest(U3, ROW3)
    fp3 = peers.fingerprint([peers.row_digest(U1, ROW1), d2])
    fp4 = peers.fingerprint([peers.row_digest(U1, ROW1), d2, d3])
    return {
        "V-FRAME-1": {"end_turn": {}},
        "V-FRAME-2": {"tables_opened": {}},
        "V-FRAME-3": {"committed": {}},
        "V-FRAME-4": {"error": {"code": 4, "message": "no common version",
                                "min_version": 1, "max_version": 1}},
        "V-FRAME-5": {"ranges": {"table": 0, "ranges": [
            {"lower": b"", "upper": b"",
             "fingerprint": {"value": fp3, "count": 2}}]}},
        "V-FRAME-6": {"ranges": {"table": 0, "ranges": [
            {"lower": b"", "upper": b"", "items": {"items": [
                {"uuid": U2, "digest": d2}, {"uuid": U3, "digest": d3}]}}]}},
        "V-FRAME-7": {"ranges": {"table": 2, "ranges": [
            {"lower": U1, "upper": U3,
             "fingerprint": {"value": peers.fingerprint([]), "count": 0}}]}},
        "V-FRAME-8": {"rows": {"table": 0, "rows": [
            {"uuid": U1, "values": ROW1}]}},
        "V-FRAME-9": {"rows": {"table": 1, "rows": [{"uuid": U5, "values": [
            V(null=True), V(integer=0), V(real=-0.0), V(text=b""),
            V(blob=b"\x00\xff")]}]}},
        "V-FRAME-10": {"need": {"table": 0, "uuids": [U3]}},
        "V-FRAME-11": {"verify": {"tables": [
            {"count": 3, "fingerprint": fp4, "conflicts": 0}]}},
        "V-FRAME-12": {"open_tables": {"tables": [
            peers.table_schema(("cities", CITIES))]}},
        "V-FRAME-13": {"rows": {"table": 0, "rows": [
            {"uuid": U3, "values": ROW3}]}},
    }


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
        elif oneof is None:
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

    def test_auth(self):
        for vid, feats_c, feats_s, max_v in (
                ("V-AUTH-1", [], [], 1),
                ("V-AUTH-2", ["x-example-one", "x-example-two"],
                 ["x-example-two"], 3)):
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
        {"tables_opened": {}},
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
    ]

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


if __name__ == "__main__":
    unittest.main()

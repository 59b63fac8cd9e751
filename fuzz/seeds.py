#!/usr/bin/env python3
"""Writes the seed corpora of fuzz_values, fuzz_sqlite_types and
fuzz_session_pair (fuzz/README.md).

The first two come from the spec's test vectors (Appendix A.4, V-TYPE-*,
and A.9, V-FORM-*), each in the input format of its harness, plus a few
values of each kind; the third is configurations and operations on the
frames (fuzz_session_pair.c). The seeds of fuzz_frame and
fuzz_server_preauth are recorded sessions: build/fuzz/seeds writes them.

Usage: seeds.py SPEC CORPUS_DIR (spec/lipsync.md fuzz/corpus)
"""
import os
import re
import struct
import sys

# The selectors and column kinds of fuzz_values.c.
ROW, UTF8, DECIMAL, DATE, STAMP, JSON, UUID, PGVALUE, DOUBLE = range(9)
PG_KINDS = ["int2", "int4", "int8", "float4", "float8", "numeric", "bool",
            "text", "varchar", "bpchar", "name", "bytea", "date",
            "timestamp", "timestamptz", "json", "jsonb", "uuid"]


def value(kind, v=None):
    """A value as fuzz_values.c reads it (read_value)."""
    if kind == "null":
        return b"\x00"
    if kind == "integer":
        return b"\x01" + struct.pack(">q", v)
    if kind == "real":
        return b"\x02" + struct.pack(">d", v)
    data = v.encode() if isinstance(v, str) else v
    return (b"\x03" if kind == "text" else b"\x04") + bytes([len(data)]) + data


def form_seed(ctype, kind, text):
    """A V-FORM vector as the input of fuzz_values."""
    if kind == "TEXT":
        data = text.encode()
        if ctype == "decimal":
            return bytes([DECIMAL, 0]) + data
        if ctype == "date":
            return bytes([DATE]) + data
        if ctype in ("timestamp", "timestamptz"):
            return bytes([STAMP, ctype == "timestamptz"]) + data
        if ctype in ("json", "jsonb"):
            return bytes([JSON, ctype == "jsonb"]) + data
        if ctype == "uuid":
            return bytes([UUID]) + data
    pg = {"boolean": "bool", "decimal": "numeric", "date": "date",
          "timestamp": "timestamp", "timestamptz": "timestamptz",
          "json": "json", "jsonb": "jsonb", "uuid": "uuid"}[ctype]
    head = bytes([PGVALUE, PG_KINDS.index(pg), 64, 0])
    if kind == "INTEGER":
        return head + value("integer", int(text))
    if kind == "REAL":
        return head + value("real", float(text))
    if kind == "BLOB":
        return head + value("blob", bytes.fromhex(text))
    if kind == "NULL":
        return head + value("null")
    return head + value("text", text)


def vectors(spec):
    """(id, fields) of every row of the spec's vector tables."""
    for line in open(spec, encoding="utf-8"):
        m = re.match(r"\| (V-(?:TYPE|FORM)-\d+) \|(.*)\|\s*$", line)
        if m:
            yield m.group(1), [f.strip() for f in m.group(2).split(" | ")]


def unquote(cell):
    """The text of a cell written `...` (`` for the empty text)."""
    if cell == "``":
        return ""
    m = re.fullmatch(r"`(.*)`", cell)
    return m.group(1) if m else cell


def extra_values():
    yield "row-kinds", bytes([ROW]) + bytes(range(16)) + bytes(24) + (
        value("null") + value("integer", -2**63) + value("real", -0.0) +
        value("real", float("nan")) + value("text", "é\x00") +
        value("blob", b"\xff\x00") + b"\x05")
    yield "row-empty", bytes([ROW]) + bytes(40)
    yield "utf8-mixed", bytes([UTF8]) + "aé東😀".encode() + b"\xed\xa0\x80"
    yield "utf8-overlong", bytes([UTF8]) + b"\xc0\xaf\xe0\x80\xaf"
    yield "decimal-numeric-10-2", bytes([DECIMAL, 2, 10, 2]) + b"12.50"
    yield "decimal-numeric-3-neg", bytes([DECIMAL, 2, 3, 0xFE]) + b"1200"
    yield "stamp-typmod-3", bytes([STAMP, 1 | 4 << 1]) + b"2024-01-02 03:04:05.123"
    yield "double-min", bytes([DOUBLE]) + struct.pack(">d", 5e-324)
    yield "double-third", bytes([DOUBLE]) + struct.pack(">d", 1 / 3)
    yield "double-neg-zero", bytes([DOUBLE]) + struct.pack(">d", -0.0)
    for i, kind in enumerate(PG_KINDS):
        yield "pgvalue-" + kind, bytes([PGVALUE, i, 40, 1, 0, 14]) + (
            value("text", "a\tb\\c") + b"\x00\x01\x00\x00\x00\x00\x00\x2a")
    yield "pgvalue-varchar-too-long", bytes([PGVALUE, 8, 40, 1, 0, 7]) + value(
        "text", "abcd")
    yield "pgvalue-blob", bytes([PGVALUE, 11, 8, 0]) + value("blob", b"\n\\")


def session_pair():
    # Configurations (two bytes, fuzz_session_pair.c read_config) with no
    # operation: every frame passes.
    for a, b, name in [(0x00, 0x00, "plain"), (0x01, 0x01, "simple-full"),
                       (0x06, 0x02, "split2-server-wins-reversed"),
                       (0x0B, 0x04, "split8-client-wins-all"),
                       (0x10, 0x00, "client-plain"),
                       (0x20, 0x00, "server-plain"),
                       (0x40, 0x00, "month"), (0x83, 0x00, "recent-split8"),
                       (0xC0, 0x00, "keep-none")]:
        yield "config-" + name, bytes([a, b])
    # One operation on one frame after the handshake, the rest passing.
    ops = {"flip": [3, 0, 9, 0x40], "truncate": [4, 0, 3],
           "truncate-keep-length": [12, 0, 3], "drop": [5], "dup": [6],
           "swap": [7]}
    for name, op in ops.items():
        for at in (0, 2, 5):
            yield "%s-at-%d" % (name, at), bytes([0, 0] + [0] * at + op)
    yield "flip-many", bytes([0x02, 0x00, 0, 27, 0, 1, 0xFF, 0, 2, 0x80,
                              0, 3, 1, 0, 4, 2])


def main():
    spec, out = sys.argv[1], sys.argv[2]
    files = {}
    for vid, f in vectors(spec):
        name = vid.lower()
        if vid.startswith("V-TYPE"):
            files[("fuzz_sqlite_types", name)] = unquote(f[0]).strip(
                '"').encode()
        elif f[1] in ("TEXT", "INTEGER", "REAL", "BLOB", "NULL"):
            files[("fuzz_values", name)] = form_seed(
                unquote(f[0]), f[1], unquote(f[2]))
    for name, data in extra_values():
        files[("fuzz_values", name)] = data
    for name, data in session_pair():
        files[("fuzz_session_pair", name)] = data
    for (harness, name), data in sorted(files.items()):
        os.makedirs(os.path.join(out, harness), exist_ok=True)
        with open(os.path.join(out, harness, name), "wb") as f:
            f.write(data)
    print("%d seed files written under %s" % (len(files), out))


if __name__ == "__main__":
    main()

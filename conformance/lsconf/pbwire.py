"""A minimal protobuf codec for the LipSync Frame messages (proto/lipsync.proto).

Standard library only, written from the schema and spec section 4.

Messages are plain dicts. A Frame is a dict with at most one key, the name
of its body ("client_hello", "error", ...), whose value is the body
message's dict. encode_frame() returns the whole frame with its 4-byte
length prefix; decode_frame() parses the payload (without the prefix).

Encoding follows proto3: fields in number order, scalars equal to their
default are omitted, repeated fields write every element (repeated
unsigned integers packed into one field, unless the message dict holds
"_unpacked": True), and oneof
members (the Frame body, Range.summary, Value.kind) are always written,
even when empty or zero (LS-FRAME-5).

Decoding is robust: it never raises anything but DecodeError. Unknown
fields are skipped (LS-FRAME-6); a known field of the wrong wire type is
treated as unknown (LS-FRAME-8 allows it); the last occurrence of a
non-repeated scalar field wins, and the occurrences of a non-repeated
message field (a oneof member too) merge, as decoding their bytes one
after the other does (LS-FRAME-6). Decoded messages hold every scalar field (default
when absent), every repeated field (a list), and a message field (such as
Item.version) or a oneof member only when it was present. A REAL value decodes as a float; its exact bit pattern is
kept in the "real_bits" key next to it.
"""

import struct

MAX_FRAME = 16 * 1024 * 1024
VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5

ERROR_CODES = {
    1: "PROTOCOL_ERROR", 2: "FRAME_TOO_LARGE", 3: "UNEXPECTED_MESSAGE",
    4: "VERSION_MISMATCH", 5: "AUTH_FAILED", 6: "UNKNOWN_TABLE",
    7: "TABLE_NOT_OFFERED", 8: "SCHEMA_MISMATCH", 9: "CONFLICT",
    10: "VERIFY_FAILED", 11: "STORAGE_ERROR", 12: "TIMEOUT",
    13: "INVALID_VALUE", 14: "SHUTTING_DOWN", 15: "INTERNAL_ERROR",
    16: "TRY_AGAIN", 17: "RESOURCE_LIMIT", 18: "CANCELLED",
}
CODES = {name: code for code, name in ERROR_CODES.items()}
POLICIES = {0: "LWW", 1: "SERVER_WINS", 2: "CLIENT_WINS"}

# message name -> list of (number, field name, type, repeated, oneof)
# type: "uint32", "uint64", "sint64", "bool", "double", "bytes", "string",
# or the name of a message.
SCHEMA = {
    "Frame": [
        (1, "client_hello", "ClientHello", False, "body"),
        (2, "server_hello", "ServerHello", False, "body"),
        (3, "client_auth", "AuthProof", False, "body"),
        (4, "server_auth", "AuthProof", False, "body"),
        (5, "open_tables", "OpenTables", False, "body"),
        (6, "tables_opened", "TablesOpened", False, "body"),
        (7, "ranges", "Ranges", False, "body"),
        (8, "rows", "Rows", False, "body"),
        (9, "need", "Need", False, "body"),
        (10, "end_turn", "EndTurn", False, "body"),
        (11, "verify", "Verify", False, "body"),
        (12, "committed", "Committed", False, "body"),
        (15, "error", "Error", False, "body"),
        # feature "incremental" (spec 8.8)
        (1000, "changes", "Changes", False, "body"),
    ],
    "ClientHello": [
        (1, "min_version", "uint32", False, None),
        (2, "max_version", "uint32", False, None),
        (3, "features", "string", True, None),
        (4, "nonce", "bytes", False, None),
    ],
    "ServerHello": [
        (1, "version", "uint32", False, None),
        (2, "features", "string", True, None),
        (3, "nonce", "bytes", False, None),
    ],
    "AuthProof": [(1, "mac", "bytes", False, None)],
    "Column": [
        (1, "name", "string", False, None),
        (2, "type", "string", False, None),
    ],
    "TableSchema": [
        (1, "name", "string", False, None),
        (2, "columns", "Column", True, None),
        (3, "fingerprint", "bytes", False, None),
        (4, "last_sync", "uint64", False, None),
        (1000, "checkpoint", "Checkpoint", False, None),
    ],
    # policy is the enum Policy (LWW 0, SERVER_WINS 1, CLIENT_WINS 2),
    # encoded as a varint like a uint32
    "OpenTables": [
        (1, "tables", "TableSchema", True, None),
        (2, "policy", "uint32", False, None),
        (1000, "client_site", "bytes", False, None),
    ],
    "TablesOpened": [
        (1, "horizon", "uint64", False, None),
        (2, "clock", "uint64", False, None),
        (1000, "server_site", "bytes", False, None),
        (1001, "incremental", "uint32", True, None),   # packed
    ],
    "Checkpoint": [
        (1, "server_site", "bytes", False, None),
        (2, "token", "bytes", False, None),
        (3, "server_position", "bytes", False, None),
    ],
    "Changes": [
        (1, "table", "uint32", False, None),
        (2, "items", "Item", True, None),
    ],
    "Version": [
        (1, "clock", "uint64", False, None),
        (2, "site", "bytes", False, None),
    ],
    "Range": [
        (1, "lower", "bytes", False, None),
        (2, "upper", "bytes", False, None),
        (3, "fingerprint", "Fingerprint", False, "summary"),
        (4, "items", "ItemList", False, "summary"),
    ],
    "Fingerprint": [
        (1, "value", "bytes", False, None),
        (2, "count", "uint64", False, None),
    ],
    "ItemList": [(1, "items", "Item", True, None)],
    "Item": [
        (1, "uuid", "bytes", False, None),
        # 2: the withdrawn "digest"
        (3, "version", "Version", False, None),
        (4, "deleted", "bool", False, None),
        (5, "base_version", "Version", False, None),
    ],
    "Ranges": [
        (1, "table", "uint32", False, None),
        (2, "ranges", "Range", True, None),
    ],
    "Value": [
        (1, "null", "bool", False, "kind"),
        (2, "integer", "sint64", False, "kind"),
        (3, "real", "double", False, "kind"),
        (4, "text", "bytes", False, "kind"),
        (5, "blob", "bytes", False, "kind"),
    ],
    "Row": [
        (1, "uuid", "bytes", False, None),
        (2, "values", "Value", True, None),
        (3, "version", "Version", False, None),
        (4, "deleted", "bool", False, None),
        (5, "base_version", "Version", False, None),
    ],
    "Rows": [
        (1, "table", "uint32", False, None),
        (2, "rows", "Row", True, None),
    ],
    "Need": [
        (1, "table", "uint32", False, None),
        (2, "uuids", "bytes", True, None),
    ],
    "EndTurn": [],
    "TableState": [
        (1, "count", "uint64", False, None),
        (2, "fingerprint", "bytes", False, None),
        (3, "conflicts", "uint64", False, None),
    ],
    "Verify": [(1, "tables", "TableState", True, None)],
    "Committed": [(1000, "checkpoints", "Checkpoint", True, None)],
    "Error": [
        (1, "code", "uint32", False, None),
        (2, "message", "string", False, None),
        (3, "min_version", "uint32", False, None),
        (4, "max_version", "uint32", False, None),
    ],
}

_SCALAR_DEFAULTS = {"uint32": 0, "uint64": 0, "sint64": 0, "bool": False,
                    "double": 0.0, "bytes": b"", "string": ""}
_WIRE = {"uint32": VARINT, "uint64": VARINT, "sint64": VARINT,
         "bool": VARINT, "double": I64, "bytes": LEN, "string": LEN}
_BODY_BY_NAME = {f[1]: f for f in SCHEMA["Frame"]}


class DecodeError(ValueError):
    pass


# ---- encoding ---------------------------------------------------------------

def varint(n):
    if n < 0:
        n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag(n):
    return ((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF


def unzigzag(n):
    return (n >> 1) ^ -(n & 1)


def key(number, wire_type):
    return varint((number << 3) | wire_type)


def _scalar(typ, v, number, value_dict=None, name=None):
    if typ in ("uint32", "uint64"):
        return key(number, VARINT) + varint(int(v))
    if typ == "sint64":
        return key(number, VARINT) + varint(zigzag(int(v)))
    if typ == "bool":
        return key(number, VARINT) + varint(1 if v else 0)
    if typ == "double":
        bits = None
        if value_dict is not None:
            bits = value_dict.get(name + "_bits")
        if bits is None:
            raw = struct.pack("<d", float(v))
        else:
            raw = struct.pack("<Q", bits)
        return key(number, I64) + raw
    if typ == "string":
        b = v.encode("utf-8") if isinstance(v, str) else bytes(v)
        return key(number, LEN) + varint(len(b)) + b
    if typ == "bytes":
        b = bytes(v)
        return key(number, LEN) + varint(len(b)) + b
    raise ValueError(typ)


def encode(msg_name, msg):
    """Encodes the dict |msg| as message |msg_name| (no length prefix)."""
    out = bytearray()
    for number, name, typ, repeated, oneof in SCHEMA[msg_name]:
        if name not in msg:
            continue
        v = msg[name]
        if typ in SCHEMA:
            if repeated:
                for e in v:
                    b = encode(typ, e)
                    out += key(number, LEN) + varint(len(b)) + b
            elif v is not None:
                b = encode(typ, v)
                out += key(number, LEN) + varint(len(b)) + b
        elif repeated and _WIRE[typ] == VARINT and not msg.get(
                "_unpacked"):
            # proto3 packs repeated numeric scalars: one length-delimited
            # field holding the varints ("_unpacked": True in the dict
            # writes one field per element, which a receiver accepts too)
            if v:
                b = b"".join(varint(int(e)) for e in v)
                out += key(number, LEN) + varint(len(b)) + b
        elif repeated:
            for e in v:
                out += _scalar(typ, e, number)
        elif oneof is not None:
            if v is not None:
                out += _scalar(typ, v, number, msg, name)
        else:
            if v != _SCALAR_DEFAULTS[typ] or (
                    typ == "double" and msg.get(name + "_bits")):
                out += _scalar(typ, v, number, msg, name)
    return bytes(out)


def encode_payload(frame):
    """The Frame message |frame| ({body: message}) without length prefix."""
    return encode("Frame", frame)


def with_prefix(payload):
    return struct.pack(">I", len(payload)) + payload


def encode_frame(frame):
    """A complete frame: u32be(N) || Frame."""
    return with_prefix(encode_payload(frame))


def frame(body, msg=None):
    """Shorthand: frame("error", {"code": 5}) -> complete frame bytes."""
    if body not in _BODY_BY_NAME:
        raise ValueError(body)
    return encode_frame({body: msg or {}})


# ---- decoding ---------------------------------------------------------------

def read_varint(buf, pos):
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("varint truncated")
        b = buf[pos]
        pos += 1
        if shift >= 64 and b & 0x7F:
            raise DecodeError("varint too long")
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        if shift >= 70:
            raise DecodeError("varint too long")


def iter_fields(buf):
    """Yields (number, wire type, value) for each field of |buf|; value is
    an int for VARINT, bytes for LEN, I64 and I32."""
    pos = 0
    n = len(buf)
    while pos < n:
        k, pos = read_varint(buf, pos)
        number, wt = k >> 3, k & 7
        if number == 0:
            raise DecodeError("field number 0")
        if wt == VARINT:
            v, pos = read_varint(buf, pos)
        elif wt == I64:
            if pos + 8 > n:
                raise DecodeError("fixed64 truncated")
            v = bytes(buf[pos:pos + 8])
            pos += 8
        elif wt == I32:
            if pos + 4 > n:
                raise DecodeError("fixed32 truncated")
            v = bytes(buf[pos:pos + 4])
            pos += 4
        elif wt == LEN:
            ln, pos = read_varint(buf, pos)
            if pos + ln > n:
                raise DecodeError("length past the end")
            v = bytes(buf[pos:pos + ln])
            pos += ln
        else:
            raise DecodeError("wire type %d (group or invalid)" % wt)
        yield number, wt, v


def decode(msg_name, buf):
    """Decodes |buf| as message |msg_name| into a dict (see module doc)."""
    fields = {f[0]: f for f in SCHEMA[msg_name]}
    out = {}
    for number, name, typ, repeated, oneof in SCHEMA[msg_name]:
        if repeated:
            out[name] = []
        elif oneof is None and typ not in SCHEMA:
            out[name] = _SCALAR_DEFAULTS[typ]
    unknown = []
    raw = {}  # the bytes of each non-repeated message field so far
    for number, wt, v in iter_fields(buf):
        f = fields.get(number)
        if f is None:
            unknown.append(number)
            continue
        _, name, typ, repeated, oneof = f
        if typ in SCHEMA:
            if wt != LEN:
                unknown.append(number)
                continue
            val = decode(typ, v)  # each occurrence must decode (LS-FRAME-7)
            if not repeated:
                if name in out:  # merged with the earlier occurrences
                    v = raw[name] + v
                    val = decode(typ, v)
                raw[name] = v
        elif repeated and wt == LEN and _WIRE[typ] == VARINT:
            # packed repeated unsigned integers (TablesOpened.incremental)
            vals, p = [], 0
            while p < len(v):
                x, p = read_varint(v, p)
                vals.append(x & 0xFFFFFFFF if typ == "uint32" else x)
            out[name].extend(vals)
            continue
        else:
            if wt != _WIRE[typ]:
                unknown.append(number)
                continue
            if typ == "uint32":
                val = v & 0xFFFFFFFF
            elif typ == "uint64":
                val = v
            elif typ == "sint64":
                val = unzigzag(v)
            elif typ == "bool":
                val = v != 0
            elif typ == "double":
                val = struct.unpack("<d", v)[0]
            elif typ == "string":
                val = v.decode("utf-8", "replace")
            else:
                val = v
        if repeated:
            out[name].append(val)
        else:
            if oneof is not None:
                for other in SCHEMA[msg_name]:
                    if other[4] == oneof:
                        out.pop(other[1], None)
                        out.pop(other[1] + "_bits", None)
            out[name] = val
            if typ == "double":
                out[name + "_bits"] = struct.unpack("<Q", v)[0]
    if unknown:
        out["_unknown"] = unknown
    return out


def decode_payload(payload):
    """Decodes a Frame payload: a dict with at most one body key (and
    "_unknown" when unknown fields were present). Raises DecodeError."""
    return decode("Frame", payload)


def body_of(frame):
    """(body name, body dict) of a decoded frame, or (None, None)."""
    for name in _BODY_BY_NAME:
        if name in frame:
            return name, frame[name]
    return None, None


# ---- rendering ----------------------------------------------------------------

_TYPE_NAMES = {
    "client_hello": "ClientHello", "server_hello": "ServerHello",
    "client_auth": "client_auth", "server_auth": "server_auth",
    "open_tables": "OpenTables", "tables_opened": "TablesOpened",
    "ranges": "Ranges", "rows": "Rows", "need": "Need", "end_turn": "EndTurn",
    "verify": "Verify", "committed": "Committed", "error": "Error",
    "changes": "Changes",
}


def _render_value(msg_name, field, typ, v, limit):
    if typ in SCHEMA:
        return _render_msg(typ, v, limit)
    if typ == "bytes" and msg_name == "Value" and field == "text":
        try:
            t = v.decode("utf-8")
            return '"%s"' % repr(t)[1:-1].replace('"', '\\"')
        except UnicodeDecodeError:
            return "(not UTF-8) " + v.hex()
    if typ == "bytes":
        if len(v) > limit:
            return v[:limit].hex() + "...(%d bytes)" % len(v)
        return v.hex() if v else "empty"
    if typ == "string":
        s = repr(v)[1:-1].replace('"', '\\"')
        return '"%s"' % s
    if typ == "bool":
        return "true" if v else "false"
    if msg_name == "Error" and field == "code":
        return "%d (%s)" % (v, ERROR_CODES.get(v, "unknown code"))
    if msg_name == "OpenTables" and field == "policy":
        return "%d (%s)" % (v, POLICIES.get(v, "unknown policy"))
    return repr(v)


def _render_msg(msg_name, msg, limit=32):
    parts = []
    for number, name, typ, repeated, oneof in SCHEMA[msg_name]:
        if name not in msg:
            continue
        v = msg[name]
        if repeated:
            if not v:
                continue
            shown = v[:8]
            s = ", ".join(_render_value(msg_name, name, typ, e, limit)
                          for e in shown)
            if len(v) > 8:
                s += ", ...(%d in all)" % len(v)
            parts.append("%s: [%s]" % (name, s))
        elif oneof is None and typ not in SCHEMA and \
                v == _SCALAR_DEFAULTS[typ]:
            continue
        else:
            parts.append("%s: %s" % (name, _render_value(msg_name, name,
                                                          typ, v, limit)))
    if msg.get("_unknown"):
        parts.append("unknown fields: %s" % msg["_unknown"])
    return "{" + ", ".join(parts) + "}"


def render(frame):
    """A decoded frame, readably: Error{code: 5 (AUTH_FAILED), ...}."""
    name, body = body_of(frame)
    if name is None:
        extra = (" (unknown fields %s)" % frame["_unknown"]
                 if frame.get("_unknown") else "")
        return "Frame{} with no known body" + extra
    return _TYPE_NAMES[name] + _render_msg(_BODY_BY_NAME[name][2], body)


def render_bytes(raw):
    """Renders a complete frame (prefix included), never raising."""
    if len(raw) < 4:
        return "truncated length prefix (%d bytes)" % len(raw)
    n = struct.unpack(">I", raw[:4])[0]
    if n > MAX_FRAME:
        return "length prefix %d > MAX_FRAME" % n
    payload = raw[4:]
    if len(payload) < n:
        return "truncated frame: %d of %d bytes" % (len(payload), n)
    if len(payload) > n:
        return "frame of %d bytes followed by %d more" % (n, len(payload) - n)
    try:
        return render(decode_payload(payload))
    except DecodeError as e:
        return "undecodable Frame: %s" % e


# ---- values -----------------------------------------------------------------

def value_msg(v):
    """A Python value (None, int, float, str, bytes) as a Value dict."""
    if v is None:
        return {"null": True}
    if isinstance(v, bool):
        return {"integer": int(v)}
    if isinstance(v, int):
        return {"integer": v}
    if isinstance(v, float):
        return {"real": v}
    if isinstance(v, str):
        return {"text": v.encode("utf-8")}
    if isinstance(v, (bytes, bytearray)):
        return {"blob": bytes(v)}
    raise TypeError(type(v))


def value_py(m):
    """A decoded Value dict as a Python value; raises DecodeError when no
    kind is set."""
    if "null" in m:
        return None
    if "integer" in m:
        return m["integer"]
    if "real" in m:
        return m["real"]
    if "text" in m:
        return m["text"].decode("utf-8", "surrogateescape")
    if "blob" in m:
        return m["blob"]
    raise DecodeError("Value with no kind")

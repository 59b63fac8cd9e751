"""Canonical values and their text notation (conformance/README.md,
"Value notation").

A value is a tuple, the same whichever database held it:
  ("null",)  ("integer", int)  ("real", bits)  ("text", str)  ("blob", bytes)
where bits is the 64-bit IEEE-754 pattern as an int, every NaN replaced by
7ff8000000000000 (spec 7.2: all NaNs are one value; -0.0 is not 0.0).

Notation, one word per value:
  null
  int:-9223372036854775808        a signed 64-bit decimal integer
  real:1.5  real:-0.0  real:1e-308  real:inf  real:-inf  real:nan
  real:0x8000000000000000         the 16 hex digits of the bit pattern
  text:"a b\\n"                   escapes: \\\\ \\" \\n \\t \\r \\0 \\xNN
                                  (U+00NN) \\u{1F600} (any scalar value)
  blob:00ff   blob:               the bytes in hex, possibly none
A decimal real is the binary64 nearest to it (correctly rounded), so
`real:0.1` names exactly one value; values are printed in the shortest
notation that reads back as the same bits.
"""

import math
import re
import struct

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
NAN_BITS = 0x7ff8000000000000
NULL = ("null",)


class NotationError(ValueError):
    pass


def real_bits(x):
    if math.isnan(x):
        return NAN_BITS
    return struct.unpack(">Q", struct.pack(">d", x))[0]


def bits_real(bits):
    return struct.unpack(">d", struct.pack(">Q", bits))[0]


def canon_bits(bits):
    if (bits >> 52) & 0x7ff == 0x7ff and bits & ((1 << 52) - 1):
        return NAN_BITS
    return bits


def from_python(v):
    """A value read from a database driver as a canonical value."""
    if v is None:
        return NULL
    if isinstance(v, bool):
        return ("integer", int(v))
    if isinstance(v, int):
        return ("integer", v)
    if isinstance(v, float):
        return ("real", real_bits(v))
    if isinstance(v, str):
        return ("text", v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ("blob", bytes(v))
    raise TypeError(f"no canonical kind for {v!r}")


def to_python(v):
    kind = v[0]
    if kind == "null":
        return None
    if kind == "real":
        return bits_real(v[1])
    return v[1]


_ESC = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r",
        "\0": "\\0"}


def quote_text(s):
    out = []
    for ch in s:
        if ch in _ESC:
            out.append(_ESC[ch])
        elif ord(ch) < 0x20 or 0x7f <= ord(ch) < 0xa0:
            out.append(f"\\x{ord(ch):02x}")
        elif 0xd800 <= ord(ch) <= 0xdfff or ord(ch) in (0x2028, 0x2029,
                                                        0xfeff):
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def unquote_text(s):
    """|s| is the quoted part, quotes included."""
    if len(s) < 2 or s[0] != '"' or s[-1] != '"':
        raise NotationError(f"text must be in double quotes: {s!r}")
    body, out, i = s[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch == '"':
            raise NotationError(f"unescaped quote in {s!r}")
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        i += 1
        if i >= len(body):
            raise NotationError(f"dangling backslash in {s!r}")
        e = body[i]
        simple = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r",
                  "0": "\0"}
        if e in simple:
            out.append(simple[e])
            i += 1
        elif e == "x":
            h = body[i + 1:i + 3]
            if not re.fullmatch(r"[0-9a-fA-F]{2}", h):
                raise NotationError(f"\\x wants two hex digits in {s!r}")
            out.append(chr(int(h, 16)))
            i += 3
        elif e == "u":
            m = re.match(r"u\{([0-9a-fA-F]{1,6})\}", body[i:])
            if not m:
                raise NotationError(f"\\u wants {{HEX}} in {s!r}")
            cp = int(m.group(1), 16)
            if cp > 0x10ffff or 0xd800 <= cp <= 0xdfff:
                raise NotationError(f"\\u{{{m.group(1)}}} is not a Unicode "
                                    "scalar value")
            out.append(chr(cp))
            i += m.end()
        else:
            raise NotationError(f"unknown escape \\{e} in {s!r}")
    return "".join(out)


def parse_value(word):
    if word == "null":
        return NULL
    kind, colon, rest = word.partition(":")
    if not colon:
        raise NotationError(f"not a value: {word!r} (want null, int:, real:,"
                            " text:, blob:)")
    if kind == "int":
        if not re.fullmatch(r"-?(0|[1-9][0-9]*)", rest):
            raise NotationError(f"bad integer {word!r}")
        n = int(rest)
        if not INT64_MIN <= n <= INT64_MAX:
            raise NotationError(f"integer out of int64 range: {word!r}")
        return ("integer", n)
    if kind == "real":
        low = rest.lower()
        if re.fullmatch(r"0x[0-9a-fA-F]{16}", rest):
            return ("real", canon_bits(int(rest[2:], 16)))
        if low in ("inf", "+inf", "-inf", "nan"):
            return ("real", real_bits(float(low)))
        if not re.fullmatch(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?",
                            rest):
            raise NotationError(f"bad real {word!r}")
        x = float(rest)
        if math.isinf(x):
            raise NotationError(f"real overflows binary64: {word!r}")
        return ("real", real_bits(x))
    if kind == "text":
        return ("text", unquote_text(rest))
    if kind == "blob":
        if len(rest) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", rest):
            raise NotationError(f"bad blob {word!r} (even number of hex "
                                "digits)")
        return ("blob", bytes.fromhex(rest))
    raise NotationError(f"unknown kind {kind!r} in {word!r}")


def format_value(v):
    kind = v[0]
    if kind == "null":
        return "null"
    if kind == "integer":
        return f"int:{v[1]}"
    if kind == "real":
        x = bits_real(v[1])
        if math.isnan(x):
            return "real:nan"
        if math.isinf(x):
            return "real:inf" if x > 0 else "real:-inf"
        return f"real:{x!r}"
    if kind == "text":
        return "text:" + quote_text(v[1])
    if kind == "blob":
        return "blob:" + v[1].hex()
    raise TypeError(v)


def split_words(line):
    """Splits a row line into words at white space; a quoted text value
    may hold white space."""
    words, i, n = [], 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        j = i
        while j < n and not line[j].isspace():
            if line[j] == '"':
                j += 1
                while j < n and line[j] != '"':
                    j += 2 if line[j] == "\\" else 1
                if j >= n:
                    raise NotationError(f"unterminated text in {line!r}")
            j += 1
        words.append(line[i:j])
        i = j
    return words


UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                     r"[0-9a-f]{12}")


def parse_uuid(word):
    """A row's UUID: the 36-character lowercase form, or @N for
    00000000-0000-4000-8000-NNNNNNNNNNNN (N decimal, in hex), or `*`
    (expected tables only: any UUID) or `-` (no UUID: the table has no
    _lipsync_uuid column yet). Returns the text form, "*" or None."""
    if word in ("*", "-"):
        return word if word == "*" else None
    if word.startswith("@") and word[1:].isdigit():
        n = int(word[1:])
        if n >= 1 << 48:
            raise NotationError(f"{word}: at most 12 hex digits")
        return f"00000000-0000-4000-8000-{n:012x}"
    if UUID_RE.fullmatch(word):
        return word
    raise NotationError(f"bad UUID {word!r} (want 36-char lowercase form, "
                        "@N, * or -)")

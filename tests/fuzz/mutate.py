"""Seeded mutations of a valid input: the same seed gives the same cases, in any run, on any machine.

A binary input comes with its structure as a list of `Field`s (offset, width, label), found by
walking the valid seed; the mutations aim there: bit flips and byte sets, 32- and 64-bit fields set
to extremes (0, 2^31, 2^32-1, 2^40, 2^63, 2^64-1, ...), random spans, and truncation at every
structure boundary. A JSON input gets structural mutations as well: a value at a random path
replaced by one of another type or an extreme (a huge or negative number, NaN, a deep nesting, a
long string), a key deleted, a list emptied.
"""

import copy
import json
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    offset: int
    size: int  # 4 or 8 for an integer field; anything else is a span of bytes
    label: str


@dataclass(frozen=True)
class Case:
    name: str  # what was done, e.g. "u64 2^64-1 @1234 (tensor count)"; with the kind and seed it names the case
    data: bytes


_EXTREMES_64 = (0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1)
_EXTREMES_32 = (0, 1, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1)


def _name_of(value: int) -> str:
    for k in range(65):
        for delta in (0, -1, -2):
            if value == 2**k + delta and k > 4:
                return f"2^{k}" + (f"{delta}" if delta else "")
    return str(value)


def truncations(data: bytes, fields: list[Field], limit: int) -> list[Case]:
    """The file cut at every structure boundary (each field's start and end), evenly thinned to `limit`."""
    cuts = sorted({b for f in fields for b in (f.offset, f.offset + f.size) if 0 <= b < len(data)} | {0, len(data) - 1})
    if len(cuts) > limit:
        step = len(cuts) / limit
        cuts = [cuts[int(i * step)] for i in range(limit)]
    labels = {f.offset: f.label for f in reversed(fields)}
    return [Case(f"truncate @{c} ({labels.get(c, 'end of a field')})", data[:c]) for c in cuts]


def _field_set(rng: random.Random, data: bytearray, fields: list[Field]) -> str:
    ints = [f for f in fields if f.size in (4, 8) and f.offset + f.size <= len(data)]
    f = rng.choice(ints)
    fmt, extremes = ("<Q", _EXTREMES_64) if f.size == 8 else ("<I", _EXTREMES_32)
    (old,) = struct.unpack_from(fmt, data, f.offset)
    mask = 2 ** (8 * f.size) - 1
    value = rng.choice((*extremes, (old + 1) & mask, (old - 1) & mask, (old * 2) & mask, (old + 2**20) & mask))
    struct.pack_into(fmt, data, f.offset, value)
    return f"u{8 * f.size} {_name_of(value)} @{f.offset} ({f.label})"


def _where(rng: random.Random, data: bytearray, fields: list[Field]) -> tuple[int, str]:
    """An offset to damage: mostly inside a structure field, sometimes anywhere."""
    if fields and rng.random() < 0.8:
        f = rng.choice(fields)
        return min(len(data) - 1, f.offset + rng.randrange(max(1, f.size))), f.label
    return rng.randrange(len(data)), "anywhere"


def _one(rng: random.Random, data: bytearray, fields: list[Field]) -> str:
    op = rng.choice(("flip", "flip", "byte", "field", "field", "field", "span"))
    if op == "field" and any(f.size in (4, 8) for f in fields):
        return _field_set(rng, data, fields)
    at, label = _where(rng, data, fields)
    if op == "flip":
        bit = rng.randrange(8)
        data[at] ^= 1 << bit
        return f"flip bit {bit} @{at} ({label})"
    if op == "span":
        n = min(rng.randint(2, 16), len(data) - at)
        data[at : at + n] = bytes(rng.randrange(256) for _ in range(n))
        return f"random {n} bytes @{at} ({label})"
    value = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
    data[at] = value
    return f"byte 0x{value:02x} @{at} ({label})"


def byte_mutations(seed: bytes, fields: list[Field], n: int, rng: random.Random) -> Iterator[Case]:
    for _ in range(n):
        data = bytearray(seed)
        steps = [_one(rng, data, fields) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
        yield Case("; ".join(steps), bytes(data))


# --- JSON -------------------------------------------------------------------------------------------

_JSON_VALUES = (
    None, True, False, 0, -1, 1, 2**31, 2**63, 2**64 + 1, -(2**63), 10**400, 1e308, -1e308, 0.5, float("nan"), float("inf"),
    "", "x", "\x00", "\ud800", "é" * 3, "A" * 100_000, [], [1], [[[[]]]], {}, {"a": None}, [None] * 10, "0", "-1", "1e9",
)


def _random_path(rng: random.Random, doc) -> tuple:
    """A path to a value, by a random walk from the root: every level is as likely as the next, so
    a 4096-entry vocabulary does not drown the few keys that steer the reader."""
    path, node = (), doc
    while isinstance(node, (dict, list)) and node and (not path or rng.random() < 0.6):
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path, node = (*path, key), node[key]
    return path


_DEEP = "\u0000deep{}\u0000"  # a placeholder, replaced after serializing: json.dumps cannot nest 5000 deep


def _mutate_json(rng: random.Random, doc) -> str:
    path = _random_path(rng, doc)  # in the document as the steps before left it
    if not path:
        return "nothing"
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    op = rng.choice(("set",) * 6 + ("delete", "delete", "empty", "deep"))
    where = "/".join(map(str, path))
    if op == "delete" and isinstance(parent, dict):
        del parent[key]
        return f"delete {where}"
    if op == "deep":
        parent[key] = _DEEP.format(rng.choice((50, 5000)))
        return f"deep nesting at {where}"
    if op == "empty" and isinstance(parent[key], (list, dict, str)):
        parent[key] = type(parent[key])()
        return f"empty {where}"
    value = copy.deepcopy(rng.choice(_JSON_VALUES))
    parent[key] = value
    shown = repr(value) if len(repr(value)) < 30 else repr(value)[:27] + "..."
    return f"set {where} = {shown}"


def json_mutations(seed: bytes, n: int, rng: random.Random) -> Iterator[Case]:
    """Structural mutations of a JSON document (serialized back, NaN and deep nesting included)."""
    for _ in range(n):
        doc = json.loads(seed)
        steps = [_mutate_json(rng, doc) for _ in range(rng.choice((1, 1, 2, 3)))]
        text = json.dumps(doc, ensure_ascii=False)
        for depth in (50, 5000):
            text = text.replace(json.dumps(_DEEP.format(depth)), "[" * depth + "]" * depth)
        yield Case("json: " + "; ".join(steps), text.encode("utf-8", errors="surrogatepass"))


def text_fields(data: bytes) -> list[Field]:
    """A JSON file's structure as byte fields: each token (string, number, punctuation)."""
    fields, i = [], 0
    while i < len(data):
        c = data[i : i + 1]
        if c == b'"':
            j = i + 1
            while j < len(data) and data[j : j + 1] != b'"':
                j += 2 if data[j : j + 1] == b"\\" else 1
            fields.append(Field(i, j + 1 - i, "string"))
            i = j + 1
        elif c in b"{}[],:":
            fields.append(Field(i, 1, "punctuation"))
            i += 1
        elif c.isdigit() or c == b"-":
            j = i
            while j < len(data) and data[j : j + 1] in b"0123456789.eE+-":
                j += 1
            fields.append(Field(i, j - i, "number"))
            i = j
        else:
            i += 1
    return fields


# --- protobuf ---------------------------------------------------------------------------------------

_VARINT_EXTREMES = (0, 1, 127, 128, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**63 - 1, 2**63, 2**64 - 1)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint_mutations(seed: bytes, fields: list[Field], n: int, rng: random.Random) -> Iterator[Case]:
    """A protobuf's length and varint fields re-encoded with another value (their width changing with
    it), aimed mostly at lengths: 2^31, 2^64-1, one more or less than the true length, ..."""
    targets = [f for f in fields if f.label.endswith((" length", " varint"))]
    lengths = [f for f in targets if f.label.endswith(" length")]
    for _ in range(n):
        f = rng.choice(lengths if lengths and rng.random() < 0.7 else targets)
        old = 0
        for i, b in enumerate(seed[f.offset : f.offset + f.size]):
            old |= (b & 0x7F) << (7 * i)
        value = rng.choice((*_VARINT_EXTREMES, old + 1, old - 1 if old else 2, old * 2, old + 2**20))
        # sometimes an over-long encoding (10 bytes) or one that never ends (continuation bits to the end)
        encoded = _encode_varint(value)
        style = rng.random()
        if style < 0.1:
            encoded = bytes(b | 0x80 for b in encoded) + b"\x80" * (10 - len(encoded)) + b"\x01"
            label = "11-byte varint"
        elif style < 0.15:
            encoded = b"\xff" * rng.randint(1, 12)
            label = "unterminated varint"
        else:
            label = f"varint {_name_of(value)}"
        yield Case(f"{label} @{f.offset} ({f.label})", seed[: f.offset] + encoded + seed[f.offset + f.size :])


# --- TOML -------------------------------------------------------------------------------------------

_TOML_VALUES = (
    "0", "-1", "1", "2147483648", "9223372036854775807", "-9223372036854775808", "99999999999999999999999999", "0x7fffffff",
    "1e308", "-1e308", "0.5", "nan", "inf", "-inf", "1e-320", '""', '"x"', '"\\u0000"', '"~nosuchuser/x"', f'"{"x" * 5000}"',
    '".."', '"."', '"/"', '"/dev/null"', '"model"', '"eval.txt"', '"q4_k_m"', '"Q4_K_M"', '"f16"', '"both"', '"cuda"', '"é"',
    "true", "false", "[]", "[1, 2]", '["q4_0", "q4_0"]', '["a", 1]', "[[]]", "{}", "{ a = 1 }", "{ path = \"model\" }",
    "1979-05-27T07:32:00Z", "07:32:00", "1979-05-27", '"""\nmulti\nline"""', "'literal\\x'", "[" * 60 + "]" * 60,
)


def toml_fields(data: bytes) -> list[Field]:
    """A TOML file's structure as byte fields: each string, number or word, and each punctuation."""
    fields, i = [], 0
    while i < len(data):
        c = data[i : i + 1]
        if c == b'"':
            j = i + 1
            while j < len(data) and data[j : j + 1] not in (b'"', b"\n"):
                j += 2 if data[j : j + 1] == b"\\" else 1
            fields.append(Field(i, j + 1 - i, "string"))
            i = j + 1
        elif c == b"#":
            j = data.find(b"\n", i)
            j = len(data) if j < 0 else j
            fields.append(Field(i, j - i, "comment"))
            i = j
        elif c in b"{}[],=.\n":
            fields.append(Field(i, 1, "newline" if c == b"\n" else "punctuation"))
            i += 1
        elif c.isalnum() or c in b"-_+":
            j = i
            while j < len(data) and (data[j : j + 1].isalnum() or data[j : j + 1] in b"-_+."):
                j += 1
            fields.append(Field(i, j - i, "number" if c.isdigit() or c in b"-+" else "word"))
            i = j
        else:
            i += 1
    return fields


def toml_mutations(seed: bytes, n: int, rng: random.Random) -> Iterator[Case]:
    """A TOML document's values replaced by others (of another type, extremes, paths, dates, deep
    arrays), keys renamed or repeated, lines deleted, repeated or swapped: each a text edit, so
    the syntax around the value stays as the seed has it."""
    for _ in range(n):
        lines = seed.decode("utf-8").split("\n")
        steps = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            op = rng.choice(("value",) * 6 + ("key", "delete line", "repeat line", "swap lines", "new key"))
            assignments = [i for i, line in enumerate(lines) if " = " in line and not line.startswith("#")]
            if op == "value" and assignments:
                i = rng.choice(assignments)
                key, _, old = lines[i].partition(" = ")
                if old.startswith("[") and old.endswith("]") and ", " in old and rng.random() < 0.5:  # one element of an array
                    items = old[1:-1].split(", ")
                    j = rng.randrange(len(items))
                    items[j] = rng.choice(_TOML_VALUES)
                    lines[i] = f"{key} = [{', '.join(items)}]"
                else:
                    lines[i] = f"{key} = {rng.choice(_TOML_VALUES)}"
                steps.append(f"set line {i + 1}: {lines[i][:40]!r}")
            elif op == "key" and assignments:
                i = rng.choice(assignments)
                key, _, value = lines[i].partition(" = ")
                new = rng.choice((key + "s", key[:-1], key.upper(), "unknown", '"quoted key"', "a.b", key + "." + key))
                lines[i] = f"{new} = {value}"
                steps.append(f"rename key on line {i + 1} to {new!r}")
            elif op == "new key":
                i = rng.randrange(len(lines) + 1)
                line = f"{rng.choice(('bits', 'path', 'types', 'model', 'extra', 'ctx', 'gptq'))} = {rng.choice(_TOML_VALUES)}"
                lines.insert(i, line)
                steps.append(f"insert at line {i + 1}: {line[:40]!r}")
            elif op == "delete line" and lines:
                i = rng.randrange(len(lines))
                steps.append(f"delete line {i + 1}: {lines.pop(i)[:40]!r}")
            elif op == "repeat line" and lines:
                i = rng.randrange(len(lines))
                lines.insert(i, lines[i])
                steps.append(f"repeat line {i + 1}: {lines[i][:40]!r}")
            elif len(lines) > 1:
                i, j = rng.sample(range(len(lines)), 2)
                lines[i], lines[j] = lines[j], lines[i]
                steps.append(f"swap lines {i + 1} and {j + 1}")
        yield Case("toml: " + "; ".join(steps), "\n".join(lines).encode("utf-8"))

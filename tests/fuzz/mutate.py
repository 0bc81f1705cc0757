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

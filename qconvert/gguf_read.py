"""A fast, validating GGUF header reader: metadata and tensor infos, no tensor data.

gguf-py's GGUFReader builds a numpy view for every array item, which takes seconds for the
150k-token vocabularies of real models, and it trusts the file: a damaged length ends in an
IndexError deep inside numpy. This reader is the one `quantize`, `inspect` and the imatrix reader
use; it checks every field before it allocates or indexes, so any file, however damaged, gives
either a header whose every tensor lies inside the file or one QConvertError naming what is wrong
and where (the byte offset). Each metadata entry keeps its byte span in the file, so a writer can
copy it as it is instead of encoding its value again.

Layout (GGUF v2/v3, little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv; each KV is
a string key, u32 value type and the value (an ARRAY: u32 element type, u64 count, the elements);
a string is a u64 byte length and UTF-8 bytes; each tensor info is a string name, u32 n_dims, n_dims
u64 dims (ne0 first), u32 ggml type and u64 offset into the data section, which starts at the next
multiple of general.alignment (default 32) after the tensor infos.

The checks follow llama.cpp's gguf.cpp (gguf_init_from_file_impl): no repeated key or tensor name,
general.alignment a u32 power of two, names shorter than GGML_MAX_NAME, at most GGML_MAX_DIMS
dims, known tensor types with ne0 a multiple of the block size, element counts that fit int64,
offsets aligned. Every length, count and tensor extent is checked against the bytes the file has
left before anything is read, so a huge length never allocates more than the file's size.
"""

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qconvert.errors import QConvertError, quoted
from qconvert.ggml_types import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

_SCALARS = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
_SCALAR_SIZES = {t: struct.calcsize("<" + c) for t, c in _SCALARS.items()}
_VALUE_TYPES = {t.value: t for t in GGUFValueType}
_TENSOR_TYPES = {t.value: t for t in GGMLQuantizationType if t in GGML_QUANT_SIZES}
DEFAULT_ALIGNMENT = 32
GGML_MAX_DIMS = 4
GGML_MAX_NAME = 64  # bytes with the NUL: a tensor name has at most 63
_HEAD = 24  # magic, version, n_tensors, n_kv
_MIN_KV = 8 + 4 + 1  # an empty key, a type and a one-byte value
_MIN_TENSOR_INFO = 8 + 4 + 4 + 8  # an empty name, n_dims 0, type, offset
_INT64_MAX = 2**63 - 1
_CHUNK = 1 << 20
_U64 = struct.Struct("<Q")
# Keys whose type llama.cpp fixes; a file with another type there is refused, as llama.cpp does.
_KEY_TYPES = {
    "general.alignment": GGUFValueType.UINT32,
    "general.architecture": GGUFValueType.STRING,
    "general.type": GGUFValueType.STRING,
    "general.file_type": GGUFValueType.UINT32,
    "general.quantization_version": GGUFValueType.UINT32,
}
REPAIR_HINT = "the file is truncated or damaged; convert or download it again"


@dataclass(frozen=True)
class KV:
    type: GGUFValueType
    value: Any
    sub_type: GGUFValueType | None = None  # element type of an ARRAY
    span: tuple[int, int] = (0, 0)  # [start, end) of the whole entry (key, type, value) in the file


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy (row-major) order: ne reversed
    type: GGMLQuantizationType
    offset: int  # absolute byte offset of the data in the file
    n_bytes: int = 0  # of the data, from the shape and the type's block size

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class GGUFHeader:
    kv: dict[str, KV]
    tensors: list[TensorInfo]
    version: int = 3
    alignment: int = DEFAULT_ALIGNMENT
    data_offset: int = 0  # where the data section starts
    file_size: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.kv[key].value if key in self.kv else default


class _Bad(Exception):
    """A damaged field, with the byte offset it was found at; read_gguf_header adds the path."""

    def __init__(self, what: str, at: int, truncated: bool = False):
        super().__init__(what)
        self.what, self.at, self.truncated = what, at, truncated


class _Cursor:
    """Reads fields from the file in chunks, never past its end: every read is checked first against
    the bytes left, so a damaged length fails here instead of allocating."""

    def __init__(self, f, size: int):
        self.f, self.size = f, size
        self.buf, self.base, self.pos = b"", 0, 0  # buf holds the file's bytes from offset base

    def left(self) -> int:
        return self.size - self.pos

    def _span(self, n: int, what: str) -> int:
        """Make bytes [pos, pos + n) available; the index of pos in buf."""
        if n > self.size - self.pos:
            raise _Bad(f"{what} needs {n:,} bytes but the file ends {self.size - self.pos:,} bytes later", self.pos, truncated=True)
        if self.pos + n > self.base + len(self.buf):
            keep = self.buf[self.pos - self.base :]
            self.f.seek(self.base + len(self.buf))
            more = self.f.read(max(n - len(keep), _CHUNK))
            self.buf, self.base = keep + more, self.pos
            if len(self.buf) < n:  # the file shrank while being read
                raise _Bad(f"{what}: the file ends early", self.pos, truncated=True)
        return self.pos - self.base

    def unpack(self, code: str, what: str, count: int = 1):
        size = struct.calcsize("<" + code) * count
        i = self._span(size, what)
        values = struct.unpack_from(f"<{count}{code}", self.buf, i)
        self.pos += size
        return values if count != 1 else values[0]

    def string(self, what: str) -> str:
        at = self.pos
        n = self.unpack("Q", f"the length of {what}")
        if n > self.left():
            raise _Bad(f"{what} is {n:,} bytes long, past the end of the file ({self.left():,} bytes left)", at, truncated=True)
        i = self._span(n, what)
        raw = self.buf[i : i + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(f"{what} is not UTF-8", at) from None

    def strings(self, n: int, what: str) -> list[str]:
        """n strings in a row (an array's elements): those lying whole in the buffer are read in one
        tight loop; one that crosses its end, or is damaged, goes through `string`, which checks it."""
        values: list[str] = []
        length_at = _U64.unpack_from
        while len(values) < n:
            buf, k = self.buf, self.pos - self.base
            end = len(buf)
            try:
                while len(values) < n and k + 8 <= end:
                    (length,) = length_at(buf, k)
                    if length > end - k - 8:
                        break
                    values.append(buf[k + 8 : k + 8 + length].decode("utf-8"))
                    k += 8 + length
            except UnicodeDecodeError:
                pass  # `string` below says which element, where
            self.pos = self.base + k
            if len(values) < n:
                values.append(self.string(f"element {len(values)} of {what}"))
        return values

    def value_type(self, what: str) -> GGUFValueType:
        at = self.pos
        code = self.unpack("I", what)
        if code not in _VALUE_TYPES:
            raise _Bad(f"{what} is {code}, not a GGUF value type (0-{max(_VALUE_TYPES)})", at)
        return _VALUE_TYPES[code]


def _read_value(c: _Cursor, vtype: GGUFValueType, what: str) -> KV:
    if vtype == GGUFValueType.STRING:
        return KV(vtype, c.string(what))
    if vtype != GGUFValueType.ARRAY:
        return KV(vtype, c.unpack(_SCALARS[vtype], what))
    sub = c.value_type(f"the element type of {what}")
    at = c.pos
    n = c.unpack("Q", f"the length of {what}")
    if sub == GGUFValueType.ARRAY:
        raise _Bad(f"{what} is an array of arrays, which qconvert does not read", at)
    min_size = 8 if sub == GGUFValueType.STRING else _SCALAR_SIZES[sub]
    if n > c.left() // min_size:
        raise _Bad(f"{what} claims {n:,} {sub.name} elements, more than the {c.left():,} bytes left in the file hold", at, truncated=True)
    if sub == GGUFValueType.STRING:
        values = c.strings(n, what)
    else:  # one struct call for the whole array
        values = list(c.unpack(_SCALARS[sub], what, n)) if n != 1 else [c.unpack(_SCALARS[sub], what)]
    return KV(vtype, values, sub)


def _read_kvs(c: _Cursor, n_kv: int) -> dict[str, KV]:
    kv: dict[str, KV] = {}
    for i in range(n_kv):
        at = c.pos
        key = c.string(f"the key of metadata entry {i}")
        if key in kv:
            raise _Bad(f"metadata key {quoted(key)} appears twice", at)
        what = f"metadata key {quoted(key)}"
        vtype = c.value_type(f"the type of {what}")
        value = _read_value(c, vtype, what)
        kv[key] = KV(value.type, value.value, value.sub_type, (at, c.pos))
        want = _KEY_TYPES.get(key)
        if want is not None and kv[key].type != want:
            raise _Bad(f"{what} is {kv[key].type.name}, not {want.name}", at)
    return kv


def _read_tensor_info(c: _Cursor, i: int, names: set[str]) -> tuple[str, tuple[int, ...], GGMLQuantizationType, int, int]:
    at = c.pos
    name = c.string(f"the name of tensor {i}")
    if len(name.encode()) >= GGML_MAX_NAME:
        raise _Bad(f"tensor {i}'s name is {len(name.encode())} bytes long; GGUF allows {GGML_MAX_NAME - 1}", at)
    if name in names:
        raise _Bad(f"tensor {quoted(name)} appears twice", at)
    what = f"tensor {quoted(name)}"
    n_dims = c.unpack("I", f"the dimension count of {what}")
    if n_dims > GGML_MAX_DIMS:
        raise _Bad(f"{what} has {n_dims} dimensions; GGUF allows {GGML_MAX_DIMS}", at)
    ne = [c.unpack("Q", f"the dimensions of {what}") for _ in range(n_dims)]
    n_elements = 1
    for d in ne:
        n_elements *= d
    if any(d > _INT64_MAX for d in ne) or n_elements > _INT64_MAX:
        raise _Bad(f"{what} has dimensions {ne}, more elements than int64 counts", at)
    code = c.unpack("I", f"the type of {what}")
    if code not in _TENSOR_TYPES:
        raise _Bad(f"{what} has type {code}, not a ggml type qconvert knows", at)
    ttype = _TENSOR_TYPES[code]
    block, type_size = GGML_QUANT_SIZES[ttype]
    row = ne[0] if ne else 1
    if row % block:
        raise _Bad(f"{what} is {ttype.name} with rows of {row} values, not a multiple of its block of {block}", at)
    offset = c.unpack("Q", f"the data offset of {what}")
    return name, tuple(reversed(ne)), ttype, offset, n_elements // block * type_size


def _alignment(kv: dict[str, KV]) -> int:
    if "general.alignment" not in kv:
        return DEFAULT_ALIGNMENT
    alignment = kv["general.alignment"].value
    if alignment == 0 or alignment & (alignment - 1):
        raise _Bad(f"general.alignment is {alignment}, not a power of two", 0)
    return alignment


def _place_tensors(infos: list, data_offset: int, alignment: int, size: int) -> list[TensorInfo]:
    """Tensor infos → TensorInfo with absolute offsets, each aligned and inside the file, none overlapping."""
    data_size = max(0, size - data_offset)
    tensors = []
    for name, shape, ttype, offset, n_bytes in infos:
        if offset % alignment:
            raise _Bad(f"tensor {quoted(name)}'s data offset {offset:,} is not a multiple of the alignment {alignment}", data_offset)
        if offset > data_size or n_bytes > data_size - offset:
            raise _Bad(
                f"tensor {quoted(name)} ({n_bytes:,} bytes at data offset {offset:,}) runs past the end of the file "
                f"({data_size:,} bytes of data)",
                data_offset,
                truncated=True,
            )
        tensors.append(TensorInfo(name, shape, ttype, data_offset + offset, n_bytes))
    by_offset = sorted((t for t in tensors if t.n_bytes), key=lambda t: t.offset)
    for a, b in zip(by_offset, by_offset[1:]):
        if a.offset + a.n_bytes > b.offset:
            raise _Bad(f"the data of tensors {quoted(a.name)} and {quoted(b.name)} overlap", data_offset)
    return tensors


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse and check the metadata and tensor infos of the GGUF file `path`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_HEAD)
            if head[:4] != b"GGUF":
                raise QConvertError("not a GGUF file (bad magic)", path, "give a .gguf file from qconvert or llama.cpp")
            if len(head) < _HEAD:
                raise QConvertError(f"truncated GGUF: {size} bytes, less than its {_HEAD}-byte header", path, REPAIR_HINT)
            version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:])
            if version not in (2, 3):
                raise QConvertError(f"GGUF version {version} is not supported (2 and 3 are)", path, "re-convert it with a current tool")
            c = _Cursor(f, size)
            c.pos = c.base = _HEAD
            try:
                if n_kv > (size - _HEAD) // _MIN_KV:
                    raise _Bad(f"the header claims {n_kv:,} metadata entries, more than the file's {size:,} bytes hold", 16, truncated=True)
                if n_tensors > (size - _HEAD) // _MIN_TENSOR_INFO:
                    raise _Bad(f"the header claims {n_tensors:,} tensors, more than the file's {size:,} bytes hold", 8, truncated=True)
                kv = _read_kvs(c, n_kv)
                alignment = _alignment(kv)
                names: set[str] = set()
                infos = []
                for i in range(n_tensors):
                    infos.append(_read_tensor_info(c, i, names))
                    names.add(infos[-1][0])
                data_offset = c.pos + -c.pos % alignment
                tensors = _place_tensors(infos, data_offset, alignment, size)
            except _Bad as bad:
                kind = "truncated GGUF" if bad.truncated else "corrupt GGUF header"
                raise QConvertError(f"{kind}: {bad.what} (at byte {bad.at:,})", path, REPAIR_HINT) from None
    except OSError as exc:
        raise QConvertError(f"cannot read: {exc.strerror or exc}", path) from exc
    return GGUFHeader(kv, tensors, version, alignment, data_offset, size)

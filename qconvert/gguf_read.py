"""A fast GGUF header reader: metadata and tensor infos, no tensor data.

gguf-py's GGUFReader builds a numpy view for every array item, which takes seconds for the
150k-token vocabularies of real models; qconvert only needs the values and the tensor table.
Layout (GGUF v3, little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv; each KV is
a string key, u32 value type and the value; each tensor info is a string name, u32 n_dims, u64
dims (ne0 first), u32 ggml type and u64 offset into the data section, which starts at the next
multiple of general.alignment (default 32) after the tensor infos.
"""

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGMLQuantizationType, GGUFValueType

from qconvert.errors import QConvertError

_SCALARS = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
DEFAULT_ALIGNMENT = 32


@dataclass(frozen=True)
class KV:
    type: GGUFValueType
    value: Any
    sub_type: GGUFValueType | None = None  # element type of an ARRAY


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy (row-major) order: ne reversed
    type: GGMLQuantizationType
    offset: int  # absolute byte offset of the data in the file


@dataclass(frozen=True)
class GGUFHeader:
    kv: dict[str, KV]
    tensors: list[TensorInfo]

    def get(self, key: str, default: Any = None) -> Any:
        return self.kv[key].value if key in self.kv else default


class _Cursor:
    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str):
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        raw = self.buf[self.pos : self.pos + n]
        if len(raw) != n:
            raise struct.error("string runs past the end")
        self.pos += n
        return raw.decode("utf-8", errors="strict")

    def value(self, vtype: GGUFValueType) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            raise ValueError("nested array")
        return self.unpack(_SCALARS[vtype])


def _read_kv(c: _Cursor) -> tuple[str, KV]:
    key = c.string()
    vtype = GGUFValueType(c.unpack("<I"))
    if vtype != GGUFValueType.ARRAY:
        return key, KV(vtype, c.value(vtype))
    sub = GGUFValueType(c.unpack("<I"))
    n = c.unpack("<Q")
    if sub in _SCALARS:  # one struct call for the whole array
        fmt = "<" + str(n) + _SCALARS[sub][1]
        values = list(struct.unpack_from(fmt, c.buf, c.pos))
        c.pos += struct.calcsize(fmt)
    else:
        values = [c.value(sub) for _ in range(n)]
    return key, KV(vtype, values, sub)


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse the metadata and tensor infos of the GGUF file `path`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            if len(head) < 24 or head[:4] != b"GGUF":
                raise QConvertError("not a GGUF file (bad magic)", path)
            version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:])
            if version not in (2, 3):
                raise QConvertError(f"GGUF version {version} is not supported", path, "re-convert it with a current tool")
            # Metadata of real models is a few MB; read until the whole header parses.
            size = 1 << 20
            while True:
                f.seek(24)
                c = _Cursor(f.read(size))
                try:
                    kv = dict(_read_kv(c) for _ in range(n_kv))
                    infos = []
                    for _ in range(n_tensors):
                        name = c.string()
                        n_dims = c.unpack("<I")
                        ne = [c.unpack("<Q") for _ in range(n_dims)]
                        infos.append((name, tuple(reversed(ne)), GGMLQuantizationType(c.unpack("<I")), c.unpack("<Q")))
                    break
                except struct.error:
                    if len(c.buf) < size:
                        raise QConvertError("truncated GGUF header", path) from None
                    size *= 4
    except OSError as exc:
        raise QConvertError(f"cannot read: {exc.strerror or exc}", path) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise QConvertError(f"corrupt GGUF header: {exc}", path) from exc
    alignment = kv["general.alignment"].value if "general.alignment" in kv else DEFAULT_ALIGNMENT
    data_start = 24 + c.pos
    data_start += -data_start % alignment
    tensors = [TensorInfo(name, shape, t, data_start + offset) for name, shape, t, offset in infos]
    return GGUFHeader(kv, tensors)

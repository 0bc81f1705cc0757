"""The quantized file's GGUF header, as bytes: magic, version, counts, the metadata entries, the
tensor infos and the padding up to the data section.

Metadata entries are held encoded. Those of the input are copied as they lie in its file (their
spans from qconvert.gguf_read), not decoded and encoded again: a 50,000-150,000-token vocabulary
then costs one read, not a tenth of a second. The bytes are those gguf's GGUFWriter writes for the
same entries, tensor infos and alignment.
"""

import struct
from pathlib import Path

from qconvert.errors import QConvertError
from qconvert.ggml_types import GGMLQuantizationType, GGUFValueType
from qconvert.gguf_read import REPAIR_HINT, GGUFHeader

GGUF_VERSION = 3


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


class Metadata:
    """Encoded metadata entries by key, in file order. Setting a key that is there replaces its value
    in place, as GGUFWriter does; add_string and add_uint32 are GGUFWriter's, so the same code (e.g.
    write_imatrix_metadata) adds keys to either."""

    def __init__(self, entries: dict[str, bytes] | None = None):
        self.entries = dict(entries or {})

    @classmethod
    def copied(cls, header: GGUFHeader, path: Path) -> "Metadata":
        """The entries of `header`, as the bytes of `path` that it was read from."""
        if not header.kv:
            return cls()
        start = min(kv.span[0] for kv in header.kv.values())
        end = max(kv.span[1] for kv in header.kv.values())
        try:
            with open(path, "rb") as f:
                f.seek(start)
                raw = f.read(end - start)
        except OSError as exc:
            raise QConvertError(f"cannot read: {exc.strerror or exc}", path) from exc
        if len(raw) != end - start:  # the file shrank since its header was read
            raise QConvertError("truncated GGUF: the file ends inside its metadata", path, REPAIR_HINT)
        return cls({key: raw[kv.span[0] - start : kv.span[1] - start] for key, kv in header.kv.items()})

    def add_string(self, key: str, value: str) -> None:
        if value:  # GGUFWriter.add_string writes no empty string
            self.entries[key] = _string(key) + struct.pack("<I", GGUFValueType.STRING) + _string(value)

    def add_uint32(self, key: str, value: int) -> None:
        self.entries[key] = _string(key) + struct.pack("<II", GGUFValueType.UINT32, value)


def pad(n: int, alignment: int) -> int:
    return n + -n % alignment


def gguf_header(metadata: Metadata, tensors: list[tuple[str, tuple[int, ...], GGMLQuantizationType, int]], alignment: int) -> tuple[bytes, list[int], int]:
    """The header of a GGUF file with `metadata` and `tensors` (name, numpy shape, type, data bytes),
    padded to `alignment`; each tensor's absolute data offset; and the file's size. Each tensor's data
    is padded to the alignment, the last one's too, as GGUFWriter pads them."""
    parts = [b"GGUF", struct.pack("<IQQ", GGUF_VERSION, len(tensors), len(metadata.entries)), *metadata.entries.values()]
    relative, offset = [], 0
    for name, shape, ttype, n_bytes in tensors:
        ne = shape[::-1]  # ggml order: the row length first
        parts.append(_string(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, ttype, offset))
        relative.append(offset)
        offset += pad(n_bytes, alignment)
    head = b"".join(parts)
    data_start = pad(len(head), alignment)
    return head + bytes(data_start - len(head)), [data_start + r for r in relative], data_start + offset

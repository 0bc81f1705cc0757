"""A streaming safetensors reader: headers are read and checked up front, tensors one at a time.

The format: an 8-byte little-endian header length N, N bytes of JSON naming each tensor's dtype,
shape and [begin, end) data offsets, then the data. Sharded checkpoints add
model.safetensors.index.json mapping tensor names to shard files. Reading our own headers (rather
than mmapping whole files) lets every corruption become one clear error naming the file.
"""

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qconvert.errors import QConvertError, quoted
from qconvert.numeric import bf16_bits_to_f32

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_MAX_HEADER = 100 * 1024 * 1024  # as the safetensors library: no real header comes near it
_INT64_MAX = 2**63 - 1
REDOWNLOAD = "re-download or re-save the checkpoint"

# safetensors dtype → (numpy dtype of the stored bits, bytes per element)
_DTYPES = {
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),  # no numpy bf16: read the bits, widen to f32 in read_rows()
    "I32": (np.dtype("<i4"), 4),  # packed quantized weights (GPTQ, AWQ), read through hf/dequantized.py
}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str  # safetensors dtype name: F32, F16, BF16, I32
    shape: tuple[int, ...]
    file: Path
    offset: int  # absolute byte offset of the data in `file`
    nbytes: int

    @property
    def rows_shape(self) -> tuple[int, int]:
        """(n_rows, row_len): the tensor seen as rows of its last axis; a scalar is one row of one."""
        if not self.shape:
            return 1, 1
        return int(np.prod(self.shape[:-1], dtype=np.int64)), self.shape[-1]


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _entry(name: str, info, path: Path, data_start: int, data_size: int) -> TensorEntry:
    """One header entry, checked: a known dtype, a shape of non-negative ints, and [begin, end) inside
    the data, exactly as long as the shape and dtype make it."""
    if not isinstance(info, dict) or not isinstance(info.get("data_offsets"), list) or not isinstance(info.get("shape"), list):
        raise QConvertError(f"corrupt safetensors entry for tensor {quoted(name)} (no dtype, shape and data_offsets)", path, REDOWNLOAD)
    dtype, shape, offsets = info.get("dtype"), info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise QConvertError(f"tensor {quoted(name)} has dtype {str(dtype)[:40]}", path, "qconvert reads F32, F16 and BF16 checkpoints and GPTQ checkpoints")
    if not all(_is_count(d) for d in shape) or math.prod(d for d in shape if d) > _INT64_MAX or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise QConvertError(f"corrupt safetensors entry for tensor {quoted(name)}: shape {quoted(shape)}, data_offsets {quoted(offsets)}", path, REDOWNLOAD)
    begin, end = offsets
    nbytes = math.prod(shape) * _DTYPES[dtype][1]  # Python ints: no overflow
    if not begin <= end <= data_size or end - begin != nbytes:
        raise QConvertError(
            f"tensor {quoted(name)} ({dtype} {quoted(tuple(shape))}: {nbytes:,} bytes; data_offsets [{begin:,}, {end:,})) lies outside the file "
            f"or disagrees with its shape ({data_size:,} bytes of data: truncated or corrupt)",
            path,
            REDOWNLOAD,
        )
    return TensorEntry(name, dtype, tuple(shape), path, data_start + begin, nbytes)


def read_header(path: Path) -> dict[str, TensorEntry]:
    """The tensor table of one safetensors file, every entry checked against the file before use."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise QConvertError("truncated safetensors file (no header)", path, REDOWNLOAD)
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _MAX_HEADER):
                raise QConvertError(f"corrupt or truncated safetensors header (it claims {n:,} bytes; the file has {size:,})", path, REDOWNLOAD)
            raw = f.read(n)
    except OSError as exc:
        raise QConvertError(f"cannot read: {exc.strerror or exc}", path) from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSON errors, and ints past Python's digit limit
        raise QConvertError("corrupt safetensors header (not JSON)", path, REDOWNLOAD) from exc
    if not isinstance(header, dict):
        raise QConvertError("corrupt safetensors header (not a JSON object)", path, REDOWNLOAD)
    data_start, data_size = 8 + n, size - 8 - n
    entries = {name: _entry(name, info, path, data_start, data_size) for name, info in header.items() if name != "__metadata__"}
    spans = sorted((e.offset, e.offset + e.nbytes, e.name) for e in entries.values() if e.nbytes)
    for (_, a_end, a), (b_begin, _, b) in zip(spans, spans[1:]):
        if a_end > b_begin:
            raise QConvertError(f"the data of tensors {a!r} and {b!r} overlap (corrupt header)", path, REDOWNLOAD)
    return entries


def read_index(index: Path, model_dir: Path) -> dict[str, str]:
    """model.safetensors.index.json's weight_map: tensor name → shard file, a plain file name in `model_dir`."""
    try:
        if index.stat().st_size > _MAX_HEADER:
            raise QConvertError(f"safetensors index of {index.stat().st_size:,} bytes is not plausible", index, REDOWNLOAD)
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, AttributeError) as exc:
        raise QConvertError(f"unreadable safetensors index: {getattr(exc, 'strerror', None) or exc}", index, REDOWNLOAD) from exc
    if not isinstance(weight_map, dict) or not weight_map:
        raise QConvertError("safetensors index has no weight_map of tensor names to shard files", index, REDOWNLOAD)
    for name, shard in weight_map.items():
        plain = isinstance(shard, str) and shard not in ("", ".", "..") and Path(shard).name == shard and "\0" not in shard
        if not plain or len(shard.encode("utf-8", "surrogatepass")) > 255:  # NAME_MAX
            raise QConvertError(f"safetensors index maps tensor {quoted(name)} to {quoted(shard)}, not a file name in {model_dir}", index, REDOWNLOAD)
    return weight_map


class SafetensorsCheckpoint:
    """All tensors of a checkpoint directory, single-file or sharded, indexed by name."""

    def __init__(self, entries: dict[str, TensorEntry]):
        self.entries = entries

    @classmethod
    def open(cls, model_dir: Path) -> "SafetensorsCheckpoint":
        index = model_dir / INDEX_FILE
        if not model_dir.is_dir():
            raise QConvertError("no such model folder", model_dir, "give a Hugging Face model folder")
        if index.is_file():
            weight_map = read_index(index, model_dir)
            files = sorted(set(weight_map.values()))
        elif (model_dir / SINGLE_FILE).is_file():
            weight_map, files = None, [SINGLE_FILE]
        else:
            raise QConvertError(
                f"no {SINGLE_FILE} or {INDEX_FILE}", model_dir, "qconvert reads safetensors checkpoints; re-save with safe_serialization"
            )
        entries: dict[str, TensorEntry] = {}
        for fname in files:
            shard = model_dir / fname
            if not shard.is_file():
                raise QConvertError("shard named in the index is missing", shard, "re-download the checkpoint")
            for name, entry in read_header(shard).items():
                if name in entries:
                    raise QConvertError(f"tensor {quoted(name)} is in two shards, {entries[name].file.name} and {fname}", model_dir, REDOWNLOAD)
                entries[name] = entry
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(entries))
            if missing:
                raise QConvertError(f"tensor {quoted(missing[0])} is in the index but in no shard", index, "re-download the checkpoint")
            misplaced = sorted(name for name, fname in weight_map.items() if entries[name].file.name != fname)
            if misplaced:
                name = misplaced[0]
                raise QConvertError(f"tensor {quoted(name)} is in {entries[name].file.name}, the index says {weight_map[name]}", index, REDOWNLOAD)
        return cls(entries)

    @property
    def n_parameters(self) -> int:
        return sum(int(np.prod(e.shape, dtype=np.int64)) for e in self.entries.values())

    def read_rows(self, name: str, start: int, end: int, row_order: np.ndarray | None = None) -> np.ndarray:
        """Rows [start, end) of a tensor seen as (n_rows, row_len); with `row_order`, the rows
        row_order[start:end] instead. float32 or float16 as stored; BF16 is widened to float32 (exactly).
        Only those rows are read, through a short-lived memory map."""
        e = self.entries[name]
        stored, _ = _DTYPES[e.dtype]
        try:
            mm = np.memmap(e.file, dtype=stored, mode="r", offset=e.offset, shape=e.rows_shape)
            rows = np.array(mm[start:end] if row_order is None else mm[row_order[start:end]])
            del mm
        except (OSError, ValueError) as exc:
            raise QConvertError(f"cannot read tensor {quoted(name)}: {exc}", e.file) from exc
        if e.dtype == "BF16":
            rows = bf16_bits_to_f32(rows)
        return rows

    def load(self, name: str) -> np.ndarray:
        """A whole tensor in its own shape (see read_rows)."""
        e = self.entries[name]
        return self.read_rows(name, 0, e.rows_shape[0]).reshape(e.shape)

"""A streaming safetensors reader: headers are read and checked up front, tensors one at a time.

The format: an 8-byte little-endian header length N, N bytes of JSON naming each tensor's dtype,
shape and [begin, end) data offsets, then the data. Sharded checkpoints add
model.safetensors.index.json mapping tensor names to shard files. Reading our own headers (rather
than mmapping whole files) lets every corruption become one clear error naming the file.
"""

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qconvert.errors import QConvertError
from qconvert.numeric import bf16_bits_to_f32

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_MAX_HEADER = 100 * 1024 * 1024

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


def read_header(path: Path) -> dict[str, TensorEntry]:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise QConvertError("truncated safetensors file (no header)", path, "re-download or re-save the checkpoint")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _MAX_HEADER):
                raise QConvertError("corrupt or truncated safetensors header", path, "re-download or re-save the checkpoint")
            raw = f.read(n)
    except OSError as exc:
        raise QConvertError(f"cannot read: {exc.strerror or exc}", path) from exc
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QConvertError("corrupt safetensors header (not JSON)", path, "re-download or re-save the checkpoint") from exc
    if not isinstance(header, dict):
        raise QConvertError("corrupt safetensors header", path, "re-download or re-save the checkpoint")
    data_start, data_size = 8 + n, size - 8 - n
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise QConvertError(f"corrupt safetensors entry for tensor {name!r}", path) from exc
        if dtype not in _DTYPES:
            raise QConvertError(
                f"tensor {name!r} has dtype {dtype}", path, "qconvert reads F32, F16 and BF16 checkpoints and GPTQ checkpoints"
            )
        nbytes = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype][1]
        if not (0 <= begin <= end <= data_size) or end - begin != nbytes:
            raise QConvertError(
                f"tensor {name!r} lies outside the file (truncated or corrupt)", path, "re-download or re-save the checkpoint"
            )
        entries[name] = TensorEntry(name, dtype, shape, path, data_start + begin, nbytes)
    return entries


class SafetensorsCheckpoint:
    """All tensors of a checkpoint directory, single-file or sharded, indexed by name."""

    def __init__(self, entries: dict[str, TensorEntry]):
        self.entries = entries

    @classmethod
    def open(cls, model_dir: Path) -> "SafetensorsCheckpoint":
        index = model_dir / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise QConvertError("unreadable safetensors index", index, "re-download the checkpoint") from exc
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
            entries.update(read_header(shard))
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(entries))
            if missing:
                raise QConvertError(f"tensor {missing[0]!r} is in the index but in no shard", index, "re-download the checkpoint")
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
            raise QConvertError(f"cannot read tensor {name!r}: {exc}", e.file) from exc
        if e.dtype == "BF16":
            rows = bf16_bits_to_f32(rows)
        return rows

    def load(self, name: str) -> np.ndarray:
        """A whole tensor in its own shape (see read_rows)."""
        e = self.entries[name]
        return self.read_rows(name, 0, e.rows_shape[0]).reshape(e.shape)

"""llama.cpp's legacy imatrix file (.dat), for tests: a writer following the layout that
tools/imatrix/imatrix.cpp (save_imatrix_legacy) writes and common/imatrix-loader.cpp reads, and the
per-column weights llama-quantize derives from an entry (tools/quantize/quantize.cpp, load_imatrix).

Layout, all little-endian: int32 entry count; per entry an int32 name length, the name's bytes (no
NUL), int32 ncall, int32 value count, the float32 values; then, optionally, an int32 chunk count
and an int32-length-prefixed dataset name.
"""

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class ImatrixEntry:
    sums: np.ndarray  # (n_per_row,) float32 as stored: mean squared activation of each column × ncall
    ncall: int  # the entry's call count, which the loader divides by


def write_legacy_imatrix(path: Path, entries: dict[str, ImatrixEntry], chunks: int = 1, dataset: str = "test") -> Path:
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, entry in entries.items():
            raw = name.encode()
            sums = np.ascontiguousarray(entry.sums, dtype="<f4")
            f.write(struct.pack("<i", len(raw)) + raw)
            f.write(struct.pack("<ii", entry.ncall, sums.size) + sums.tobytes())
        raw = dataset.encode()
        f.write(struct.pack("<ii", chunks, len(raw)) + raw)
    return path


def quantizer_weights(entry: ImatrixEntry) -> np.ndarray:
    """What reaches ggml's quantizers for this entry: load_imatrix's `sums[i] / ncall` in float32
    (the int64 ncall converted to float first), or the sums unchanged when ncall is not positive."""
    sums = np.asarray(entry.sums, dtype=np.float32)
    return sums / np.float32(entry.ncall) if entry.ncall > 0 else sums.copy()

"""numpy-facing wrappers over the C block quantizers in qconvert._native."""

import numpy as np

from qconvert import _native
from qconvert.ggml_types import GGML_QUANT_SIZES, GGMLQuantizationType
from qconvert.numeric import default_threads


def _check_block_table() -> None:
    """The C type table (geometry from its block structs) must agree with GGML_QUANT_SIZES, which
    the GGUF reader and writer size tensors by: a mismatch would corrupt every file."""
    for type_id in _native.block_types():
        qtype = GGMLQuantizationType(type_id)
        name, elems, nbytes = _native.block_info(type_id)
        if name != qtype.name or (elems, nbytes) != GGML_QUANT_SIZES[qtype]:
            raise ImportError(
                f"qconvert._native's block table says {name} (id {type_id}) has {elems} values in {nbytes} bytes, "
                f"qconvert.ggml_types says {qtype.name} has {GGML_QUANT_SIZES[qtype]}: rebuild the extension"
            )


_check_block_table()
BLOCK_TYPES = frozenset(GGMLQuantizationType(type_id) for type_id in _native.block_types())  # what the C quantizers make
WEIGHTED_TYPES = BLOCK_TYPES - {GGMLQuantizationType.Q8_0}  # Q8_0 ignores importance weights, as in llama.cpp


def block_info(qtype: GGMLQuantizationType) -> tuple[str, int, int]:
    """(name, elements per block, bytes per block) from the C type table."""
    return _native.block_info(int(qtype))


def quantize(rows: np.ndarray, qtype: GGMLQuantizationType, threads: int | None = None, importance: np.ndarray | None = None) -> np.ndarray:
    """Quantize (n_rows, n_per_row) float32 or float16 rows into (n_rows, row_bytes) uint8 blocks.

    importance: None, or (n_per_row,) per-column weights for every row — the values llama-quantize
    passes its quantizers for the tensor (an imatrix entry's sums divided by its call count); with
    them every type but Q8_0 runs llama.cpp's imatrix-weighted algorithm. float16 rows are widened
    inside the threads (exactly), not by numpy. Raises FloatingPointError naming the row and
    column of a NaN or Inf, ValueError for a non-finite importance weight.
    """
    src_f16 = rows.dtype == np.float16
    rows = np.ascontiguousarray(rows, dtype=np.float16 if src_f16 else np.float32)
    if rows.ndim == 1:
        rows = rows[None, :]
    n_rows, n_per_row = rows.shape
    _, elems, nbytes = block_info(qtype)
    out = np.empty((n_rows, n_per_row // elems * nbytes), dtype=np.uint8)
    if importance is not None:
        importance = np.ascontiguousarray(importance, dtype=np.float32)
    _native.quantize_into(int(qtype), rows, n_rows, n_per_row, out, threads or default_threads(), importance, src_f16)
    return out


def dequantize(data: np.ndarray, qtype: GGMLQuantizationType, n_per_row: int) -> np.ndarray:
    """(n_rows, row_bytes) uint8 blocks → (n_rows, n_per_row) float32."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    _, elems, nbytes = block_info(qtype)
    n_values = data.size // nbytes * elems
    out = np.empty(n_values, dtype=np.float32)
    _native.dequantize_into(int(qtype), data, n_values, out)
    return out.reshape(-1, n_per_row)


def fp32_to_fp16_bits(values: np.ndarray) -> np.ndarray:
    """The C side's fp32 → fp16 rounding, as uint16 bit patterns (for tests)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    out = np.empty(values.shape, dtype=np.uint16)
    _native.fp32_to_fp16_into(values, out)
    return out

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


# ---- codes inside blocks (native/codes.h): GPTQ rounding on the GGUF block grids ----

LEGACY_PART_TYPES = frozenset({GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q5_0, GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q5_1})


def code_info(qtype: GGMLQuantizationType) -> tuple[int, int]:
    """(bits, zero): a value's code is 0 .. 2^bits − 1 and it dequantizes to s·(code − zero) + o."""
    return _native.code_info(int(qtype))


def block_codes(blocks: np.ndarray, qtype: GGMLQuantizationType, n_per_row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_rows, row_bytes) blocks → each value's code (uint8) and its block's s and o (float32), (n_rows, n_per_row) each."""
    blocks = np.ascontiguousarray(blocks, dtype=np.uint8)
    n_rows = blocks.shape[0] if blocks.ndim > 1 else 1
    codes = np.empty((n_rows, n_per_row), dtype=np.uint8)
    s = np.empty((n_rows, n_per_row), dtype=np.float32)
    o = np.empty((n_rows, n_per_row), dtype=np.float32)
    _native.block_codes(int(qtype), blocks, n_rows * n_per_row, codes, s, o)
    return codes, s, o


def set_block_codes(blocks: np.ndarray, qtype: GGMLQuantizationType, codes: np.ndarray) -> None:
    """Write (n_rows, n_per_row) codes into the (n_rows, row_bytes) blocks in place; scales unchanged."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    _native.block_set_codes(int(qtype), blocks, codes.size, codes)


def row_sigma2(rows: np.ndarray) -> np.ndarray:
    """Each row's mean square, as the weighted Q4_0/Q5_0/Q4_1/Q5_1 quantizers compute it (bit for bit)."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    out = np.empty(rows.shape[0], dtype=np.float32)
    _native.row_sigma2_into(rows, rows.shape[0], rows.shape[1], out)
    return out


def quantize_part_weighted(rows: np.ndarray, qtype: GGMLQuantizationType, importance: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """The weighted Q4_0/Q5_0/Q4_1/Q5_1 blocks of parts of rows, row i fitted with sigma2[i], its whole
    row's (row_sigma2): what quantize() writes for those columns of the whole rows."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    n_rows, n = rows.shape
    _, elems, nbytes = block_info(qtype)
    out = np.empty((n_rows, n // elems * nbytes), dtype=np.uint8)
    _native.quantize_part_weighted(int(qtype), rows, n_rows, n, out, np.ascontiguousarray(importance, dtype=np.float32), np.ascontiguousarray(sigma2, dtype=np.float32))
    return out

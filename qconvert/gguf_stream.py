"""Write a GGUF file tensor by tensor, in slabs of rows, so memory stays bounded by a slab.

Callers describe each output tensor (name, shape, output type) and how to read any range of its
rows as float values; the header, metadata and tensor table are written first (their sizes are
known from the shapes), then each tensor's data, slab by slab: read → encode → append.

A 3-D tensor is a stack of matrices (llama.cpp's MoE experts, numpy shape (n_expert, rows,
row_len)), written as n_expert × rows rows; its importance weights may give each matrix its own
row of weights, as llama-quantize hands each expert its own slice of the imatrix entry.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, quants

from qconvert.errors import QConvertError
from qconvert.quant import kernels
from qconvert.quant.rows import RowLayout

SLAB_VALUES = 8 << 20  # source values per slab: 32 MiB of float32
_FLOAT_TYPES = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}


@dataclass(frozen=True, eq=False)
class TensorSource(RowLayout):
    name: str
    shape: tuple[int, ...]  # numpy (row-major) shape; the last axis is the row
    out_type: GGMLQuantizationType
    read_rows: Callable[[int, int], np.ndarray]  # rows [start, end) as float16/float32, (end-start, row_len)
    # per-column weights for the imatrix-weighted quantizers: (row_len,) for every row, or
    # (n_mat * row_len,) for a 3-D tensor, matrix (expert) i's rows weighted by the i-th row_len values
    importance: np.ndarray | None = None
    # rows [start, end) already encoded as out_type, (end-start, row_bytes) uint8: written as they are
    # (tensors quantized elsewhere, e.g. by GPTQ inside the blocks); read_rows is then not used
    read_encoded: Callable[[int, int], np.ndarray] | None = None

    def importance_runs(self, start: int, end: int) -> list[tuple[int, int, np.ndarray | None]]:
        """Rows [start, end) cut where the importance weights change (at matrix boundaries), each
        run with its weights: llama-quantize's chunks never cross an expert either."""
        if self.importance is None or self.importance.size == self.row_len:
            return [(start, end, self.importance)]
        per_mat = self.importance.reshape(-1, self.row_len)
        rows = self.n_rows // len(per_mat)
        cuts = [start, *range((start // rows + 1) * rows, end, rows), end]
        return [(a, b, per_mat[a // rows]) for a, b in zip(cuts, cuts[1:])]


def encode_rows(values: np.ndarray, out_type: GGMLQuantizationType, threads: int, importance: np.ndarray | None = None) -> np.ndarray:
    """Float rows → the bytes of `out_type`. F16 is numpy's round-to-nearest-even cast, as
    convert_hf_to_gguf.py does; BF16 the gguf package's (same as ggml_compute_fp32_to_bf16)."""
    if out_type in _FLOAT_TYPES:
        return np.ascontiguousarray(values, dtype=_FLOAT_TYPES[out_type])
    if out_type == GGMLQuantizationType.BF16:
        return quants.quantize(np.ascontiguousarray(values, dtype=np.float32), out_type)
    return kernels.quantize(values, out_type, threads, importance)


def decoded_rows(t: TensorSource, ids: np.ndarray, threads: int) -> np.ndarray:
    """Rows `ids` (sorted, unique) of a 2-D block-typed tensor as a reader of the file will decode
    them: each row is encoded alone, so these are the written rows' values."""
    step, picked = _slab_rows(t), []
    for start in range(0, t.n_rows, step):
        wanted = ids[(ids >= start) & (ids < start + step)]
        if len(wanted):
            picked.append(t.read_rows(start, min(start + step, t.n_rows))[wanted - start])
    values = np.ascontiguousarray(np.concatenate(picked), dtype=np.float32)
    return kernels.dequantize(encode_rows(values, t.out_type, threads, t.importance), t.out_type, t.row_len)


def _slab_rows(t: TensorSource) -> int:
    return max(1, SLAB_VALUES // max(1, t.row_len))


def _check_finite(encoded: np.ndarray, t: TensorSource, start: int) -> None:
    """The weighted fits can push a block's fp16 scale past its range on extreme weights; llama-quantize
    validates its output and stops there, and so does this."""
    decoded = kernels.dequantize(encoded, t.out_type, t.row_len)
    if not np.isfinite(decoded).all():
        row = int(np.argwhere(~np.isfinite(decoded))[0][0])
        raise QConvertError(
            f"tensor {t.name}, row {start + row}: the importance-weighted {t.out_type.name} scales overflow fp16", "quantization", "quantize without --imatrix, or check the weights for extreme values"
        )


def _write_tensor(w: GGUFWriter, t: TensorSource, threads: int, bar) -> None:
    fout = w.fout[0]  # the writer's open file: data is appended slab by slab, not tensor by tensor
    w.write_padding(fout, fout.tell())  # data offsets are aligned, as GGUFWriter writes them
    step = _slab_rows(t)
    for start in range(0, t.n_rows, step):
        end = min(start + step, t.n_rows)
        if t.read_encoded is not None:
            fout.write(memoryview(np.ascontiguousarray(t.read_encoded(start, end))).cast("B"))
            bar.update((end - start) * t.row_len)
            continue
        values = t.read_rows(start, end)
        for a, b, importance in t.importance_runs(start, end):
            run = values[a - start : b - start]
            try:
                encoded = encode_rows(run, t.out_type, threads, importance)
            except FloatingPointError:
                row, col = np.argwhere(~np.isfinite(run))[0]
                raise QConvertError(
                    f"tensor {t.name} has a NaN or Inf at row {a + row}, column {col}", "weights", "the checkpoint is damaged; fix or re-export it"
                ) from None
            if importance is not None and t.out_type in kernels.WEIGHTED_TYPES:
                _check_finite(encoded, t, a)
            fout.write(memoryview(np.ascontiguousarray(encoded)).cast("B"))  # not tofile: its short write has no errno
        bar.update((end - start) * t.row_len)
    w.write_padding(fout, t.n_rows * t.row_bytes)


def write_gguf(
    path: Path, arch: str, add_metadata: Callable[[GGUFWriter], None], tensors: list[TensorSource], threads: int, progress: bool
) -> None:
    """Write the GGUF file `path`: metadata from `add_metadata`, then `tensors` in order."""
    w = GGUFWriter(path, arch)
    try:
        add_metadata(w)
        for t in tensors:
            # As raw bytes, any type takes the same route: (rows..., row_bytes) uint8.
            w.add_tensor_info(t.name, (*t.shape[:-1], t.row_bytes), np.dtype(np.uint8), t.n_rows * t.row_bytes, raw_dtype=t.out_type)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        total = sum(t.n_rows * t.row_len for t in tensors)
        from tqdm import tqdm  # here, not at the top: its import costs a noticeable part of a short run

        with tqdm(total=total, desc=f"writing {path.name}", unit="weight", unit_scale=True, disable=not progress) as bar:
            for t in tensors:
                _write_tensor(w, t, threads, bar)
    finally:
        w.close()

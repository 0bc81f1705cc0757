"""Write a GGUF file tensor by tensor, in slabs of rows, so memory stays bounded by a slab.

Callers describe each output tensor (name, shape, output type) and how to read any range of its
rows as float values; the header, metadata and tensor table are written first (their sizes are
known from the shapes), then each tensor's data, slab by slab: read → encode → append.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, quants

from qconvert.errors import QConvertError
from qconvert.quant import kernels

SLAB_VALUES = 8 << 20  # source values per slab: 32 MiB of float32
_FLOAT_TYPES = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}


@dataclass(frozen=True, eq=False)
class TensorSource:
    name: str
    shape: tuple[int, ...]  # numpy (row-major) shape; the last axis is the row
    out_type: GGMLQuantizationType
    read_rows: Callable[[int, int], np.ndarray]  # rows [start, end) as float16/float32, (end-start, row_len)
    importance: np.ndarray | None = None  # per-column weights (row_len,) for the imatrix-weighted quantizers

    @property
    def row_len(self) -> int:
        return self.shape[-1]

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.shape[:-1], dtype=np.int64))

    @property
    def row_bytes(self) -> int:
        block, nbytes = GGML_QUANT_SIZES[self.out_type]
        return self.row_len // block * nbytes


def encode_rows(values: np.ndarray, out_type: GGMLQuantizationType, threads: int, importance: np.ndarray | None = None) -> np.ndarray:
    """Float rows → the bytes of `out_type`. F16 is numpy's round-to-nearest-even cast, as
    convert_hf_to_gguf.py does; BF16 the gguf package's (same as ggml_compute_fp32_to_bf16)."""
    if out_type in _FLOAT_TYPES:
        return np.ascontiguousarray(values, dtype=_FLOAT_TYPES[out_type])
    if out_type == GGMLQuantizationType.BF16:
        return quants.quantize(np.ascontiguousarray(values, dtype=np.float32), out_type)
    return kernels.quantize(values, out_type, threads, importance)


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
        values = t.read_rows(start, end)
        try:
            encoded = encode_rows(values, t.out_type, threads, t.importance)
        except FloatingPointError:
            row, col = np.argwhere(~np.isfinite(values))[0]
            raise QConvertError(
                f"tensor {t.name} has a NaN or Inf at row {start + row}, column {col}", "weights", "the checkpoint is damaged; fix or re-export it"
            ) from None
        if t.importance is not None and t.out_type in kernels.WEIGHTED_TYPES:
            _check_finite(encoded, t, start)
        encoded.tofile(fout)
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

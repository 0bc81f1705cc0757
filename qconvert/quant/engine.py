"""Write a quantized GGUF file with the native file engine (native/engine.h).

Python plans: the output's header, metadata and tensor table are written here with gguf's
GGUFWriter, and each tensor's place in both files is computed from the checked input header and
the block table. The engine then fills in all tensor data on its own threads — read, widen, check,
quantize, write at the final offset — while this thread shows progress and watches for Ctrl-C.
"""

import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFEndian, GGUFValueType, GGUFWriter

from qconvert import _native
from qconvert.errors import QConvertError

REPAIR_HINT = "re-convert or re-download it"


@dataclass(frozen=True, eq=False)
class PlannedTensor:
    """One tensor of the output: where its source is in the input file and what it becomes."""

    name: str
    shape: tuple[int, ...]  # numpy (row-major) shape; the last axis is the row
    src_type: GGMLQuantizationType  # F32, F16 or BF16
    src_offset: int  # absolute offset of its data in the input file
    out_type: GGMLQuantizationType
    # per-column weights for the imatrix-weighted quantizers: (row_len,) for every row, or
    # (n_mat * row_len,) for a 3-D tensor, matrix (expert) i's rows weighted by the i-th row_len values
    importance: np.ndarray | None = None

    @property
    def row_len(self) -> int:
        return self.shape[-1]

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.shape[:-1], dtype=np.int64))

    @property
    def n_mat(self) -> int:
        """Matrices stacked in the tensor: the experts of a 3-D tensor, else 1."""
        return self.shape[0] if len(self.shape) == 3 else 1

    @property
    def row_bytes(self) -> int:
        block, nbytes = GGML_QUANT_SIZES[self.out_type]
        return self.row_len // block * nbytes


class _MetadataWriter(GGUFWriter):
    """GGUFWriter with its metadata arrays packed in one call each instead of one per item: the same
    bytes, but a tokenizer's 50,000-150,000 tokens and merges take milliseconds, not a tenth of a
    second — a large part of quantizing a small model."""

    def _pack_val(self, val, vtype: GGUFValueType, add_vtype: bool, sub_type: GGUFValueType | None = None) -> bytes:
        fmt = self._simple_value_packing.get(sub_type)
        if vtype != GGUFValueType.ARRAY or not isinstance(val, Sequence) or not val or self.endianess != GGUFEndian.LITTLE or not (fmt or sub_type == GGUFValueType.STRING):
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        head = struct.pack("<IQ", sub_type, len(val))
        if add_vtype:
            head = struct.pack("<I", vtype) + head
        if sub_type == GGUFValueType.STRING:
            items = [v.encode("utf-8") if isinstance(v, str) else v for v in val]
            return head + b"".join(struct.pack("<Q", len(b)) + b for b in items)
        return head + struct.pack(f"<{len(val)}{fmt}", *val)


def write_quantized(
    src: Path, dst: Path, arch: str, add_metadata: Callable[[GGUFWriter], None], plan: list[PlannedTensor], threads: int, progress: bool
) -> dict[str, float]:
    """Write the GGUF file `dst`: metadata from `add_metadata`, then the planned tensors from `src`.
    Returns where the time went: "header" and "engine" in wall seconds, and the engine's phases
    "read", "widen" (and check), "quantize" and "write" in thread-seconds."""
    start = time.perf_counter()
    w = _MetadataWriter(dst, arch)
    try:
        add_metadata(w)
        for t in plan:  # as raw bytes, any type takes the same route: (rows..., row_bytes) uint8
            w.add_tensor_info(t.name, (*t.shape[:-1], t.row_bytes), np.dtype(np.uint8), t.n_rows * t.row_bytes, raw_dtype=t.out_type)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        data_start = GGUFWriter.ggml_pad(w.fout[0].tell(), w.data_alignment)
        alignment = w.data_alignment
    finally:
        w.close()
    jobs, offset = [], data_start
    for t in plan:  # the offsets GGUFWriter wrote into the tensor table: each tensor padded to the alignment
        importance = None if t.importance is None else np.ascontiguousarray(t.importance, dtype=np.float32)
        jobs.append((t.src_offset, int(t.src_type), int(t.out_type), t.n_rows, t.row_len, offset, importance, t.n_mat if importance is not None else 1))
        offset += GGUFWriter.ggml_pad(t.n_rows * t.row_bytes, alignment)
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        os.ftruncate(fout.fileno(), offset)  # padding between tensors reads as zeros, as GGUFWriter writes it
        engine_start = time.perf_counter()
        phases = _run(fin.fileno(), fout.fileno(), jobs, plan, threads, progress, src, dst)
    return {"header": engine_start - start, "engine": time.perf_counter() - engine_start, **phases}


def _run(in_fd: int, out_fd: int, jobs: list, plan: list[PlannedTensor], threads: int, progress: bool, src: Path, dst: Path) -> dict[str, float]:
    """The engine on the jobs, with a progress bar if asked, its errors as one-line QConvertErrors."""
    try:
        if not progress:
            return _native.quantize_file(in_fd, out_fd, jobs, threads, None, str(src), str(dst))
        from tqdm import tqdm  # only here: its import costs a noticeable part of a short run

        with tqdm(total=sum(t.n_rows * t.row_len for t in plan), desc=f"writing {dst.name}", unit="weight", unit_scale=True) as bar:
            return _native.quantize_file(in_fd, out_fd, jobs, threads, lambda done: bar.update(done - bar.n), str(src), str(dst))
    except FloatingPointError as exc:
        i, row, col = exc.args
        raise QConvertError(f"tensor {plan[i].name} has a NaN or Inf at row {row}, column {col}", "weights", "the checkpoint is damaged; fix or re-export it") from None
    except OverflowError as exc:
        i, row = exc.args
        raise QConvertError(
            f"tensor {plan[i].name}, row {row}: the importance-weighted {plan[i].out_type.name} scales overflow fp16",
            "quantization",
            "quantize without --imatrix, or check the weights for extreme values",
        ) from None
    except EOFError as exc:
        raise QConvertError(f"tensor {plan[exc.args[0]].name} lies past the end of the file (truncated)", src, REPAIR_HINT) from None
    except OSError as exc:
        if exc.filename == str(src):
            raise QConvertError(f"cannot read: {exc.strerror or exc}", src) from exc
        raise

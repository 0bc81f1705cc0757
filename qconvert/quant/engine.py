"""Write a quantized GGUF file with the native file engine (native/engine.h).

Python plans: the output's header, metadata and tensor table are written here (built by
qconvert.quant.gguf_header), and each tensor's place in both files is computed from the checked
input header and the block table. The engine then fills in all tensor data on its own threads —
read, widen, check, quantize, write at the final offset — while this thread shows progress and
watches for Ctrl-C.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qconvert import _native
from qconvert.errors import QConvertError
from qconvert.ggml_types import GGMLQuantizationType
from qconvert.quant.gguf_header import Metadata, gguf_header
from qconvert.quant.rows import RowLayout

REPAIR_HINT = "re-convert or re-download it"


@dataclass(frozen=True, eq=False)
class PlannedTensor(RowLayout):
    """One tensor of the output: where its source is in the input file and what it becomes."""

    name: str
    shape: tuple[int, ...]  # numpy (row-major) shape; the last axis is the row
    src_type: GGMLQuantizationType  # F32, F16 or BF16
    src_offset: int  # absolute offset of its data in the input file
    out_type: GGMLQuantizationType
    # per-column weights for the imatrix-weighted quantizers: (row_len,) for every row, or
    # (n_mat * row_len,) for a 3-D tensor, matrix (expert) i's rows weighted by the i-th row_len values
    importance: np.ndarray | None = None


def write_quantized(src: Path, dst: Path, metadata: Metadata, alignment: int, plan: list[PlannedTensor], threads: int, progress: bool) -> dict[str, float]:
    """Write the GGUF file `dst`: `metadata`, then the planned tensors from `src`, each at an offset
    aligned to `alignment`. Returns where the time went: "header" and "engine" in wall seconds, and
    the engine's phases "read", "widen" (and check), "quantize" and "write" in thread-seconds."""
    start = time.perf_counter()
    head, offsets, size = gguf_header(metadata, [(t.name, t.shape, t.out_type, t.n_rows * t.row_bytes) for t in plan], alignment)
    jobs = []
    for t, offset in zip(plan, offsets):
        importance = None if t.importance is None else np.ascontiguousarray(t.importance, dtype=np.float32)
        jobs.append((t.src_offset, int(t.src_type), int(t.out_type), t.n_rows, t.row_len, offset, importance, t.n_mat if importance is not None else 1))
    with open(src, "rb") as fin, open(dst, "w+b") as fout:
        fout.write(head)
        fout.flush()
        os.ftruncate(fout.fileno(), size)  # the padding between tensors reads as zeros
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

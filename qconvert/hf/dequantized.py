"""A quantized checkpoint seen as the dense checkpoint it encodes, so that every stage reads GPTQ
and AWQ checkpoints the way it reads fp16 ones: `ppl`, `load` and `gguf` alike.

Each quantized linear's packed tensors (qweight, qzeros, scales, and GPTQ's g_idx) are replaced by
one float32 `.weight` entry, unpacked when it is read; every other tensor passes through.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qconvert.awq.config import PACKED_WIDTH
from qconvert.awq.packing import dequantize_gemm
from qconvert.errors import QConvertError
from qconvert.gptq.packing import PACK, dequantize_linear
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint, TensorEntry

# checkpoint_format → what the stored zero points lack (v1 stores zero − 1)
_GPTQ_ZERO_OFFSET = {"gptq": 1, "gptq_v2": 0}


@dataclass(frozen=True)
class PackedFormat:
    leaves: tuple[str, ...]  # the tensors of one quantized linear, qweight first
    dense_shape: Callable[[tuple[int, ...]], tuple[int, int]]  # qweight's shape → (out, in)
    dequantize: Callable[..., torch.Tensor]  # the leaves, by name → (out, in) float32


def gptq_format(bits: int, zero_offset: int) -> PackedFormat:
    return PackedFormat(
        ("qweight", "qzeros", "scales", "g_idx"),
        lambda shape: (shape[1], shape[0] * PACK // bits),
        lambda qweight, qzeros, scales, g_idx: dequantize_linear(qweight, qzeros, scales, g_idx, bits, zero_offset),
    )


AWQ_GEMM = PackedFormat(("qweight", "qzeros", "scales"), lambda shape: (shape[1] * PACKED_WIDTH, shape[0]), dequantize_gemm)


class DequantizedCheckpoint:
    """The SafetensorsCheckpoint interface (entries, read_rows, load) over a GPTQ or AWQ checkpoint."""

    def __init__(self, ckpt: SafetensorsCheckpoint, fmt: PackedFormat):
        self.ckpt, self.fmt = ckpt, fmt
        self.entries: dict[str, TensorEntry] = {}
        self.dense: set[str] = set()
        for name, e in ckpt.entries.items():
            prefix, _, leaf = name.rpartition(".")
            if leaf not in fmt.leaves:
                self.entries[name] = e
            elif leaf == "qweight":
                weight = f"{prefix}.weight"
                out_features, in_features = fmt.dense_shape(e.shape)
                self.entries[weight] = TensorEntry(weight, "F32", (out_features, in_features), e.file, e.offset, out_features * in_features * 4)
                self.dense.add(weight)
        self._cached: tuple[str, np.ndarray] | None = None

    def _dense(self, name: str) -> np.ndarray:
        if self._cached is None or self._cached[0] != name:
            prefix = name.rsplit(".", 1)[0]
            parts = {}
            for leaf in self.fmt.leaves:
                if f"{prefix}.{leaf}" not in self.ckpt.entries:
                    raise QConvertError(f"quantized linear {prefix} has no {leaf}", self.ckpt.entries[f"{prefix}.qweight"].file, "the checkpoint is incomplete")
                parts[leaf] = torch.from_numpy(self.ckpt.load(f"{prefix}.{leaf}"))
            try:
                w = self.fmt.dequantize(**parts)
            except RuntimeError as exc:  # shapes that do not fit together
                raise QConvertError(f"packed tensors of {prefix} do not fit together: {exc}".splitlines()[0], self.ckpt.entries[f"{prefix}.qweight"].file) from None
            if tuple(w.shape) != self.entries[name].shape:
                raise QConvertError(f"packed tensors of {prefix} do not fit together", self.ckpt.entries[f"{prefix}.qweight"].file)
            self._cached = (name, w.numpy())
        return self._cached[1]

    def read_rows(self, name: str, start: int, end: int, row_order: np.ndarray | None = None) -> np.ndarray:
        if name not in self.dense:
            return self.ckpt.read_rows(name, start, end, row_order)
        w = self._dense(name)
        return w[start:end] if row_order is None else w[row_order[start:end]]

    def load(self, name: str) -> np.ndarray:
        return self.read_rows(name, 0, self.entries[name].rows_shape[0]).reshape(self.entries[name].shape)


Checkpoint = SafetensorsCheckpoint | DequantizedCheckpoint  # what open_checkpoint gives: entries, read_rows, load


def open_checkpoint(model_dir: Path, raw_config: dict[str, Any]) -> Checkpoint:
    """The checkpoint in `model_dir` as dense tensors, whether it is quantized or not."""
    ckpt = SafetensorsCheckpoint.open(model_dir)
    qc = raw_config.get("quantization_config")
    if not qc:
        return ckpt
    method, bits = qc.get("quant_method"), qc.get("bits")
    if method == "awq":
        version = qc.get("version", "gemm")
        if version != "gemm" or bits != 4:
            raise QConvertError(f"AWQ {version!r} at {bits!r} bits is not supported", model_dir / "config.json", "qconvert reads 4-bit AWQ GEMM checkpoints")
        return DequantizedCheckpoint(ckpt, AWQ_GEMM)
    fmt = qc.get("checkpoint_format", qc.get("format", "gptq"))
    if method != "gptq" or fmt not in _GPTQ_ZERO_OFFSET:
        raise QConvertError(
            f"quantization method {method!r} (format {fmt!r}) is not supported", model_dir / "config.json", "qconvert reads GPTQ (gptq, gptq_v2) and AWQ GEMM checkpoints"
        )
    if bits not in (2, 3, 4, 8):
        raise QConvertError(f"GPTQ bits {bits!r} is not 2, 3, 4 or 8", model_dir / "config.json")
    return DequantizedCheckpoint(ckpt, gptq_format(bits, _GPTQ_ZERO_OFFSET[fmt]))

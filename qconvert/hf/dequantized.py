"""A quantized checkpoint seen as the dense checkpoint it encodes, so that every stage reads GPTQ
checkpoints (AWQ next) the way it reads fp16 ones: `ppl`, `load` and `gguf` alike.

Each quantized linear's packed tensors (qweight, qzeros, scales, g_idx) are replaced by one float32
`.weight` entry, unpacked when it is read; every other tensor passes through.
"""

from pathlib import Path
from typing import Any

import numpy as np
import torch

from qconvert.errors import QConvertError
from qconvert.gptq.packing import PACK, dequantize_linear
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint, TensorEntry

PACKED = ("qweight", "qzeros", "scales", "g_idx")
# checkpoint_format → what the stored zero points lack (v1 stores zero − 1)
_GPTQ_ZERO_OFFSET = {"gptq": 1, "gptq_v2": 0}


class DequantizedCheckpoint:
    """The SafetensorsCheckpoint interface (entries, read_rows, load) over a GPTQ checkpoint."""

    def __init__(self, ckpt: SafetensorsCheckpoint, bits: int, zero_offset: int):
        self.ckpt, self.bits, self.zero_offset = ckpt, bits, zero_offset
        self.entries: dict[str, TensorEntry] = {}
        self.dense: set[str] = set()
        for name, e in ckpt.entries.items():
            prefix, _, leaf = name.rpartition(".")
            if leaf not in PACKED:
                self.entries[name] = e
            elif leaf == "qweight":
                weight = f"{prefix}.weight"
                out_features, in_features = e.shape[1], e.shape[0] * PACK // bits
                self.entries[weight] = TensorEntry(weight, "F32", (out_features, in_features), e.file, e.offset, out_features * in_features * 4)
                self.dense.add(weight)
        self._cached: tuple[str, np.ndarray] | None = None

    def _dense(self, name: str) -> np.ndarray:
        if self._cached is None or self._cached[0] != name:
            prefix = name.rsplit(".", 1)[0]
            parts = {}
            for leaf in PACKED:
                if f"{prefix}.{leaf}" not in self.ckpt.entries:
                    raise QConvertError(f"quantized linear {prefix} has no {leaf}", self.ckpt.entries[f"{prefix}.qweight"].file, "the checkpoint is incomplete")
                parts[leaf] = torch.from_numpy(self.ckpt.load(f"{prefix}.{leaf}"))
            w = dequantize_linear(parts["qweight"], parts["qzeros"], parts["scales"], parts["g_idx"], self.bits, self.zero_offset)
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
    method = qc.get("quant_method")
    fmt = qc.get("checkpoint_format", qc.get("format", "gptq"))
    if method != "gptq" or fmt not in _GPTQ_ZERO_OFFSET:
        raise QConvertError(
            f"quantization method {method!r} (format {fmt!r}) is not supported", model_dir / "config.json", "qconvert reads GPTQ checkpoints (gptq, gptq_v2 formats)"
        )
    bits = qc.get("bits")
    if bits not in (2, 3, 4, 8):
        raise QConvertError(f"GPTQ bits {bits!r} is not 2, 3, 4 or 8", model_dir / "config.json")
    return DequantizedCheckpoint(ckpt, bits, _GPTQ_ZERO_OFFSET[fmt])

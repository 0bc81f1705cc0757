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
from qconvert.errors import QConvertError, quoted
from qconvert.gptq.packing import PACK, dequantize_linear
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint, TensorEntry

# checkpoint_format → what the stored zero points lack (v1 stores zero − 1)
_GPTQ_ZERO_OFFSET = {"gptq": 1, "gptq_v2": 0}


@dataclass(frozen=True)
class PackedFormat:
    leaves: tuple[str, ...]  # the tensors of one quantized linear, qweight first
    shapes: Callable[[dict[str, tuple[int, ...]]], tuple[tuple[int, int], dict[str, tuple[int, ...]]]]
    # the leaves' shapes → (out, in), and the shape each leaf must have; ValueError when qweight's own shape cannot be
    dequantize: Callable[..., torch.Tensor]  # the leaves, by name → (out, in) float32


def _matrix(shape: tuple[int, ...], leaf: str) -> tuple[int, int]:
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"{leaf} has the shape {list(shape)}, not a non-empty matrix")
    return shape


def gptq_format(bits: int, zero_offset: int) -> PackedFormat:
    # 32 values fill `bits` int32 words: a packed axis holds a whole number of such runs
    def shapes(leaf_shapes: dict[str, tuple[int, ...]]) -> tuple[tuple[int, int], dict[str, tuple[int, ...]]]:
        rows, out = _matrix(leaf_shapes["qweight"], "qweight")
        groups, zero_words = _matrix(leaf_shapes["qzeros"], "qzeros")
        if rows % (bits if PACK % bits else 1) or zero_words % (bits if PACK % bits else 1):
            raise ValueError(f"qweight {list(leaf_shapes['qweight'])} or qzeros {list(leaf_shapes['qzeros'])} is not whole runs of {bits}-bit values")
        n_in = rows * PACK // bits
        return (out, n_in), {"qzeros": (groups, out * bits // PACK), "scales": (groups, out), "g_idx": (n_in,)}

    return PackedFormat(
        ("qweight", "qzeros", "scales", "g_idx"),
        shapes,
        lambda qweight, qzeros, scales, g_idx: dequantize_linear(qweight, qzeros, scales, g_idx, bits, zero_offset),
    )


def _awq_shapes(leaf_shapes: dict[str, tuple[int, ...]]) -> tuple[tuple[int, int], dict[str, tuple[int, ...]]]:
    n_in, words = _matrix(leaf_shapes["qweight"], "qweight")
    groups = _matrix(leaf_shapes["qzeros"], "qzeros")[0]
    if n_in % groups:
        raise ValueError(f"its {n_in} inputs do not split into the {groups} groups of qzeros")
    return (words * PACKED_WIDTH, n_in), {"qzeros": (groups, words), "scales": (groups, words * PACKED_WIDTH)}


AWQ_GEMM = PackedFormat(("qweight", "qzeros", "scales"), _awq_shapes, dequantize_gemm)
_LEAF_DTYPES = {"qweight": ("I32",), "qzeros": ("I32",), "g_idx": ("I32",), "scales": ("F16", "F32", "BF16")}


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
                if weight in ckpt.entries:
                    raise QConvertError(f"{weight} is stored both dense and packed", e.file, "the checkpoint is damaged: re-download or re-save it")
                out_features, in_features = self._check_linear(prefix)
                self.entries[weight] = TensorEntry(weight, "F32", (out_features, in_features), e.file, e.offset, out_features * in_features * 4)
                self.dense.add(weight)
        for name, e in ckpt.entries.items():  # a packed tensor whose linear has no qweight
            prefix, _, leaf = name.rpartition(".")
            if leaf in fmt.leaves and f"{prefix}.qweight" not in ckpt.entries:
                raise QConvertError(f"quantized linear {prefix} has {leaf} but no qweight", e.file, "the checkpoint is incomplete")
        self._cached: tuple[str, np.ndarray] | None = None

    def _check_linear(self, prefix: str) -> tuple[int, int]:
        """(out, in) of a quantized linear, once its packed tensors are all there, of their dtypes, and
        of shapes that fit together (read from the header: nothing is loaded)."""
        entries = self.ckpt.entries
        where = entries[f"{prefix}.qweight"].file
        for leaf in self.fmt.leaves:
            e = entries.get(f"{prefix}.{leaf}")
            if e is None:
                raise QConvertError(f"quantized linear {prefix} has no {leaf}", where, "the checkpoint is incomplete")
            if e.dtype not in _LEAF_DTYPES[leaf]:
                raise QConvertError(f"{prefix}.{leaf} is {e.dtype}, not {' or '.join(_LEAF_DTYPES[leaf])}", e.file, "the checkpoint is damaged: re-download or re-save it")
        leaf_shapes = {leaf: entries[f"{prefix}.{leaf}"].shape for leaf in self.fmt.leaves}
        try:
            dense, expected = self.fmt.shapes(leaf_shapes)
        except ValueError as exc:
            raise QConvertError(f"packed tensors of {prefix} do not fit together: {exc}", where, "the checkpoint is damaged: re-download or re-save it") from None
        for leaf, shape in expected.items():
            if tuple(leaf_shapes[leaf]) != shape:
                raise QConvertError(
                    f"packed tensors of {prefix} do not fit together: {leaf} has the shape {list(leaf_shapes[leaf])}, and qweight {list(leaf_shapes['qweight'])} asks for {list(shape)}",
                    where, "the checkpoint is damaged: re-download or re-save it",
                )
        return dense

    def _dense(self, name: str) -> np.ndarray:
        if self._cached is None or self._cached[0] != name:
            prefix = name.rsplit(".", 1)[0]
            parts = {leaf: torch.from_numpy(self.ckpt.load(f"{prefix}.{leaf}")) for leaf in self.fmt.leaves}
            if "g_idx" in parts:  # each input's group: an index into the scales and zeros
                n_groups = parts["scales"].shape[0]
                g = parts["g_idx"]
                if g.numel() and (int(g.min()) < 0 or int(g.max()) >= n_groups):
                    bad = int(g.min()) if int(g.min()) < 0 else int(g.max())
                    raise QConvertError(f"{prefix}.g_idx names group {bad}, but the linear has {n_groups} groups", self.ckpt.entries[f"{prefix}.g_idx"].file,
                                        "the checkpoint is damaged: re-download or re-save it")
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
    where = model_dir / "config.json"
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise QConvertError(f"quantization_config's bits is {quoted(bits)}, not an integer", where, "qconvert reads GPTQ (gptq, gptq_v2) and AWQ GEMM checkpoints")
    if method == "awq":
        version = qc.get("version", "gemm")
        if version != "gemm" or bits != 4:
            raise QConvertError(f"AWQ {quoted(version)} at {bits} bits is not supported", where, "qconvert reads 4-bit AWQ GEMM checkpoints")
        return DequantizedCheckpoint(ckpt, AWQ_GEMM)
    fmt = qc.get("checkpoint_format", qc.get("format", "gptq"))
    if method != "gptq" or not isinstance(fmt, str) or fmt not in _GPTQ_ZERO_OFFSET:
        raise QConvertError(
            f"quantization method {quoted(method)} (format {quoted(fmt)}) is not supported", where, "qconvert reads GPTQ (gptq, gptq_v2) and AWQ GEMM checkpoints"
        )
    if bits not in (2, 3, 4, 8):
        raise QConvertError(f"GPTQ bits {bits} is not 2, 3, 4 or 8", where)
    return DequantizedCheckpoint(ckpt, gptq_format(bits, _GPTQ_ZERO_OFFSET[fmt]))

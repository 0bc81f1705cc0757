"""Mixture-of-experts tensors in GGUF: each layer's routed experts become llama.cpp's stacked 3-D
tensors (blk.N.ffn_{gate,up,down}_exps) without being stacked in memory: each is planned as a list
of row ranges of checkpoint tensors, one per expert, and its slabs are read expert by expert.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qconvert.convert.arch import DENSE_FFN, EXPERT_TENSORS, FUSED_GATE_UP, MOE_ONLY, ArchSpec, ExpertTensor
from qconvert.errors import QConvertError
from qconvert.hf.config import ModelConfig
from qconvert.hf.dequantized import Checkpoint


@dataclass(frozen=True)
class ExpertRows:
    """Rows [start, start + count) of checkpoint tensor `hf_name` seen as (rows, row_len): one expert's matrix."""

    hf_name: str
    start: int
    count: int


@dataclass(frozen=True)
class ExpertStack:
    """A stacked expert tensor, numpy shape (n_expert, rows, row_len): expert e's matrix is parts[e]."""

    shape: tuple[int, int, int]
    parts: tuple[ExpertRows, ...]


def stacked_rows(read: Callable[[int, int, int], np.ndarray], rows: int, start: int, end: int) -> np.ndarray:
    """Rows [start, end) of a stack of matrices `rows` tall, each read on its own: read(e, lo, hi) gives
    rows [lo, hi) of matrix e."""
    pieces = []
    for e in range(start // rows, (end - 1) // rows + 1):
        pieces.append(read(e, max(start - e * rows, 0), min(end - e * rows, rows)))
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def read_stacked(ckpt: Checkpoint, parts: tuple[ExpertRows, ...], start: int, end: int) -> np.ndarray:
    """Rows [start, end) of a stack of equally tall matrices: each expert's rows read from its own tensor."""

    def read(e: int, lo: int, hi: int) -> np.ndarray:
        return ckpt.read_rows(parts[e].hf_name, parts[e].start + lo, parts[e].start + hi)

    return stacked_rows(read, parts[0].count, start, end)


def expert_stacks(ckpt: Checkpoint, config: ModelConfig, found: dict[str, ExpertTensor]) -> dict[str, ExpertStack]:
    """GGUF name → stack of every routed-expert tensor, from one checkpoint tensor per expert or from
    fused 3-D ones (gate_up_proj split into its gate and up halves of each expert, as
    convert_hf_to_gguf.py does)."""
    n = config.n_experts
    if not n:
        raise QConvertError("the checkpoint has routed experts but config.json gives no expert count", "config.json", "add num_experts")
    stacks: dict[str, ExpertStack] = {}

    def add(layer: int, proj: str, shape: tuple[int, int, int], parts: list[ExpertRows]) -> None:
        name = f"blk.{layer}.{EXPERT_TENSORS[proj]}"
        if name in stacks:
            raise QConvertError(f"layer {layer} has its experts' {proj} twice (per expert and fused)", "checkpoint")
        stacks[name] = ExpertStack(shape, tuple(parts))

    per_expert: dict[tuple[int, str], dict[int, str]] = {}
    for hf_name, t in found.items():
        if t.expert is not None:
            per_expert.setdefault((t.layer, t.proj), {})[t.expert] = hf_name
            continue
        shape = ckpt.entries[hf_name].shape
        if len(shape) != 3 or shape[0] != n or (t.proj == FUSED_GATE_UP and shape[1] % 2):
            raise QConvertError(f"fused expert tensor {hf_name} has shape {shape}", "checkpoint", f"expected ({n} experts, rows, columns), gate_up_proj with an even row count")
        _, rows, cols = shape
        if t.proj == FUSED_GATE_UP:  # each expert's rows: gate's, then up's
            half = rows // 2
            add(t.layer, "gate_proj", (n, half, cols), [ExpertRows(hf_name, e * rows, half) for e in range(n)])
            add(t.layer, "up_proj", (n, half, cols), [ExpertRows(hf_name, e * rows + half, half) for e in range(n)])
        else:
            add(t.layer, t.proj, (n, rows, cols), [ExpertRows(hf_name, e * rows, rows) for e in range(n)])
    for (layer, proj), experts in sorted(per_expert.items()):
        if sorted(experts) != list(range(n)):
            raise QConvertError(
                f"layer {layer} has {proj} for experts {_ranges(sorted(experts))}, config.json says {n} experts (0-{n - 1})", "checkpoint", "is the checkpoint complete?"
            )
        shapes = {ckpt.entries[experts[e]].shape for e in range(n)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise QConvertError(f"layer {layer}'s experts have {proj} of shapes {sorted(shapes)}", "checkpoint", "every expert's matrix must have one 2-D shape")
        rows, cols = shapes.pop()
        add(layer, proj, (n, rows, cols), [ExpertRows(experts[e], 0, rows) for e in range(n)])
    return stacks


def _ranges(values: list[int]) -> str:
    return ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")


def check_moe_layout(names: set[str], spec: ArchSpec, config: ModelConfig) -> None:
    """Every layer of an MoE architecture has a router and the three stacked expert tensors (llama.cpp
    loads no dense MLP there); a dense architecture has none of them."""
    moe_names = sorted(n for n in names if n.endswith((*MOE_ONLY, *EXPERT_TENSORS.values())))
    if spec.moe is None:
        if moe_names:
            raise QConvertError(f"a {spec.gguf_arch} model with mixture-of-experts tensor {moe_names[0]}", "checkpoint", "does config.json name the right architecture?")
        return
    dense = sorted(n for n in names if n.endswith(DENSE_FFN))
    if dense:
        raise QConvertError(
            f"{dense[0]}: this {spec.gguf_arch} model has layers with a dense MLP (mlp_only_layers / decoder_sparse_step)", "checkpoint", f"llama.cpp's {spec.gguf_arch} wants experts in every layer"
        )
    shared = [n for n in moe_names if "_shexp." in n]
    if shared and not spec.moe.shared_expert:
        raise QConvertError(f"{shared[0]}: llama.cpp's {spec.gguf_arch} has no shared expert", "checkpoint", "does config.json name the right architecture?")
    for layer in range(config.num_layers):
        for tensor in ("ffn_gate_inp.weight", *EXPERT_TENSORS.values()):
            if f"blk.{layer}.{tensor}" not in names:
                raise QConvertError(f"layer {layer} lacks its experts' {tensor.split('.')[0]} tensor", "checkpoint", "is the checkpoint complete?")

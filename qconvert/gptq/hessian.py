"""The Hessian of GPTQ's layer-wise objective, H = 2·XᵀX / n, accumulated from a linear's inputs;
and the part of a layer-wise algorithm that every GPTQ-style solve shares (one Hessian per input
group, solved group by group)."""

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from qconvert import _native
from qconvert.layerwise.driver import Group, LayerCalls, real_tokens

PANELS = 8  # XᵀX is symmetric: only the upper triangle is formed, in row panels (~56% of the products)
MIN_PANEL = 128
NATIVE_BF16 = _native.gram_bf16_supported()  # AVX-512 BF16: bfloat16 products summed in float32, in C


class Hessian:
    """Running sum of xᵀx over calibration tokens (float32, upper triangle); `matrix()` gives 2·XᵀX/n.

    The scale does not change the solve (damping is relative to the diagonal); it keeps the
    numbers comparable with AutoGPTQ's when debugging.
    """

    def __init__(self, in_features: int, device: torch.device | str = "cpu"):
        self.upper = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.panel = max(MIN_PANEL, -(-in_features // PANELS))
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        """x: (tokens, in_features), any float dtype. The sums are float32 whatever the compute dtype:
        products rounded to bfloat16 made real Hessians indefinite at 1% damping. bfloat16 inputs
        on a CPU with AVX-512 BF16 go to the C kernel (exact products, 4-5× sgemm's speed here)."""
        if x.shape[0] == 0:
            return
        if NATIVE_BF16 and x.dtype == torch.bfloat16 and x.device.type == "cpu":
            gram_bf16_upper(x, self.upper)
        else:
            x = x.float()
            for i in range(0, x.shape[1], self.panel):
                self.upper[i : i + self.panel, i:].addmm_(x[:, i : i + self.panel].t(), x[:, i:])
        self.tokens += x.shape[0]

    def matrix(self) -> torch.Tensor:
        full = self.upper.triu() + self.upper.triu(1).t()
        return full * (2.0 / max(self.tokens, 1))


def gram_bf16_upper(x: torch.Tensor, upper: torch.Tensor) -> None:
    """upper's upper triangle += xᵀx for bfloat16 x (tokens, d) on the CPU (NATIVE_BF16 must hold)."""
    bits = x.contiguous().view(torch.int16).numpy().view(np.uint16)
    _native.gram_bf16_upper(bits, x.shape[0], x.shape[1], upper.numpy(), torch.get_num_threads())


class HessianGroups:
    """Layer-wise driver hooks for a solve that needs each input group's Hessian: `observe` accumulates
    it on `self.device`, `process` hands the stage's groups to `_solve` one by one (which pops it)."""

    propagate_original = False  # later layers see the rounded outputs of earlier ones

    def __init__(self, device: torch.device | str):
        self.device = device
        self.hessians: dict[Group, Hessian] = {}

    def observe(self, layer_index: int, group: Group, x: torch.Tensor, mask: torch.Tensor) -> None:
        if group not in self.hessians:
            self.hessians[group] = Hessian(x.shape[-1], self.device)
        self.hessians[group].add(real_tokens(x, mask))

    def process(self, layer_index: int, layer: nn.Module, stage: Sequence[Group], calls: LayerCalls) -> None:
        for group in stage:
            self._solve(layer_index, layer, group)

    def _solve(self, layer_index: int, layer: nn.Module, group: Group) -> None:
        raise NotImplementedError

    def finish_layer(self, layer_index: int, layer: nn.Module) -> None:
        pass

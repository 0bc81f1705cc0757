"""The rounding grid of GPTQ (AutoGPTQ's Quantizer): per-row min/max affine grids.

Scales are rounded to fp16 as they are computed, so the dequantized weights the algorithm works
with are exactly those the checkpoint's fp16 `scales` reproduce.
"""

import torch


def grid_params(w: torch.Tensor, bits: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero point of each row of `w` (rows, cols) → (rows,), (rows,) float32.

    As AutoGPTQ: the range always holds 0; sym mirrors it around 0 with zero = 2^(bits-1); an
    all-zero row gets [-1, 1]. One difference: the GPTQ v1 format stores zero-1, so an asymmetric
    zero point of 0 cannot be stored; such a row (all values ≥ ~0) gets zero 1 and a scale that
    still reaches its maximum.
    """
    maxq = (1 << bits) - 1
    zeros = torch.zeros(w.shape[0], dtype=torch.float32, device=w.device)
    xmin = torch.minimum(w.min(dim=1).values.float(), zeros)
    xmax = torch.maximum(w.max(dim=1).values.float(), zeros)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    empty = (xmin == 0) & (xmax == 0)
    xmin = torch.where(empty, -1.0, xmin)
    xmax = torch.where(empty, 1.0, xmax)
    scale = _fp16_round((xmax - xmin) / maxq)
    if sym:
        return scale, torch.full_like(scale, (maxq + 1) // 2)
    zero = torch.round(-xmin / scale)
    at_zero = zero < 1
    scale = torch.where(at_zero, _fp16_round(xmax / (maxq - 1)), scale)
    return scale, torch.where(at_zero, 1.0, zero.clamp(max=maxq))


def _fp16_round(scale: torch.Tensor) -> torch.Tensor:
    # Never round a scale to 0 (or below fp16's smallest normal): it divides.
    return scale.clamp(min=6.2e-5).half().float()


def quantize_levels(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Integer levels of `w` on the grid: clamp(round(w/scale) + zero, 0, maxq). Broadcasts."""
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return scale * (q - zero)

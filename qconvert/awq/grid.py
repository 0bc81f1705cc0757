"""AWQ's per-group quantization grid (AutoAWQ's pseudo_quantize_tensor), on float32 weights.

Asymmetric: scale = (max − min)/(2^b − 1), zero = −round(min/scale); the range need not hold 0.
Symmetric: scale = absmax/(2^(b−1) − 1), signed integers. Scales are rounded to fp16 first, as the
checkpoint stores them, so the dequantized weights here are exactly what a loader computes.
A last group narrower than the group size (an input width it does not divide) gets its own grid.
"""

from dataclasses import dataclass

import torch


def group_runs(in_features: int, group_size: int) -> list[tuple[int, int, int]]:
    """(start, stop, width) of the column runs made of equal groups: the whole groups, then a partial last one."""
    width = in_features if group_size == -1 else min(group_size, in_features)
    whole = in_features // width * width
    runs = [(0, whole, width)]
    if whole < in_features:
        runs.append((whole, in_features, in_features - whole))
    return runs


@dataclass
class Quantized:
    """A weight (out, in) on its grid: integers, per-group scales and zeros (out, n_groups), and the
    dequantized values (q − zero)·scale. Symmetric grids store zero = 2^(b−1) and q shifted by it."""

    q: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    dequantized: torch.Tensor


def _grid(w: torch.Tensor, bits: int, zero_point: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Over the last dim of w (..., group): q (shifted to 0..2^b−1), scale and zero (..., 1)."""
    if zero_point:
        maxq = (1 << bits) - 1
        lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
        scale = ((hi - lo).clamp(min=1e-5) / maxq).half().float()
        zero = (-torch.round(lo / scale)).clamp(0, maxq)
        q = (torch.round(w / scale) + zero).clamp(0, maxq)
        return q, scale, zero
    half = 1 << (bits - 1)
    scale = (w.abs().amax(-1, keepdim=True).clamp(min=1e-5) / (half - 1)).half().float()
    q = torch.round(w / scale).clamp(-half, half - 1) + half
    return q, scale, torch.full_like(scale, float(half))


def fake_quantize(w: torch.Tensor, bits: int, group_size: int, zero_point: bool) -> torch.Tensor:
    """The dequantized weight only (the scale search's trial weights)."""
    return quantize(w, bits, group_size, zero_point).dequantized


def quantize(w: torch.Tensor, bits: int, group_size: int, zero_point: bool) -> Quantized:
    w = w.float()
    rows = w.shape[0]
    qs, scales, zeros, deqs = [], [], [], []
    for start, stop, width in group_runs(w.shape[1], group_size):
        part = w[:, start:stop].reshape(rows, -1, width)
        q, scale, zero = _grid(part, bits, zero_point)
        qs.append(q.reshape(rows, -1))
        deqs.append(((q - zero) * scale).reshape(rows, -1))
        scales.append(scale.squeeze(-1))
        zeros.append(zero.squeeze(-1))
    def join(parts: list[torch.Tensor]) -> torch.Tensor:
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    return Quantized(join(qs).to(torch.int32), join(scales), join(zeros).to(torch.int32), join(deqs))

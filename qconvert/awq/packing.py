"""The AWQ GEMM checkpoint layout: 4-bit values packed eight to an int32 along the output dimension.

qweight (in, out/8) and qzeros (groups, out/8): nibble i (bits 4i..4i+3) of word c holds output
column 8c + ORDER[i]; zeros are stored as they are (no −1 as in GPTQ v1). scales (groups, out) fp16.
"""

import torch

from qconvert.awq.config import PACKED_WIDTH

ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _pack(values: torch.Tensor) -> torch.Tensor:
    """(rows, cols) integers 0..15 → (rows, cols/8) int32 in the GEMM nibble order."""
    v = values.to(torch.int64).reshape(values.shape[0], -1, PACKED_WIDTH)
    words = torch.zeros(v.shape[:2], dtype=torch.int64)
    for nibble, column in enumerate(ORDER):
        words |= v[:, :, column] << (4 * nibble)
    return words.to(torch.uint32).view(torch.int32)


def _unpack(words: torch.Tensor) -> torch.Tensor:
    """(rows, cols/8) int32 → (rows, cols) int32 values 0..15."""
    w = words.to(torch.int64) & 0xFFFFFFFF
    out = torch.empty(w.shape[0], w.shape[1], PACKED_WIDTH, dtype=torch.int32)
    for nibble, column in enumerate(ORDER):
        out[:, :, column] = ((w >> (4 * nibble)) & 0xF).to(torch.int32)
    return out.reshape(w.shape[0], -1)


def pack_gemm(q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor) -> dict[str, torch.Tensor]:
    """q (out, in), zeros and scales (out, groups) → the GEMM tensors."""
    return {"qweight": _pack(q.t()), "qzeros": _pack(zeros.t()), "scales": scales.t().contiguous().half()}


def dequantize_gemm(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The GEMM tensors → the dense float32 weight (out, in)."""
    q = _unpack(qweight)  # (in, out)
    groups = scales.shape[0]
    group_size = q.shape[0] // groups
    zeros = _unpack(qzeros).repeat_interleave(group_size, 0)
    s = scales.float().repeat_interleave(group_size, 0)
    return ((q - zeros).float() * s).t().contiguous()

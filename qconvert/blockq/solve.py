"""GPTQ's rounding inside llama.cpp's block formats: one weight matrix → the bytes of a GGUF tensor.

The columns are rounded in order and each one's error is pushed onto the columns not yet rounded
through the inverse Hessian of the layer's inputs (qconvert.gptq.solve), but the grid of every
weight is that of its GGUF block: the scale (and min) of a legacy block of 32, or of a sub-block of
a k-quant super-block with its own quantized sub-block scales. Each block's parameters are chosen by
the type's own quantizer (the importance-weighted search llama-quantize --imatrix runs, or its
reference one without importance), on the block's weights as they stand when the column loop
reaches the block (`refit`), or on the original weights up front. A weight the block was fitted on
keeps the code the quantizer gave it; a weight moved by the error compensation takes the nearest
code of the block's grid (native/gptq.h). With an identity Hessian nothing moves, and the bytes are
the quantizer's, llama-quantize's, exactly.
"""

from dataclasses import dataclass

import numpy as np
import torch

from qconvert import _native
from qconvert.ggml_types import GGMLQuantizationType
from qconvert.gptq.solve import inverse_hessian_factor
from qconvert.quant import kernels

OUTER = 256  # columns per lazy-update block: a whole k-quant super-block, so its fit sees every update before it
INNER = 32  # columns per inner lazy-update block: a legacy block


@dataclass(frozen=True)
class BlockGPTQConfig:
    damp_percent: float = 0.01  # of the mean Hessian diagonal, added before inverting (more while it fails)
    refit: bool = True  # fit each block's parameters when the column loop reaches it; False: up front, on the original weights
    act_order: bool = False  # columns in decreasing Hessian diagonal (needs refit=False: the block layout is fixed)
    # fit each linear's outputs on its rounded-model inputs to the original model's outputs on the
    # original inputs (the error of earlier rounding compensated too), not to its own weights' outputs
    asymmetric: bool = True


class BlockFitter:
    """A block type's own quantizer on any run of whole blocks of a matrix's columns, with the
    importance weights of those columns: the same bytes as quantizing whole rows, because the
    k-quants fit each super-block alone and the weighted legacy types get their rows' sigma2, taken
    once from the original weights."""

    def __init__(self, qtype: GGMLQuantizationType, weight: np.ndarray, importance: np.ndarray | None, threads: int | None = None):
        self.qtype, self.importance, self.threads = qtype, importance, threads
        self.legacy_weighted = importance is not None and qtype in kernels.LEGACY_PART_TYPES
        self.sigma2 = kernels.row_sigma2(weight) if self.legacy_weighted else None

    def fit(self, rows: np.ndarray, start: int) -> np.ndarray:
        """Blocks of the columns [start, start + rows.shape[1]) of every row."""
        if self.importance is None:
            return kernels.quantize(rows, self.qtype, self.threads)
        importance = self.importance[start : start + rows.shape[1]]
        if self.legacy_weighted:
            return kernels.quantize_part_weighted(rows, self.qtype, importance, self.sigma2)
        return kernels.quantize(rows, self.qtype, self.threads, importance)


def hessian_factor(hessian: torch.Tensor, damp_percent: float, where: str) -> torch.Tensor:
    """The upper Cholesky factor of the damped inverse Hessian, the one thing the solve needs of H:
    linears that read the same input share it. Inputs that were always zero get diagonal 1."""
    h = hessian.float().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    return inverse_hessian_factor(h, damp_percent, where)[0]


def quantize_blocks(weight: torch.Tensor, hinv: torch.Tensor, qtype: GGMLQuantizationType, importance: np.ndarray | None, config: BlockGPTQConfig = BlockGPTQConfig(),
                    perm: torch.Tensor | None = None, threads: int | None = None) -> np.ndarray:
    """weight (out, in) → its GGUF tensor data (out, row_bytes) uint8, rows as given.

    hinv: hessian_factor() of the (permuted, with act-order) Hessian; perm: the act-order column
    order the factor was made in, or None. importance: (in,) weights for the block fits, or None for
    the unweighted reference fits.
    """
    w = weight.detach().to("cpu", torch.float32).contiguous()
    n_out, n_in = w.shape
    _, elems, nbytes = kernels.block_info(qtype)
    bits, zero = kernels.code_info(qtype)
    if n_in % elems:
        raise ValueError(f"rows of {n_in} are not whole {qtype.name} blocks of {elems}")
    if perm is not None and config.refit:
        raise ValueError("act-order needs the block parameters fixed up front (refit=False)")
    original = w.numpy()
    fitter = BlockFitter(qtype, original, importance, threads)
    blocks = np.empty((n_out, n_in // elems * nbytes), dtype=np.uint8)
    codes_t = np.empty((n_in, n_out), dtype=np.uint8)  # in the solve's column order
    if not config.refit:  # every block fitted once, on the original weights
        blocks[:] = fitter.fit(original, 0)
        fixed = [np.ascontiguousarray(a.T) for a in kernels.block_codes(blocks, qtype, n_in)] + [np.ascontiguousarray(original.T)]
        if perm is not None:
            order = perm.numpy()
            fixed = [np.ascontiguousarray(a[order]) for a in fixed]
    wt = w.t().contiguous() if perm is None else w[:, perm].t().contiguous()  # (in, out): column i is a contiguous row
    for i1 in range(0, n_in, OUTER):
        i2 = min(i1 + OUTER, n_in)
        w1 = wt[i1:i2].clone()
        err1 = torch.empty_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        inv_diag = (1.0 / hinv1.diagonal()).contiguous()
        if config.refit:
            grid = [np.empty((i2 - i1, n_out), dtype=dt) for dt in (np.uint8, np.float32, np.float32, np.float32)]
        else:
            grid = [np.ascontiguousarray(a[i1:i2]) for a in fixed]
        codes, s, o, fit_w = grid
        for j1 in range(0, i2 - i1, INNER):
            j2 = min(j1 + INNER, i2 - i1)
            if config.refit and (i1 + j1) % elems == 0:  # a block starts: fit it on its columns as they are now
                c, span = i1 + j1, slice(j1, j1 + elems)
                part = np.ascontiguousarray(w1[span].numpy().T)  # (out, elems)
                fitted = fitter.fit(part, c)
                blocks[:, c // elems * nbytes : (c + elems) // elems * nbytes] = fitted
                for target, values in zip((codes, s, o), kernels.block_codes(fitted, qtype, elems)):
                    target[span] = values.T
                fit_w[span] = part.T
            _native.gptq_block_columns(
                w1[j1:j2].numpy(), err1[j1:j2].numpy(), hinv1[j1:j2, j1:j2].contiguous().numpy(), inv_diag[j1:j2].numpy(),
                s[j1:j2], o[j1:j2], fit_w[j1:j2], codes[j1:j2], j2 - j1, n_out, zero, (1 << bits) - 1,
            )
            w1[j2:].addmm_(hinv1[j1:j2, j2:].t(), err1[j1:j2], alpha=-1)
        codes_t[i1:i2] = codes
        wt[i2:].addmm_(hinv[i1:i2, i2:].t(), err1, alpha=-1)
    if perm is not None:
        codes_t = codes_t[torch.argsort(perm).numpy()]
    kernels.set_block_codes(blocks, qtype, np.ascontiguousarray(codes_t.T))
    return blocks


def act_order(hessian: torch.Tensor) -> torch.Tensor:
    """GPTQ's act-order: the columns by decreasing Hessian diagonal."""
    return torch.argsort(torch.diag(hessian), descending=True)


def asymmetric_shift(cross: torch.Tensor, hinv: torch.Tensor, perm: torch.Tensor | None = None) -> torch.Tensor:
    """S such that W' = W + W·S is the weight whose outputs on the rounded model's inputs X best
    match the original model's, W·X₀: W' = W·X₀Xᵀ(XXᵀ)⁻¹ = W + W·(X₀ − X)Xᵀ·H⁻¹. For any Q,
    ‖QX − WX₀‖² = ‖(Q − W')X‖² + const, so GPTQ on W' with the same Hessian solves the asymmetric
    objective. `cross`: 2·(X₀ − X)Xᵀ/n, scaled as the Hessian is; hinv: the solve's hessian_factor()
    (UᵀU = the damped H⁻¹), of the act-order permuted Hessian if `perm` is given. One S serves every
    linear that reads the same input."""
    if perm is None:
        return (cross @ hinv.t()) @ hinv
    return ((cross[:, perm] @ hinv.t()) @ hinv)[:, torch.argsort(perm)]

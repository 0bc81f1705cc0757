"""The GPTQ solve (Frantar et al. 2022; AutoGPTQ's `fasterquant`): quantize a weight matrix column by
column, spreading each column's rounding error over the columns not yet quantized, weighted by the
inverse Hessian of the layer's inputs. Pure tensor math; no modules, no I/O.
"""

import logging
from dataclasses import dataclass

import torch

from qconvert import _native
from qconvert.errors import QConvertError
from qconvert.gptq.config import BLOCK_SIZE, GPTQConfig
from qconvert.gptq.grid import dequantize, grid_params, quantize_levels

log = logging.getLogger(__name__)

SUB_BLOCK = 32  # columns per inner lazy-update block; every group size is a multiple of it
DAMP_STEP = 0.01  # added to the damping fraction each time the Cholesky factorisation fails
MAX_DAMP = 1.0


@dataclass
class GPTQResult:
    """One weight matrix (out, in) on its grid: w_q = scales[:, g_idx] · (levels − zeros[:, g_idx])."""

    levels: torch.Tensor  # (out, in) int32 in [0, maxq], columns in the original order
    scales: torch.Tensor  # (out, n_groups) float32, exact fp16 values
    zeros: torch.Tensor  # (out, n_groups) int32 in [1, maxq]
    g_idx: torch.Tensor  # (in,) int32: the group of each input column
    damp_percent: float  # the damping that worked

    def rows(self, start: int, end: int) -> "GPTQResult":
        """The output rows [start, end): one linear of several solved together."""
        return GPTQResult(self.levels[start:end], self.scales[start:end], self.zeros[start:end], self.g_idx, self.damp_percent)

    def dequantized(self) -> torch.Tensor:
        g = self.g_idx.long()
        return dequantize(self.levels.float(), self.scales[:, g], self.zeros[:, g].float())


def inverse_hessian_factor(h: torch.Tensor, damp_percent: float, where: str) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor U of (H + λI)⁻¹ (UᵀU = (H + λI)⁻¹), λ = damp·mean(diag H); more damping while it fails.

    One factorisation and one triangular inverse: with J the reversal permutation and L the lower
    Cholesky factor of J·H·J, U = J·L⁻¹·J (AutoGPTQ gets the same U with three factorisations).
    """
    mean_diag = torch.mean(torch.diag(h))
    flipped = h.flip(0, 1)
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    damp = damp_percent
    while damp <= MAX_DAMP:
        lower, info = torch.linalg.cholesky_ex(flipped + (damp * mean_diag) * eye)
        if info == 0:
            if damp != damp_percent:
                log.warning("%s: Hessian not positive definite at damping %.2f; used %.2f", where, damp_percent, damp)
            return torch.linalg.solve_triangular(lower, eye, upper=False).flip(0, 1), damp
        damp = round(damp + DAMP_STEP, 6)
    raise QConvertError(f"Hessian is not positive definite even with damping {MAX_DAMP}", where, "the calibration data may be degenerate; give more or other text")


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, config: GPTQConfig, where: str = "linear") -> GPTQResult:
    """Quantize `weight` (out, in) given the Hessian (in, in) of its inputs.

    Rows are independent given H, so linears that read the same input (q, k, v) can be solved in
    one call on their concatenated rows with the same result.
    """
    w = weight.float().clone()  # (out, in)
    h = hessian.float().clone()  # (in, in)
    n_out, n_in = w.shape
    gs = config.group_width(n_in)
    maxq = config.maxq

    dead = torch.diag(h) == 0  # inputs that were always zero: any weight works, take 0
    h[dead, dead] = 1
    w[:, dead] = 0

    # Grids fixed before the solve: per channel (one group over all columns), or static groups
    # from the unpermuted weights. Otherwise each group's grid comes from its error-updated columns.
    fixed = None
    if config.group_size == -1:
        fixed = [grid_params(w, config.bits, config.sym)]
    elif config.static_groups:
        fixed = [grid_params(w[:, c : c + gs], config.bits, config.sym) for c in range(0, n_in, gs)]

    perm = None
    if config.desc_act:
        perm = torch.argsort(torch.diag(h), descending=True)
        w, h = w[:, perm], h[perm][:, perm]
    hinv, damp = inverse_hessian_factor(h, config.damp_percent, where)
    del h

    # The solve runs on Wᵀ (in, out): each weight column is a contiguous row, so the per-column
    # updates touch contiguous memory.
    wt = w.t().contiguous()
    del w
    n_groups = config.n_groups(n_in)
    orig_col = perm if perm is not None else torch.arange(n_in, device=wt.device)
    if fixed is not None:  # grid rows: (n_groups, out), and each processed column's group
        grid_s = torch.stack([s for s, _ in fixed]).contiguous()
        grid_z = torch.stack([z for _, z in fixed]).contiguous()
        col_group = (orig_col // gs).int()
    else:
        grid_s = torch.zeros(n_groups, n_out, dtype=torch.float32, device=wt.device)
        grid_z = torch.zeros_like(grid_s)
        col_group = (torch.arange(n_in, device=wt.device) // gs).int()
    columns = _columns_native if wt.device.type == "cpu" else _columns_torch
    for i1 in range(0, n_in, BLOCK_SIZE):
        i2 = min(i1 + BLOCK_SIZE, n_in)
        w1 = wt[i1:i2].clone()  # (b, out)
        err1 = torch.empty_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        inv_diag = 1.0 / hinv1.diagonal()
        for j1 in range(0, i2 - i1, SUB_BLOCK):  # a second, inner level of lazy updates
            j2 = min(j1 + SUB_BLOCK, i2 - i1)
            if fixed is None and (i1 + j1) % gs == 0:
                # A group starts here and lies in this block, its updates done: gs is a multiple of
                # SUB_BLOCK and divides BLOCK_SIZE.
                group = (i1 + j1) // gs
                grid_s[group], grid_z[group] = grid_params(w1[j1 : j1 + gs].t(), config.bits, config.sym)
            columns(w1[j1:j2], err1[j1:j2], hinv1[j1:j2, j1:j2].contiguous(), inv_diag[j1:j2].contiguous(), grid_s, grid_z, col_group[i1 + j1 : i1 + j2], float(maxq))
            w1[j2:].addmm_(hinv1[j1:j2, j2:].t(), err1[j1:j2], alpha=-1)
        wt[i1:i2] = w1  # now the dequantized columns
        wt[i2:].addmm_(hinv[i1:i2, i2:].t(), err1, alpha=-1)
    scales, zeros = grid_s.t().contiguous(), grid_z.t().contiguous()  # (out, n_groups)
    # w_q = s·(level − z) exactly in float32 (an fp16 scale times a small integer), so the levels come back exactly
    groups = col_group.long()
    levels = (torch.round(wt / scales[:, groups].t()) + zeros[:, groups].t()).t()  # (out, in), processed order

    g_idx = torch.empty(n_in, dtype=torch.int32, device=wt.device)
    g_idx[orig_col] = col_group
    if perm is not None:
        levels = levels[:, torch.argsort(perm)]
    return GPTQResult(levels.int(), scales, zeros.int(), g_idx, damp)


def _columns_torch(w: torch.Tensor, err: torch.Tensor, hinv: torch.Tensor, inv_diag: torch.Tensor, grid_s: torch.Tensor, grid_z: torch.Tensor, rows: torch.Tensor, maxq: float) -> None:
    """One sub-block of the column loop, in place (native/gptq.h says what it does): for devices
    the C kernel does not run on."""
    for i in range(w.shape[0]):
        scale, zero = grid_s[rows[i]], grid_z[rows[i]]
        q = dequantize(quantize_levels(w[i], scale, zero, int(maxq)), scale, zero)
        err[i] = (w[i] - q) * inv_diag[i]
        w[i] = q
        w[i + 1 :].addr_(hinv[i, i + 1 :], err[i], alpha=-1)


def _columns_native(w: torch.Tensor, err: torch.Tensor, hinv: torch.Tensor, inv_diag: torch.Tensor, grid_s: torch.Tensor, grid_z: torch.Tensor, rows: torch.Tensor, maxq: float) -> None:
    _native.gptq_columns(w.numpy(), err.numpy(), hinv.numpy(), inv_diag.numpy(), grid_s.numpy(), grid_z.numpy(), rows.numpy(), w.shape[0], w.shape[1], maxq)


def round_to_nearest(weight: torch.Tensor, config: GPTQConfig) -> GPTQResult:
    """The baseline GPTQ is measured against: each group rounded on the same grid, no error compensation."""
    w = weight.float()
    n_in = w.shape[1]
    gs = config.group_width(n_in)
    grids = [grid_params(w[:, c : c + gs], config.bits, config.sym) for c in range(0, n_in, gs)]
    scales = torch.stack([s for s, _ in grids], dim=1)  # (out, n_groups)
    zeros = torch.stack([z for _, z in grids], dim=1)
    g_idx = (torch.arange(n_in, device=w.device) // gs).int()
    levels = quantize_levels(w, scales[:, g_idx.long()], zeros[:, g_idx.long()], config.maxq)
    return GPTQResult(levels.int(), scales, zeros.int(), g_idx, 0.0)

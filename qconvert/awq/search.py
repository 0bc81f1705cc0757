"""AWQ's two searches as pure functions on tensors (AutoAWQ's _search_best_scale and _compute_best_clip).

Scales: for each ratio r on a grid of n, s = x_mean^r / w_mean^(1−r) (duo scaling) normalised to a
geometric mean of 1 over its extremes; the weights are tried as Q(W·s)/s and the ratio whose
output is closest to the original wins. Clipping: per output channel and group, the weights are
clamped to shrinking fractions of their absmax and the range with the smallest error of that
group's partial output is kept.
"""

from collections.abc import Callable

import torch

from qconvert.awq.grid import fake_quantize, group_runs


def weight_magnitude(weights: list[torch.Tensor], group_size: int) -> torch.Tensor:
    """Per input channel: the mean over output rows of |w| relative to its group's absmax."""
    w = torch.cat(weights).abs().float()
    parts = []
    for start, stop, width in group_runs(w.shape[1], group_size):
        g = w[:, start:stop].reshape(w.shape[0], -1, width)
        parts.append((g / (g.amax(-1, keepdim=True) + 1e-6)).reshape(w.shape[0], -1))
    return torch.cat(parts, 1).mean(0)


def candidate_scales(x_mean: torch.Tensor, w_mean: torch.Tensor | None, ratio: float) -> torch.Tensor:
    if w_mean is None:
        s = x_mean.pow(ratio).clamp(min=1e-4)
    else:
        s = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
    s = s / (s.max() * s.min()).sqrt()
    return torch.where(torch.isfinite(s), s, torch.ones_like(s))


def search_scales(x_mean: torch.Tensor, w_mean: torch.Tensor | None, loss: Callable[[torch.Tensor], float], n_grid: int) -> tuple[torch.Tensor, float]:
    """The best of the n_grid candidate scales (ratios 0, 1/n, …, (n−1)/n) by `loss(s)`; w_mean None: activations only."""
    best, best_loss, best_ratio = None, float("inf"), 0.0
    for i in range(n_grid):
        ratio = i / n_grid
        s = candidate_scales(x_mean, w_mean, ratio)
        value = loss(s)
        if value < best_loss:
            best, best_loss, best_ratio = s, value, ratio
    if best is None:  # every loss was NaN: the activations or weights are broken
        raise ValueError("no scale gave a finite loss")
    return best, best_ratio


OUT_BATCH = 1024  # output channels per step of the clip search: bounds its scratch memory


def search_clip(w: torch.Tensor, x: torch.Tensor, bits: int, group_size: int, zero_point: bool, n_grid: int, max_shrink: float) -> torch.Tensor:
    """Per (output channel, group) the absmax to clamp w (out, in) to; x (tokens, in) are sample inputs.

    The error of a group's partial output, mean over tokens of (x_g·Δw_g)², is Δw_g·G_g·Δw_g with
    G_g = X_gᵀX_g / tokens: formed once per group, it spares a pass over the tokens per trial.
    """
    w, x = w.float(), x.float()
    limits = []
    for start, stop, width in group_runs(w.shape[1], group_size):
        xg = x[:, start:stop].reshape(x.shape[0], -1, width).transpose(0, 1)  # (groups, tokens, width)
        gram = torch.bmm(xg.transpose(1, 2), xg) / x.shape[0]  # (groups, width, width)
        run = []
        for o in range(0, w.shape[0], OUT_BATCH):
            wg = w[o : o + OUT_BATCH, start:stop].reshape(-1, xg.shape[0], width)  # (out, groups, width)
            absmax = wg.abs().amax(-1, keepdim=True)
            best_limit, best_err = absmax.clone(), torch.full_like(absmax, float("inf"))
            for step in range(int(max_shrink * n_grid)):
                limit = absmax * (1 - step / n_grid)
                trial = fake_quantize(wg.clamp(-limit, limit).reshape(wg.shape[0], -1), bits, width, zero_point).reshape(wg.shape)
                delta = (trial - wg).transpose(0, 1)  # (groups, out, width)
                err = (torch.bmm(delta, gram) * delta).sum(-1).t().unsqueeze(-1)  # (out, groups, 1)
                better = err < best_err
                best_err = torch.where(better, err, best_err)
                best_limit = torch.where(better, limit, best_limit)
            run.append(best_limit.squeeze(-1))
        limits.append(torch.cat(run))
    return torch.cat(limits, 1)


def apply_clip(w: torch.Tensor, limits: torch.Tensor, group_size: int) -> torch.Tensor:
    """w (out, in) clamped to ±limits (out, groups), group by group."""
    widths = [width for start, stop, width in group_runs(w.shape[1], group_size) for _ in range((stop - start) // width)]
    bound = torch.repeat_interleave(limits, torch.tensor(widths), dim=1)
    return torch.max(torch.min(w, bound), -bound)

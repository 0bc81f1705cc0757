"""Routed experts as one nn.Linear per projection, so the layer-wise quantizers can hook, quantize
and write each expert like any other linear.

transformers (5.x) holds a MoE layer's routed experts fused, as 3-D parameters (gate_up_proj:
experts × 2·ffn × hidden; down_proj: experts × hidden × ffn), while checkpoints store them per
expert (`mlp.experts.{e}.gate_proj.weight`, ...). The skeleton swaps each fused module for
`UnfusedExperts`, whose parameter names are the checkpoint's and whose forward computes what the
fused one does: each expert runs on the tokens routed to it, weighted, summed.
"""

from collections.abc import Callable

import torch
from torch import nn


class ExpertMLP(nn.Module):
    def __init__(self, hidden: int, ffn: int, act_fn: nn.Module):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, ffn, bias=False)
        self.up_proj = nn.Linear(hidden, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, hidden, bias=False)
        self.act_fn = act_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class UnfusedExperts(nn.ModuleList):
    def __init__(self, n_experts: int, hidden: int, ffn: int, act_fn: nn.Module):
        super().__init__(ExpertMLP(hidden, ffn, act_fn) for _ in range(n_experts))

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(hidden_states)
        for e, expert in enumerate(self):
            token_idx, slot = torch.where(top_k_index == e)
            if token_idx.numel() == 0:
                continue  # no token routed here: the expert does not run (its hooks see nothing)
            y = expert(hidden_states[token_idx]) * top_k_weights[token_idx, slot, None]
            out.index_add_(0, token_idx, y.to(out.dtype))
        return out


def _is_fused(module: nn.Module) -> bool:
    params = dict(module.named_parameters(recurse=False))
    return {"gate_up_proj", "down_proj"} <= set(params) and params["gate_up_proj"].dim() == 3 and hasattr(module, "act_fn")


def unfuse_experts(model: nn.Module) -> int:
    """Replace every fused experts module of `model` (on the meta device) in place; returns how many."""
    fused = [(name, m) for name, m in model.named_modules() if _is_fused(m)]
    for name, module in fused:
        n_experts, two_ffn, hidden = module.gate_up_proj.shape
        parent_name, _, child = name.rpartition(".")
        with torch.device("meta"):
            unfused = UnfusedExperts(n_experts, hidden, two_ffn // 2, module.act_fn).to(module.gate_up_proj.dtype)
        setattr(model.get_submodule(parent_name), child, unfused)
    return len(fused)


def fused_expert_tensors(model: nn.Module, load: Callable[[str], torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fused 3-D expert parameters of `model`, assembled from per-expert checkpoint tensors
    read with `load(name)`: what transformers itself does when it loads such a checkpoint."""
    state = {}
    for name, module in model.named_modules():
        if _is_fused(module):
            n_experts = module.gate_up_proj.shape[0]
            rows = [torch.cat([load(f"{name}.{e}.gate_proj.weight"), load(f"{name}.{e}.up_proj.weight")]) for e in range(n_experts)]
            state[f"{name}.gate_up_proj"] = torch.stack(rows)
            state[f"{name}.down_proj"] = torch.stack([load(f"{name}.{e}.down_proj.weight") for e in range(n_experts)])
    return state

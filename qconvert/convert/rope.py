"""RoPE scaling as llama.cpp wants it: GGUF keys for linear and YaRN, a rope_freqs tensor for Llama 3."""

import math

import numpy as np
from gguf import GGUFWriter, RopeScalingType

from qconvert.errors import QConvertError

SUPPORTED = ("linear", "yarn", "llama3")


def rope_kind(rope: dict) -> str:
    kind = rope.get("rope_type", rope.get("type"))
    if kind not in SUPPORTED:
        raise QConvertError(f"rope_scaling type {kind!r} is not supported", "config.json", f"qconvert converts {', '.join(SUPPORTED)} RoPE scaling")
    return kind


def write_rope_scaling(w: GGUFWriter, rope: dict) -> None:
    """Metadata keys for linear and YaRN scaling; Llama 3 scaling travels as a tensor instead."""
    kind = rope_kind(rope)
    if kind == "linear":
        w.add_rope_scaling_type(RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rope["factor"]))
    elif kind == "yarn":
        w.add_rope_scaling_type(RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rope["factor"]))
        w.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))


def llama3_rope_factors(rope: dict, head_dim: int, theta: float) -> np.ndarray:
    """(head_dim/2,) float32 divisors of the RoPE frequencies, for llama.cpp's rope_freqs tensor.

    Llama 3 keeps high frequencies (wavelength < ctx/high_freq_factor), divides low ones
    (wavelength > ctx/low_freq_factor) by `factor`, and blends in between — as transformers'
    _compute_llama3_parameters does to inv_freq.
    """
    factor = float(rope["factor"])
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope["original_max_position_embeddings"])
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            factors.append(1.0)
        elif wavelen > old_ctx / low:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)

"""RoPE scaling as llama.cpp wants it: GGUF keys for linear and YaRN, a rope_freqs tensor for Llama 3.

The keys and values are those llama.cpp's convert_hf_to_gguf.py writes: linear writes its type and
factor; YaRN also the original context length and, where config.json gives them, the
extrapolation factor, attention factor (attention_factor or attn_factor) and beta_fast/beta_slow;
Llama 3 writes no key but the rope_freqs tensor, computed in float32 as torch computes it there so
that the bytes match.
"""

import math

import numpy as np
from gguf import GGUFWriter, RopeScalingType

from qconvert.errors import QConvertError, quoted

SUPPORTED = ("linear", "yarn", "llama3")
# llama.cpp architectures (of those qconvert writes) whose graph reads a rope_freqs tensor: for the
# others llama.cpp would refuse the file's extra tensor, and its converter drops Llama 3 scaling.
ROPE_FREQS_ARCHS = ("llama",)
# YaRN's optional parameters in config.json → the GGUFWriter method that writes each.
_YARN_OPTIONAL = (
    (("extrapolation_factor",), "add_rope_scaling_yarn_ext_factor"),
    (("attention_factor", "attn_factor"), "add_rope_scaling_yarn_attn_factor"),
    (("beta_fast",), "add_rope_scaling_yarn_beta_fast"),
    (("beta_slow",), "add_rope_scaling_yarn_beta_slow"),
)


def rope_kind(rope: dict) -> str:
    kind = rope.get("rope_type", rope.get("type"))
    if kind not in SUPPORTED:
        raise QConvertError(f"rope_scaling type {quoted(kind)} is not supported", "config.json", f"qconvert converts {', '.join(SUPPORTED)} RoPE scaling")
    return kind


def check_rope_scaling(rope: dict, gguf_arch: str) -> str:
    """The scaling kind, refused where llama.cpp's `gguf_arch` cannot apply it."""
    kind = rope_kind(rope)
    if kind == "llama3" and gguf_arch not in ROPE_FREQS_ARCHS:
        raise QConvertError(
            f"Llama 3 rope_scaling on a {gguf_arch} model: llama.cpp applies it through a rope_freqs tensor its {gguf_arch} does not read",
            "config.json",
            "llama.cpp converts only Llama-architecture models with Llama 3 RoPE scaling",
        )
    return kind


def _required(rope: dict, key: str, kind: str):
    if rope.get(key) is None:
        raise QConvertError(f"{kind} rope_scaling has no {key}", "config.json", "add it, as transformers requires")
    return rope[key]


def write_rope_scaling(w: GGUFWriter, rope: dict) -> None:
    """Metadata keys for linear and YaRN scaling; Llama 3 scaling travels as a tensor instead."""
    kind = rope_kind(rope)
    if kind == "linear":
        w.add_rope_scaling_type(RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(_required(rope, "factor", kind)))
    elif kind == "yarn":
        w.add_rope_scaling_type(RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(_required(rope, "factor", kind)))
        w.add_rope_scaling_orig_ctx_len(int(_required(rope, "original_max_position_embeddings", kind)))
        for keys, method in _YARN_OPTIONAL:
            value = next((rope[k] for k in keys if rope.get(k) is not None), None)
            if value is not None:
                getattr(w, method)(float(value))


def llama3_rope_factors(rope: dict, head_dim: int, theta: float) -> np.ndarray:
    """(head_dim/2,) float32 divisors of the RoPE frequencies, for llama.cpp's rope_freqs tensor.

    Llama 3 keeps high frequencies (wavelength < ctx/high_freq_factor), divides low ones
    (wavelength > ctx/low_freq_factor) by `factor`, and blends in between — as transformers'
    _compute_llama3_parameters does to inv_freq. Missing parameters take convert_hf_to_gguf.py's
    defaults (factor 8, low 1, high 4, original context 8192, theta from rope_scaling first).

    The arithmetic is float32 torch, as in convert_hf_to_gguf.py: its pow is not numpy's, and
    `scalar / tensor` is a reciprocal then a product, so float64 or numpy would differ in the last bit.
    """
    import torch  # here: only Llama 3 scaling needs it

    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = rope.get("original_max_position_embeddings", 8192)
    base = float(rope.get("rope_theta", theta))
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    wavelen = 2 * math.pi / freqs
    smooth = (old_ctx / wavelen - low) / (high - low)
    blended = 1 / ((1 - smooth) / factor + smooth)
    factors = torch.where(wavelen < old_ctx / high, 1.0, torch.where(wavelen > old_ctx / low, factor, blended))
    return factors.to(torch.float32).numpy()

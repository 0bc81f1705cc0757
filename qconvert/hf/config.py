"""config.json of a Hugging Face causal LM, read into a typed dataclass."""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qconvert.errors import QConvertError, quoted

# Mixture-of-experts counts: the first of these keys config.json has, as convert_hf_to_gguf.py
# looks them up (find_hparam), for any architecture.
EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
EXPERT_USED_KEYS = ("num_experts_per_tok", "num_experts_per_token", "top_k_experts")
# Counts that must be non-negative integers wherever config.json has them (null: not given).
_OPTIONAL_COUNTS = (*EXPERT_COUNT_KEYS, *EXPERT_USED_KEYS, "moe_intermediate_size", "shared_expert_intermediate_size", "decoder_sparse_step", "head_dim",
                    "num_key_value_heads", "max_position_embeddings")
_ROPE_NUMBERS = ("factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor", "extrapolation_factor",
                 "attention_factor", "attn_factor", "beta_fast", "beta_slow", "rope_theta")
MAX_COUNT = 2**31 - 1  # any width, layer or position count; llama.cpp keeps them in int32
MAX_VOCAB = 2**24  # far above any real vocabulary (~262k): the GGUF vocab is padded to it row by row
FIX_HINT = "fix config.json, or download it again"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(raw: dict[str, Any], key: str, path: Path, default: int | None = None, minimum: int = 1, maximum: int = MAX_COUNT) -> int | None:
    """config.json's `key`, an integer in [minimum, maximum]; `default` when absent or null."""
    value = raw.get(key)
    if value is None:
        if default is None and minimum > 0 and key in _REQUIRED:
            raise QConvertError(f"config.json has no {key}", path, FIX_HINT)
        return default
    if not _is_int(value) or not minimum <= value <= maximum:
        raise QConvertError(f"config.json's {key} is {quoted(value)}, not an integer from {minimum} to {maximum:,}", path, FIX_HINT)
    return value


_FLOAT32_MAX = 3.4028234663852886e38  # GGUF keeps these numbers as float32


def _number(value: Any, what: str, path: Path, positive: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= _FLOAT32_MAX and not math.isnan(value)
    if not ok or (positive and value <= 0):
        raise QConvertError(f"config.json's {what} is {quoted(value)}, not a {'positive ' if positive else ''}number a float32 holds", path, FIX_HINT)
    return float(value)


def _first(raw: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    key = next((k for k in keys if raw.get(k) is not None), None)
    return None if key is None else raw[key]


def _rope(raw: dict[str, Any], path: Path) -> dict[str, Any] | None:
    key = "rope_scaling" if raw.get("rope_scaling") is not None else "rope_parameters"
    rope = raw.get(key)
    if rope is None:
        return None
    if not isinstance(rope, dict):
        raise QConvertError(f"config.json's {key} is {type(rope).__name__}, not an object", path, FIX_HINT)
    kind = rope.get("rope_type", rope.get("type"))
    if kind is not None and not isinstance(kind, str):
        raise QConvertError(f"config.json's {key} has rope type {quoted(kind)}, not a name", path, FIX_HINT)
    for name in _ROPE_NUMBERS:
        if rope.get(name) is not None:
            _number(rope[name], f"{key}.{name}", path)
    return rope


_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    rope_scaling: dict[str, Any] | None
    raw: dict[str, Any]  # the whole config.json, for special-token ids and metadata
    # Mixture of experts, None where config.json does not say: routed experts per layer, experts
    # each token uses, an expert's and the shared expert's intermediate width.
    n_experts: int | None = None
    n_experts_used: int | None = None
    expert_intermediate_size: int | None = None
    shared_expert_intermediate_size: int | None = None

    @classmethod
    def from_dir(cls, model_dir: Path) -> "ModelConfig":
        path = model_dir / "config.json"
        if not model_dir.is_dir():
            raise QConvertError("not a model directory", model_dir, "give the folder holding config.json and the safetensors")
        if not path.is_file():
            raise QConvertError("missing config.json", model_dir, "point qconvert at a Hugging Face model folder")
        try:
            if path.stat().st_size > 64 * 2**20:
                raise QConvertError(f"config.json of {path.stat().st_size:,} bytes is not plausible", path, FIX_HINT)
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSON errors, ints past the digit limit
            raise QConvertError(f"unreadable config.json: {getattr(exc, 'strerror', None) or exc}", path, FIX_HINT) from exc
        if not isinstance(raw, dict):
            raise QConvertError("config.json is not a JSON object", path, FIX_HINT)
        return cls.from_raw(raw, path)

    @classmethod
    def from_raw(cls, raw: dict[str, Any], path: Path) -> "ModelConfig":
        """Every field qconvert reads, checked: a clear error for a missing or implausible one, before
        any of them sizes an allocation or a loop."""
        archs = raw.get("architectures")
        if not archs:
            raise QConvertError("config.json names no architecture", path, "add an \"architectures\" list")
        if not isinstance(archs, list) or not all(isinstance(a, str) and a.isidentifier() and len(a) <= 200 for a in archs):
            raise QConvertError(f"config.json's architectures is {quoted(archs)}, not a list of class names", path, FIX_HINT)
        for key in _OPTIONAL_COUNTS:
            _count(raw, key, path, minimum=0)
        for key in ("quantization_config", "text_config"):
            if raw.get(key) is not None and not isinstance(raw[key], dict):
                raise QConvertError(f"config.json's {key} is {type(raw[key]).__name__}, not an object", path, FIX_HINT)
        if not isinstance(raw.get("tie_word_embeddings", False), bool):
            raise QConvertError(f"config.json's tie_word_embeddings is {quoted(raw['tie_word_embeddings'])}, not true or false", path, FIX_HINT)
        heads = _count(raw, "num_attention_heads", path)
        hidden = _count(raw, "hidden_size", path)
        kv_heads = _count(raw, "num_key_value_heads", path, default=heads)
        if heads % kv_heads:
            raise QConvertError(f"config.json's num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}", path, FIX_HINT)
        head_dim = _count(raw, "head_dim", path, default=0) or hidden // heads
        if not raw.get("head_dim") and hidden % heads:
            raise QConvertError(f"config.json's hidden_size {hidden} does not split into {heads} heads, and it gives no head_dim", path, FIX_HINT)
        n_experts, n_used = _first(raw, EXPERT_COUNT_KEYS), _first(raw, EXPERT_USED_KEYS)
        if n_experts is not None and n_used is not None and n_used > n_experts:
            raise QConvertError(f"config.json asks each token to use {n_used} of {n_experts} experts", path, FIX_HINT)
        rope = _rope(raw, path)
        return cls(
            architecture=archs[0],
            vocab_size=_count(raw, "vocab_size", path, maximum=MAX_VOCAB),
            hidden_size=hidden,
            intermediate_size=_count(raw, "intermediate_size", path),
            num_layers=_count(raw, "num_hidden_layers", path),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=_number(raw.get("rms_norm_eps", 1e-6), "rms_norm_eps", path),
            rope_theta=_number(raw.get("rope_theta") or (rope or {}).get("rope_theta") or 10000.0, "rope_theta", path),
            max_position_embeddings=_count(raw, "max_position_embeddings", path, default=2048),
            tie_word_embeddings=raw.get("tie_word_embeddings", False),
            rope_scaling=rope if rope and rope.get("rope_type", rope.get("type")) not in (None, "default") else None,
            raw=raw,
            n_experts=n_experts,
            n_experts_used=n_used,
            expert_intermediate_size=raw.get("moe_intermediate_size"),
            shared_expert_intermediate_size=raw.get("shared_expert_intermediate_size"),
        )

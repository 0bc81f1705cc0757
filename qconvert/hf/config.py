"""config.json of a Hugging Face causal LM, read into a typed dataclass."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qconvert.errors import QConvertError

# Mixture-of-experts counts: the first of these keys config.json has, as convert_hf_to_gguf.py
# looks them up (find_hparam), for any architecture.
EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
EXPERT_USED_KEYS = ("num_experts_per_tok", "num_experts_per_token", "top_k_experts")


def _first(raw: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    key = next((k for k in keys if k in raw), None)
    return None if key is None else int(raw[key])


def _optional_int(raw: dict[str, Any], key: str) -> int | None:
    return None if raw.get(key) is None else int(raw[key])


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
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise QConvertError(f"unreadable config.json: {exc}", path) from exc
        archs = raw.get("architectures") or []
        if not archs:
            raise QConvertError("config.json names no architecture", path, "add an \"architectures\" list")
        try:
            heads = int(raw["num_attention_heads"])
            hidden = int(raw["hidden_size"])
            rope = raw.get("rope_scaling") or raw.get("rope_parameters")
            return cls(
                architecture=archs[0],
                vocab_size=int(raw["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(raw["intermediate_size"]),
                num_layers=int(raw["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(raw.get("num_key_value_heads") or heads),
                head_dim=int(raw.get("head_dim") or hidden // heads),
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
                rope_theta=float(raw.get("rope_theta") or (rope or {}).get("rope_theta") or 10000.0),
                max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
                tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                rope_scaling=rope if rope and rope.get("rope_type", rope.get("type")) not in (None, "default") else None,
                raw=raw,
                n_experts=_first(raw, EXPERT_COUNT_KEYS),
                n_experts_used=_first(raw, EXPERT_USED_KEYS),
                expert_intermediate_size=_optional_int(raw, "moe_intermediate_size"),
                shared_expert_intermediate_size=_optional_int(raw, "shared_expert_intermediate_size"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise QConvertError(f"config.json lacks or mangles field {exc}", path) from exc

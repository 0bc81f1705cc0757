"""Small random-weight checkpoints of each architecture qconvert supports, made with transformers'
own config classes and the fixture's tokenizer, in the shapes real checkpoints have that the
fixture lacks: head_dim given apart from hidden/heads (Qwen3), GQA, row lengths that are not
multiples of 256, tied embeddings, sliding windows (Mistral)."""

from pathlib import Path

import torch
import transformers

from tests.variants import copy_tokenizer

COMMON = dict(vocab_size=4096, max_position_embeddings=1024, rms_norm_eps=1e-6, initializer_range=0.1)  # peaked outputs, not a flat 4096
ARCH_CONFIGS = {
    # Qwen3: head_dim 48 × 4 heads = 192 ≠ hidden 128; no q/k/v biases; per-head q/k norms.
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(hidden_size=128, intermediate_size=320, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=48, tie_word_embeddings=True)),
    # Mistral: the Llama layout with a sliding window.
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(hidden_size=192, intermediate_size=448, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2, sliding_window=256)),
}


def _save_random(config_class: str, model_class: str, dst: Path, seed: int, **config) -> Path:
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**COMMON, **config))
    with torch.no_grad():  # norms away from 1, so that they matter
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    model.to(torch.float16).save_pretrained(dst)
    copy_tokenizer(dst)
    return dst


def make_random_model(arch: str, dst: Path, seed: int = 0) -> Path:
    config_class, model_class, shape = ARCH_CONFIGS[arch]
    return _save_random(config_class, model_class, dst, seed, **shape)


# Mixture-of-experts models (not in ARCH_CONFIGS: the layer-by-layer quantizers take them apart).
# Each has expert tensors whose rows fit 256-blocks (the k-quants run on the stacked experts) and
# others that fall back: Qwen2-MoE's gate/up experts (hidden 128) to 32-blocks and its shared
# expert's down (72) to F16; Qwen3-MoE's down experts (64) and attention output (4 heads × 48) to 32-blocks.
MOE_CONFIGS = {
    "qwen2moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", dict(hidden_size=128, intermediate_size=320, moe_intermediate_size=256, shared_expert_intermediate_size=72, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)),
    # norm_topk_prob: llama.cpp's qwen3moe always renormalizes the chosen experts' weights, as Qwen3-MoE checkpoints ask.
    "qwen3moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", dict(hidden_size=256, intermediate_size=320, moe_intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=48, norm_topk_prob=True)),
}


def make_random_moe(arch: str, dst: Path, n_experts: int = 4, n_used: int = 2, seed: int = 0, **overrides) -> Path:
    """A random-weight MoE checkpoint of `arch` (a MOE_CONFIGS key), saved as transformers saves
    it: one tensor per expert and projection."""
    config_class, model_class, shape = MOE_CONFIGS[arch]
    return _save_random(config_class, model_class, dst, seed, **{**shape, **overrides}, num_experts=n_experts, num_experts_per_tok=n_used)

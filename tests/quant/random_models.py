"""Random-weight Llama checkpoints of chosen shapes, for the quantizer's tests and its bench
(scripts/bench_quantize.py): numpy only, so building one takes seconds and no torch.

SMOLLM2 is SmolLM2-135M's shape (hidden 576, ffn 1536, 9 heads of 64, 3 KV heads, vocab 49152,
tied embeddings): 576 is no multiple of 256, so most tensors fall back from the k-quants to
Q4_0/Q5_0/Q5_1/Q8_0 and only ffn_down (rows of 1536) keeps one, as on the real model.
"""

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "tiny-qwen2"


@dataclass(frozen=True)
class LlamaShape:
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False

    def with_layers(self, layers: int) -> "LlamaShape":
        return replace(self, layers=layers)


SMOLLM2 = LlamaShape(hidden=576, ffn=1536, layers=30, heads=9, kv_heads=3, vocab=49152, tied=True)
BENCH = LlamaShape(hidden=1024, ffn=4096, layers=16, heads=16, kv_heads=4, vocab=32000)  # ~300M parameters, 600 MiB of f16


def make_llama(out: Path, shape: LlamaShape, seed: int = 0) -> Path:
    """A LlamaForCausalLM folder with random N(0, 0.02) fp16 weights and the fixture's tokenizer (its
    4,000 tokens padded to `shape.vocab` embedding rows)."""
    rng = np.random.default_rng(seed)
    head_dim = shape.hidden // shape.heads

    def w(*dims):
        return (rng.standard_normal(dims, dtype=np.float32) * 0.02).astype(np.float16)

    tensors = {"model.embed_tokens.weight": w(shape.vocab, shape.hidden), "model.norm.weight": np.ones(shape.hidden, np.float16)}
    if not shape.tied:
        tensors["lm_head.weight"] = w(shape.vocab, shape.hidden)
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": np.ones(shape.hidden, np.float16),
            p + "post_attention_layernorm.weight": np.ones(shape.hidden, np.float16),
            p + "self_attn.q_proj.weight": w(shape.heads * head_dim, shape.hidden),
            p + "self_attn.k_proj.weight": w(shape.kv_heads * head_dim, shape.hidden),
            p + "self_attn.v_proj.weight": w(shape.kv_heads * head_dim, shape.hidden),
            p + "self_attn.o_proj.weight": w(shape.hidden, shape.heads * head_dim),
            p + "mlp.gate_proj.weight": w(shape.ffn, shape.hidden),
            p + "mlp.up_proj.weight": w(shape.ffn, shape.hidden),
            p + "mlp.down_proj.weight": w(shape.hidden, shape.ffn),
        }
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "model.safetensors")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": shape.vocab,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.ffn,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": shape.tied,
        "torch_dtype": "float16",
        "eos_token_id": 3997,
    }
    (out / "config.json").write_text(json.dumps(config, indent=1))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(FIXTURE / name, out / name)
    return out

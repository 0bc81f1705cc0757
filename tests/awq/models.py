"""The fixture with the activation outliers real LLMs have: a few channels of each norm's output
scaled up by a large factor, and the weights that read them scaled down by the same factor. The
function is the fixture's (up to fp16 rounding); what changes is what AWQ is about: channels whose
activations are large while their weights are small, so round-to-nearest loses them.

The trained fixture itself is too small and too briefly trained to have such channels (its
normed activations peak at 1.3-3× their median, against tens to hundreds in real models)."""

from pathlib import Path

import torch
from transformers import Qwen2ForCausalLM

from tests.conftest import FIXTURE
from tests.variants import copy_tokenizer

NORM_READERS = {
    "input_layernorm": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "post_attention_layernorm": ("mlp.gate_proj", "mlp.up_proj"),
}


def make_outlier_variant(dst: Path, channels: int = 4, factor: float = 32.0, seed: int = 0) -> Path:
    model = Qwen2ForCausalLM.from_pretrained(FIXTURE, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.model.layers:
            for norm, readers in NORM_READERS.items():
                picked = torch.randperm(model.config.hidden_size, generator=generator)[:channels]
                layer.get_submodule(norm).weight[picked] *= factor
                for name in readers:
                    layer.get_submodule(name).weight[:, picked] /= factor
    model.to(torch.float16).save_pretrained(dst)
    copy_tokenizer(dst)
    return dst


def make_spread_variant(dst: Path, sigma: float = 1.0, seed: int = 0) -> Path:
    """The fixture with every linear's input channels spread log-normally (σ in log space), as
    real models' are across all channels rather than in a few: the norms' outputs, the up
    projection's rows (so act(gate)·up feeding down_proj) and the value rows (so the attention
    output feeding o_proj) scaled by exp(σ·N(0,1)) per channel, the readers' columns by the
    inverse. The function is the fixture's (up to fp16 rounding)."""
    model = Qwen2ForCausalLM.from_pretrained(FIXTURE, dtype=torch.float32)
    config = model.config
    generator = torch.Generator().manual_seed(seed)

    def spread(n: int) -> torch.Tensor:
        return torch.exp(sigma * torch.randn(n, generator=generator))

    head_dim = config.hidden_size // config.num_attention_heads
    heads_per_kv = config.num_attention_heads // config.num_key_value_heads
    with torch.no_grad():
        for layer in model.model.layers:
            for norm, readers in NORM_READERS.items():
                s = spread(config.hidden_size)
                layer.get_submodule(norm).weight.mul_(s)
                for name in readers:
                    layer.get_submodule(name).weight.div_(s)
            mlp, attn = layer.mlp, layer.self_attn
            s = spread(config.intermediate_size)
            mlp.up_proj.weight.mul_(s[:, None])
            mlp.down_proj.weight.div_(s)
            s = spread(attn.v_proj.weight.shape[0])
            attn.v_proj.weight.mul_(s[:, None])
            attn.v_proj.bias.mul_(s)
            attn.o_proj.weight.div_(s.view(config.num_key_value_heads, head_dim).repeat_interleave(heads_per_kv, 0).reshape(-1))
    model.to(torch.float16).save_pretrained(dst)
    copy_tokenizer(dst)
    return dst

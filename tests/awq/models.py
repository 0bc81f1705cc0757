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

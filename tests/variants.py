"""Variants of the bundled fixture, re-saved by the tests: as Llama (with and without tied
embeddings), and as a sharded bf16 checkpoint. Same trained weights, different paths through the
converter."""

import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2ForCausalLM

from tests.conftest import FIXTURE

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def copy_tokenizer(dst: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copy(FIXTURE / name, dst / name)


# Llama 3 RoPE scaling with a short original context, so that it changes frequencies the 512-token
# test chunks use: wavelengths over 128 are stretched 8×, those between 32 and 128 blended.
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 128,
}


def resave_as_llama(dst: Path, tied: bool, rope_scaling: dict | None = None) -> Path:
    """The fixture as LlamaForCausalLM: attention_bias=True carries Qwen2's q/k/v biases, and o_proj
    gets a zero bias. Tied: lm_head is dropped and the embedding serves as the output matrix."""
    qwen = Qwen2ForCausalLM.from_pretrained(FIXTURE, dtype=torch.float32)
    qc = qwen.config
    config = LlamaConfig(
        vocab_size=qc.vocab_size,
        hidden_size=qc.hidden_size,
        intermediate_size=qc.intermediate_size,
        num_hidden_layers=qc.num_hidden_layers,
        num_attention_heads=qc.num_attention_heads,
        num_key_value_heads=qc.num_key_value_heads,
        max_position_embeddings=qc.max_position_embeddings,
        rms_norm_eps=qc.rms_norm_eps,
        rope_parameters=rope_scaling or {"rope_type": "default", "rope_theta": 10000.0},
        attention_bias=True,
        tie_word_embeddings=tied,
        eos_token_id=qc.eos_token_id,
        pad_token_id=qc.pad_token_id,
        bos_token_id=None,
    )
    llama = LlamaForCausalLM(config)
    state = qwen.state_dict()
    for i in range(qc.num_hidden_layers):
        state[f"model.layers.{i}.self_attn.o_proj.bias"] = torch.zeros(qc.hidden_size)
    if tied:
        del state["lm_head.weight"]
    missing, unexpected = llama.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    if tied:
        llama.tie_weights()
    dst.mkdir(parents=True, exist_ok=True)
    llama.to(torch.float16).save_pretrained(dst)
    copy_tokenizer(dst)
    return dst


def resave_sharded_bf16(dst: Path) -> Path:
    qwen = Qwen2ForCausalLM.from_pretrained(FIXTURE, dtype=torch.float32)
    dst.mkdir(parents=True, exist_ok=True)
    qwen.to(torch.bfloat16).save_pretrained(dst, max_shard_size="3MB")
    copy_tokenizer(dst)
    return dst


def fake_quantized_copy(source: Path, dst: Path, quantize: Callable[[torch.Tensor], torch.Tensor]) -> Path:
    """A plain HF copy of `source` whose decoder-layer linears hold `quantize(weight)`, e.g. the
    round-to-nearest baseline the quantizers are measured against."""
    import qconvert
    from qconvert.convert.arch import LLAMA_BLOCK

    model = qconvert.load(source)
    for layer in model.model.layers:
        for name in LLAMA_BLOCK.linears:
            linear = layer.get_submodule(name)
            linear.weight.data = quantize(linear.weight.data)
    model.save_pretrained(dst)
    copy_tokenizer(dst)
    return dst

"""RoPE scaling against llama.cpp's own convert_hf_to_gguf.py: small random Llama and Qwen2
checkpoints with linear, YaRN and Llama 3 scaling in config.json (the legacy `rope_scaling` with a
top-level rope_theta, or transformers 5's `rope_parameters`), converted by both at f16: every
metadata key and every tensor byte (rope_freqs included) the same."""

import json
import shutil

import pytest

from qconvert.convert.rope import check_rope_scaling
from qconvert.errors import QConvertError
from tests.conftest import FIXTURE, convert
from tests.convert.test_against_convert_hf_to_gguf import COSMETIC_KEYS, reference_convert
from tests.quant.gguf_compare import differences, metadata, metadata_differences
from tests.variants import copy_tokenizer

# Short original contexts, so that Llama 3's blend and YaRN's ramp cover frequencies of a 64-wide head.
LINEAR = {"type": "linear", "factor": 2.0}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512}
YARN_TUNED = {**YARN, "beta_fast": 16.0, "beta_slow": 2.0, "attention_factor": 1.25}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 128}
THETA = 500000.0

CASES = {
    "llama-linear": ("llama", LINEAR, "rope_scaling"),
    "llama-yarn": ("llama", YARN_TUNED, "rope_scaling"),
    "llama-llama3": ("llama", LLAMA3, "rope_scaling"),
    "llama-llama3-rope-parameters": ("llama", LLAMA3, "rope_parameters"),
    "qwen2-linear": ("qwen2", LINEAR, "rope_parameters"),
    "qwen2-yarn": ("qwen2", YARN, "rope_scaling"),
}


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """Random Llama and Qwen2 checkpoints (4096 rows for the fixture's tokenizer, head_dim 64)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    shape = dict(vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, max_position_embeddings=2048)
    out = {}
    for arch, config_cls, model_cls in (("llama", LlamaConfig, LlamaForCausalLM), ("qwen2", Qwen2Config, Qwen2ForCausalLM)):
        torch.manual_seed(0)
        out[arch] = tmp_path_factory.mktemp(f"random-{arch}")
        model_cls(config_cls(**shape)).to(torch.float16).save_pretrained(out[arch])
        copy_tokenizer(out[arch])
    return out


def with_rope(src, dst, rope: dict, style: str):
    """A copy of `src` whose config.json carries `rope` in the given style."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.pop("rope_scaling", None)
    config.pop("rope_parameters", None)
    config.pop("rope_theta", None)
    if style == "rope_scaling":  # transformers 4: the scaling alone, theta beside it
        config.update(rope_scaling=dict(rope), rope_theta=THETA)
    else:  # transformers 5: theta inside
        config.update(rope_parameters={**rope, "rope_theta": THETA})
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


@pytest.mark.parametrize("case", list(CASES))
def test_rope_scaling_converts_like_convert_hf_to_gguf(llama_tools, tmp_path, random_weights, case):
    arch, rope, style = CASES[case]
    model_dir = with_rope(random_weights[arch], tmp_path / case, rope, style)
    ours = convert(model_dir, tmp_path / "ours.gguf")
    theirs = reference_convert(model_dir, tmp_path / "theirs.gguf")

    assert differences(ours, theirs) == []
    assert metadata_differences(ours, theirs, ignore=COSMETIC_KEYS) == []
    # and the scaling is there at all
    meta = metadata(ours)
    if rope is LLAMA3:
        from tests.quant.gguf_compare import tensor_table

        assert "rope_freqs.weight" in tensor_table(ours)
    else:
        assert meta[f"{arch}.rope.scaling.type"] == rope.get("rope_type", rope.get("type"))
        assert meta[f"{arch}.rope.scaling.factor"] == rope["factor"]


def test_llama3_scaling_needs_a_llama_model():
    assert check_rope_scaling(LLAMA3, "llama") == "llama3"
    with pytest.raises(QConvertError, match="rope_freqs"):
        check_rope_scaling(LLAMA3, "qwen2")
    assert check_rope_scaling(YARN, "qwen2") == "yarn"


def test_llama3_scaling_on_qwen2_is_refused(tmp_path):
    """llama.cpp's qwen2 reads no rope_freqs tensor (a file with one does not load), and its converter
    silently drops the scaling: qconvert refuses instead."""
    model_dir = tmp_path / "qwen2-llama3"
    shutil.copytree(FIXTURE, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["rope_parameters"] = {**LLAMA3, "rope_theta": 10000.0}
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(QConvertError, match="rope_freqs"):
        convert(model_dir, tmp_path / "ours.gguf")
    assert not (tmp_path / "ours.gguf").exists()

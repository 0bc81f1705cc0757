"""HF → GGUF: the tensors, types and metadata we write, read back with the gguf package's reader,
checked against the source checkpoint read by the safetensors library."""

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, LlamaFileType
from safetensors.numpy import load_file

from qconvert.quant.file_types import FileType
from tests.conftest import FIXTURE, convert
from tests.variants import resave_sharded_bf16

# The llama.cpp names, written out from the GGUF tensor naming convention (not from our map).
EXPECTED_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
for _i in range(4):
    for _hf, _gg in [
        ("input_layernorm.weight", "attn_norm.weight"),
        ("post_attention_layernorm.weight", "ffn_norm.weight"),
        ("self_attn.q_proj.weight", "attn_q.weight"),
        ("self_attn.q_proj.bias", "attn_q.bias"),
        ("self_attn.k_proj.weight", "attn_k.weight"),
        ("self_attn.k_proj.bias", "attn_k.bias"),
        ("self_attn.v_proj.weight", "attn_v.weight"),
        ("self_attn.v_proj.bias", "attn_v.bias"),
        ("self_attn.o_proj.weight", "attn_output.weight"),
        ("mlp.gate_proj.weight", "ffn_gate.weight"),
        ("mlp.up_proj.weight", "ffn_up.weight"),
        ("mlp.down_proj.weight", "ffn_down.weight"),
    ]:
        EXPECTED_NAMES[f"model.layers.{_i}.{_hf}"] = f"blk.{_i}.{_gg}"


def _tensors(path) -> dict:
    return {t.name: t for t in GGUFReader(path).tensors}


def _field(reader: GGUFReader, key: str):
    return reader.fields[key].contents()


def _f32(t) -> np.ndarray:
    """GGUF tensor data as float32 in numpy (row-major) shape."""
    shape = tuple(int(d) for d in reversed(t.shape))
    if t.tensor_type == GGMLQuantizationType.BF16:
        bits = np.frombuffer(t.data.tobytes(), dtype=np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.asarray(t.data, dtype=np.float32).reshape(shape)


@pytest.mark.parametrize("out_type", [FileType.F32, FileType.F16, FileType.BF16])
def test_every_tensor_is_written_from_its_source(gguf_dir, out_type):
    path = convert(FIXTURE, gguf_dir / f"check-{out_type.value}.gguf", out_type)
    tensors = _tensors(path)
    source = load_file(FIXTURE / "model.safetensors")
    assert set(tensors) == set(EXPECTED_NAMES.values())
    weight_type = {FileType.F32: GGMLQuantizationType.F32, FileType.F16: GGMLQuantizationType.F16, FileType.BF16: GGMLQuantizationType.BF16}
    for hf_name, gguf_name in EXPECTED_NAMES.items():
        t, src = tensors[gguf_name], source[hf_name].astype(np.float32)
        one_d = src.ndim == 1
        assert t.tensor_type == (GGMLQuantizationType.F32 if one_d else weight_type[out_type]), gguf_name
        expected = torch.from_numpy(src).to(torch.bfloat16).float().numpy() if (out_type == FileType.BF16 and not one_d) else src
        assert np.array_equal(_f32(t), expected), gguf_name


def test_metadata_says_what_llama_cpp_needs(fixture_f16, fixture_config):
    reader = GGUFReader(fixture_f16)
    c = fixture_config
    assert _field(reader, "general.architecture") == "qwen2"
    assert _field(reader, "general.file_type") == LlamaFileType.MOSTLY_F16
    assert _field(reader, "general.quantization_version") == 2
    assert _field(reader, "qwen2.block_count") == c["num_hidden_layers"]
    assert _field(reader, "qwen2.embedding_length") == c["hidden_size"]
    assert _field(reader, "qwen2.feed_forward_length") == c["intermediate_size"]
    assert _field(reader, "qwen2.attention.head_count") == c["num_attention_heads"]
    assert _field(reader, "qwen2.attention.head_count_kv") == c["num_key_value_heads"]
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    assert _field(reader, "tokenizer.ggml.pre") == "qwen2"
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == c["vocab_size"]
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(FIXTURE)
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        i = hf.convert_tokens_to_ids(special)
        assert tokens[i] == special and types[i] == 3  # CONTROL
    assert types[-1] == 5 and tokens[-1] == f"[PAD{c['vocab_size'] - 1}]"  # padding rows: UNUSED
    assert _field(reader, "tokenizer.ggml.eos_token_id") == hf.eos_token_id
    assert "<|im_start|>" in _field(reader, "tokenizer.chat_template")
    assert _field(reader, "tokenizer.ggml.add_bos_token") is False


def test_sharded_bf16_checkpoint_streams_to_f16(tmp_path):
    src_dir = resave_sharded_bf16(tmp_path / "bf16")
    assert (src_dir / "model.safetensors.index.json").is_file()
    path = convert(src_dir, tmp_path / "from-bf16.gguf", FileType.F16)
    tensors = _tensors(path)
    reference = {}
    for shard in src_dir.glob("*.safetensors"):
        from safetensors.torch import load_file as load_torch

        reference.update(load_torch(shard))
    for hf_name, gguf_name in EXPECTED_NAMES.items():
        src = reference[hf_name].float()
        expected = src.numpy() if src.ndim == 1 else src.half().float().numpy()
        assert np.array_equal(_f32(tensors[gguf_name]), expected), gguf_name

"""The AWQ GEMM checkpoint qconvert writes: its files and config as transformers/vLLM read them,
tensors the independent unpacker restores to exactly the fake-quantized weights, the same weights
through qconvert.load and `qconvert gguf`, and real-model shapes (hidden 576, GQA, tied embeddings)."""

import json

import numpy as np
import pytest
import torch
from gguf import GGUFReader

import qconvert
from qconvert.awq.grid import quantize
from qconvert.awq.packing import dequantize_gemm, pack_gemm
from tests.awq.conftest import awq_cli
from tests.awq.unpack_reference import dequantize_reference
from tests.conftest import FIXTURE, convert, run_cli
from tests.gptq.models import make_random_llama
from tests.gptq.test_checkpoint import LINEARS, read_tensors


@pytest.mark.parametrize("shape", [(40, 256), (192, 576), (8, 32)])
@pytest.mark.parametrize("group_size", [32, 64, 128, -1])
@pytest.mark.parametrize("zero_point", [True, False])
def test_reference_unpacker_restores_the_fake_quantized_weights(shape, group_size, zero_point):
    if group_size != -1 and shape[1] % group_size:
        pytest.skip("the GEMM format needs the group size to divide the input width")
    torch.manual_seed(shape[0] + group_size)
    w = torch.randn(shape) * torch.rand(shape[1]) * 0.1
    q = quantize(w, 4, group_size, zero_point)
    packed = pack_gemm(q.q, q.zeros, q.scales)
    groups = 1 if group_size == -1 else shape[1] // group_size
    assert packed["qweight"].shape == (shape[1], shape[0] // 8) and packed["qweight"].dtype == torch.int32
    assert packed["qzeros"].shape == (groups, shape[0] // 8) and packed["scales"].shape == (groups, shape[0])
    unpacked = dequantize_reference(*(packed[k].numpy() for k in ("qweight", "qzeros", "scales")))
    assert np.array_equal(unpacked, q.dequantized.numpy())
    assert torch.equal(dequantize_gemm(**packed), q.dequantized)


def test_config_and_files(awq_4bit):
    config = json.loads((awq_4bit / "config.json").read_text())
    qc = config["quantization_config"]
    assert (qc["quant_method"], qc["version"], qc["bits"], qc["group_size"], qc["zero_point"]) == ("awq", "gemm", 4, 128, True)
    source = json.loads((FIXTURE / "config.json").read_text())
    assert {k: v for k, v in config.items() if k not in ("quantization_config", "dtype")} == {k: v for k, v in source.items() if k != "dtype"}
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (awq_4bit / name).read_bytes() == (FIXTURE / name).read_bytes()
    assert not list(awq_4bit.glob(".*")), "temporary files left behind"


def test_tensors_layout_and_what_is_not_quantized(awq_4bit):
    ours, source = read_tensors(awq_4bit), read_tensors(FIXTURE)
    for layer in range(4):
        for linear in LINEARS:
            prefix = f"model.layers.{layer}.{linear}"
            out_features, in_features = source[f"{prefix}.weight"].shape
            assert f"{prefix}.weight" not in ours and f"{prefix}.g_idx" not in ours
            assert ours[f"{prefix}.qweight"].shape == (in_features, out_features // 8) and ours[f"{prefix}.qweight"].dtype == np.int32
            assert ours[f"{prefix}.qzeros"].shape == (in_features // 128, out_features // 8)
            assert ours[f"{prefix}.scales"].shape == (in_features // 128, out_features) and ours[f"{prefix}.scales"].dtype == np.float16
        # the scales are folded into the norms: they change, and stay fp16
        norm = f"model.layers.{layer}.input_layernorm.weight"
        assert ours[norm].dtype == np.float16 and not np.array_equal(ours[norm], source[norm])
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert np.array_equal(ours[name], source[name])


def test_load_gives_the_unpacked_weights(awq_4bit):
    tensors = read_tensors(awq_4bit)
    model = qconvert.load(awq_4bit)
    for layer in range(4):
        for linear in LINEARS:
            prefix = f"model.layers.{layer}.{linear}"
            expected = dequantize_reference(tensors[f"{prefix}.qweight"], tensors[f"{prefix}.qzeros"], tensors[f"{prefix}.scales"])
            assert np.array_equal(model.get_submodule(prefix).weight.detach().float().numpy(), expected), prefix
            if f"{prefix}.bias" in tensors:
                assert np.array_equal(model.get_submodule(prefix).bias.detach().numpy(), tensors[f"{prefix}.bias"].astype(np.float32))


def test_real_model_shapes_gqa_tied(tmp_path, small_calib):
    """Hidden 576 with group size 64 (128 would not divide it), 9 heads over 3 KV heads, tied embeddings."""
    model_dir = make_random_llama(tmp_path / "llama576")
    out = awq_cli(tmp_path / "awq", "--calib", small_calib, "--group-size", "64", model=model_dir)
    tensors = read_tensors(out)
    assert tensors["model.layers.0.self_attn.k_proj.qweight"].shape == (576, 24)
    assert tensors["model.layers.0.mlp.down_proj.scales"].shape == (24, 576)
    assert "lm_head.weight" not in tensors
    model = qconvert.load(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[5, 17, 300, 2000, 40, 41, 42, 43]])
    with torch.inference_mode():
        ours, source = model(ids).logits, qconvert.load(model_dir)(ids).logits
    assert torch.isfinite(ours).all() and torch.nn.functional.cosine_similarity(ours.flatten(), source.flatten(), dim=0) > 0.9


def test_gguf_from_awq_carries_the_dense_weights(awq_4bit, tmp_path):
    """`qconvert gguf AWQ_DIR` writes what converting the unpacked model would: the same tensor data."""
    dense_dir = tmp_path / "dense"
    qconvert.load(awq_4bit).to(torch.float16).save_pretrained(dense_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (dense_dir / name).write_bytes((awq_4bit / name).read_bytes())
    via_awq = tmp_path / "awq.gguf"
    assert run_cli("gguf", awq_4bit, "-o", via_awq).rc == 0
    a, b = GGUFReader(via_awq), GGUFReader(convert(dense_dir, tmp_path / "dense.gguf"))
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors):
        assert ta.tensor_type == tb.tensor_type and np.array_equal(ta.data, tb.data), ta.name


def test_inspect_shows_the_quantization(awq_4bit):
    result = run_cli("inspect", awq_4bit)
    assert result.rc == 0, result.stderr
    assert "quantization: awq (gemm): bits 4, group_size 128, zero_point True" in result.stdout

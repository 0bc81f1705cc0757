"""The GPTQ checkpoint qconvert writes: its files and config as transformers/optimum/vLLM read them,
tensors the independent unpacker restores to exactly the weights qconvert.load gives, unquantized
tensors untouched, and the same weights reaching a GGUF file through `qconvert gguf`."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

import qconvert
from tests.conftest import EVAL_TEXT, FIXTURE, PPL_CHUNKS, convert, ppl_json, run_cli
from tests.gptq.conftest import gptq_cli
from tests.gptq.models import make_random_llama
from tests.gptq.unpack_reference import dequantize_reference

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def read_tensors(folder) -> dict[str, np.ndarray]:
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="numpy") as f:
            tensors.update({name: f.get_tensor(name) for name in f.keys()})
    return tensors


def test_config_and_files(gptq_4bit):
    config = json.loads((gptq_4bit / "config.json").read_text())
    qc = config["quantization_config"]
    assert qc["quant_method"] == "gptq" and qc["checkpoint_format"] == "gptq"
    assert (qc["bits"], qc["group_size"], qc["sym"], qc["desc_act"]) == (4, 128, True, False)
    assert json.loads((gptq_4bit / "quantize_config.json").read_text()) == qc
    source = json.loads((FIXTURE / "config.json").read_text())
    assert {k: v for k, v in config.items() if k not in ("quantization_config", "dtype", "torch_dtype")} == {
        k: v for k, v in source.items() if k not in ("dtype", "torch_dtype")
    }
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (gptq_4bit / name).read_bytes() == (FIXTURE / name).read_bytes()
    assert not list(gptq_4bit.glob(".*")), "temporary files left behind"


def test_tensors_layout_and_untouched_parts(gptq_4bit):
    ours, source = read_tensors(gptq_4bit), read_tensors(FIXTURE)
    for layer in range(4):
        for linear in LINEARS:
            prefix = f"model.layers.{layer}.{linear}"
            out_features, in_features = source[f"{prefix}.weight"].shape
            assert f"{prefix}.weight" not in ours
            assert ours[f"{prefix}.qweight"].shape == (in_features // 8, out_features) and ours[f"{prefix}.qweight"].dtype == np.int32
            assert ours[f"{prefix}.qzeros"].shape == (in_features // 128, out_features // 8)
            assert ours[f"{prefix}.scales"].shape == (in_features // 128, out_features) and ours[f"{prefix}.scales"].dtype == np.float16
            assert np.array_equal(ours[f"{prefix}.g_idx"], np.arange(in_features) // 128)
            # symmetric 4-bit: zero point 8, stored as 7 in every nibble
            assert np.all(ours[f"{prefix}.qzeros"].view(np.uint32) == 0x77777777)
    untouched = [n for n in source if not any(f".{linear}.weight" in n for linear in LINEARS)]
    assert untouched and all(np.array_equal(ours[n], source[n]) for n in untouched)  # the fixture is fp16 already


def _assert_loads_as_unpacked(folder, n_layers, bits):
    tensors = read_tensors(folder)
    model = qconvert.load(folder)
    for layer in range(n_layers):
        for linear in LINEARS:
            prefix = f"model.layers.{layer}.{linear}"
            expected = dequantize_reference(*(tensors[f"{prefix}.{k}"] for k in ("qweight", "qzeros", "scales", "g_idx")), bits)
            loaded = model.get_submodule(prefix).weight.detach().numpy()
            assert np.array_equal(loaded, expected), prefix
    return model


def test_load_gives_the_unpacked_weights(gptq_4bit):
    model = _assert_loads_as_unpacked(gptq_4bit, 4, 4)
    source = qconvert.load(FIXTURE)
    for prefix in ("model.layers.0.self_attn.q_proj", "model.layers.3.mlp.down_proj"):
        w, q = (m.get_submodule(prefix).weight.detach() for m in (source, model))
        assert 0 < float((w - q).norm() / w.norm()) < 0.2  # quantized, and close


@pytest.mark.parametrize(
    "args, bits",
    [
        (("--bits", "4", "--group-size", "64", "--desc-act", "--asym", "--compute-dtype", "float32"), 4),
        (("--bits", "8", "--group-size", "32", "--desc-act", "--static-groups", "--max-shard-size", "2MB"), 8),
        (("--bits", "2", "--group-size", "-1", "--no-true-sequential"), 2),
        (("--bits", "3", "--group-size", "64", "--asym"), 3),
    ],
    ids=["w4g64-act-asym-fp32", "w8g32-act-static-sharded", "w2-perchannel-not-sequential", "w3g64-asym"],
)
def test_variants_load_as_unpacked(gptq_dirs, calib_file, args, bits):
    out = gptq_cli(gptq_dirs / "-".join(args).replace("--", ""), "--calib", calib_file, *args)
    _assert_loads_as_unpacked(out, 4, bits)
    if "--max-shard-size" in args:
        index = json.loads((out / "model.safetensors.index.json").read_text())
        shards = sorted(out.glob("model-*-of-*.safetensors"))
        assert len(shards) > 1 and set(index["weight_map"].values()) == {p.name for p in shards}
        for shard in shards:  # within the limit (plus its header), unless one tensor alone is larger
            n_tensors = sum(1 for f in index["weight_map"].values() if f == shard.name)
            assert shard.stat().st_size <= 2_000_000 + 50_000 or n_tensors == 1, (shard.name, n_tensors)


def test_real_model_shapes_partial_groups_gqa_tied(tmp_path, calib_file):
    """Hidden 576 (group 128 leaves a last group of 64), 9 heads over 3 KV heads, tied embeddings."""
    model_dir = make_random_llama(tmp_path / "llama576")
    out = gptq_cli(tmp_path / "gptq", "--calib", calib_file, "--group-size", "128", "--desc-act", model=model_dir)
    tensors = read_tensors(out)
    assert tensors["model.layers.0.self_attn.k_proj.scales"].shape == (5, 192)  # ceil(576/128) groups
    assert tensors["model.layers.0.mlp.down_proj.scales"].shape == (12, 576)
    assert "lm_head.weight" not in tensors
    g_idx = tensors["model.layers.1.self_attn.q_proj.g_idx"]
    assert sorted(np.bincount(g_idx)) == [64, 128, 128, 128, 128]
    model = _assert_loads_as_unpacked(out, 2, 4)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[5, 17, 300, 2000, 40, 41, 42, 43]])
    with torch.inference_mode():
        ours, source = model(ids).logits, qconvert.load(model_dir)(ids).logits
    assert torch.isfinite(ours).all() and torch.nn.functional.cosine_similarity(ours.flatten(), source.flatten(), dim=0) > 0.9


def test_gguf_from_gptq_carries_the_dense_weights(gptq_4bit, tmp_path, llama_tools):
    """`qconvert gguf GPTQ_DIR` writes what converting the unpacked model would: the same tensor data."""
    from gguf import GGUFReader

    dense_dir = tmp_path / "dense"
    qconvert.load(gptq_4bit).to(torch.float16).save_pretrained(dense_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (dense_dir / name).write_bytes((gptq_4bit / name).read_bytes())
    via_gptq = tmp_path / "gptq.gguf"
    assert run_cli("gguf", gptq_4bit, "-o", via_gptq).rc == 0
    via_dense = convert(dense_dir, tmp_path / "dense.gguf")
    a, b = GGUFReader(via_gptq), GGUFReader(via_dense)
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors):
        assert ta.tensor_type == tb.tensor_type and np.array_equal(ta.data, tb.data), ta.name
    # llama.cpp runs the GGUF as the same model torch runs from the GPTQ folder
    in_llama_cpp = ppl_json(via_gptq, "--text", EVAL_TEXT, "--chunks", PPL_CHUNKS)["ppl"]
    in_torch = ppl_json(gptq_4bit, "--text", EVAL_TEXT, "--chunks", PPL_CHUNKS)["ppl"]
    assert abs(in_llama_cpp - in_torch) < 0.002 * in_torch, (in_llama_cpp, in_torch)
    q4 = tmp_path / "gptq-q4_k_m.gguf"
    assert run_cli("gguf", gptq_4bit, "-o", q4, "--type", "q4_k_m").rc == 0
    assert ppl_json(q4, "--text", EVAL_TEXT, "--chunks", PPL_CHUNKS)["ppl"] < 1.1 * in_torch


def test_inspect_shows_the_quantization(gptq_4bit):
    result = run_cli("inspect", gptq_4bit)
    assert result.rc == 0, result.stderr
    assert "quantization: gptq (gptq): bits 4, group_size 128, sym True, desc_act False" in result.stdout
    assert "model.layers.0.self_attn.q_proj.qweight" in result.stdout and "I32" in result.stdout

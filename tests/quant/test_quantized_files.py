"""Quantized files run in llama.cpp with the expected quality order; bad input is refused
cleanly; an interrupted run leaves nothing behind."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from qconvert.quant.file_types import FileType
from tests.conftest import EVAL_TEXT, FIXTURE, PPL_CHUNKS, interrupt_cli, ppl_json, run_cli
from tests.variants import copy_tokenizer

QUANTIZED = [t for t in FileType if t not in (FileType.F32, FileType.F16, FileType.BF16)]


@pytest.fixture(scope="module")
def quality(llama_tools, fixture_f16, tmp_path_factory) -> dict[str, dict]:
    """Perplexity and KL divergence from the f16 file, for every quantized type of the fixture."""
    d = tmp_path_factory.mktemp("ppl")
    table = {"f16": ppl_json(fixture_f16, "--text", EVAL_TEXT, "--chunks", PPL_CHUNKS)}
    for file_type in QUANTIZED:
        out = d / f"{file_type.value}.gguf"
        assert run_cli("quantize", fixture_f16, out, file_type.value).rc == 0
        table[file_type.value] = ppl_json(out, "--text", EVAL_TEXT, "--chunks", PPL_CHUNKS, "--kld-base", fixture_f16)
    print("\ntiny-qwen2 by file type (ppl, mean KLD vs f16):")
    for name, r in table.items():
        print(f"  {name:7s} {r['ppl']:9.4f} {r.get('kld_mean', 0.0):.6f}")
    return table


def test_every_type_runs_and_q8_0_is_as_good_as_f16(quality):
    assert abs(quality["q8_0"]["ppl"] - quality["f16"]["ppl"]) / quality["f16"]["ppl"] < 0.01
    assert quality["q8_0"]["kld_mean"] < 1e-4


def test_quality_follows_bits(quality):
    kld = {name: r["kld_mean"] for name, r in quality.items() if name != "f16"}
    assert max(kld, key=kld.get) == "q2_k"  # the fewest bits, the furthest from f16
    assert kld["q8_0"] < kld["q6_k"] < kld["q5_k_m"] < kld["q4_k_m"] < kld["q3_k_m"] < kld["q2_k"]
    assert kld["q5_0"] < kld["q4_0"] and kld["q5_1"] < kld["q4_1"]
    assert max(quality, key=lambda name: quality[name]["ppl"]) == "q2_k"


def _with_nan(tmp_path):
    dst = tmp_path / "nan-model"
    dst.mkdir()
    tensors = load_file(FIXTURE / "model.safetensors")
    tensors["model.layers.2.mlp.up_proj.weight"][5, 7] = float("nan")
    save_file(tensors, dst / "model.safetensors")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (dst / name).write_bytes((FIXTURE / name).read_bytes())
    return dst


def test_nan_weight_is_named_and_nothing_written(tmp_path):
    model = _with_nan(tmp_path)
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    result = run_cli("gguf", model, "--type", "q4_k_m", "-o", out)
    assert result.rc == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "blk.2.ffn_up.weight" in result.stderr and "row 5, column 7" in result.stderr
    assert list(out.parent.iterdir()) == []


def test_nan_in_a_gguf_is_named_too(tmp_path):
    model = _with_nan(tmp_path)
    f16 = tmp_path / "nan-f16.gguf"
    assert run_cli("gguf", model, "-o", f16).rc == 0  # f16 keeps a NaN; quantizing must not
    result = run_cli("quantize", f16, tmp_path / "q.gguf", "q8_0")
    assert result.rc == 2 and "blk.2.ffn_up.weight" in result.stderr
    assert not (tmp_path / "q.gguf").exists()


def test_already_quantized_input_is_refused(fixture_f16, tmp_path):
    q4 = tmp_path / "q4.gguf"
    assert run_cli("quantize", fixture_f16, q4, "q4_k_m").rc == 0
    result = run_cli("quantize", q4, tmp_path / "q2.gguf", "q2_k")
    assert result.rc == 2 and "already quantized" in result.stderr
    assert not (tmp_path / "q2.gguf").exists()


def test_truncated_gguf_is_a_clear_error(fixture_f16, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(fixture_f16.read_bytes()[:-100_000])
    result = run_cli("quantize", cut, tmp_path / "q.gguf", "q8_0")
    assert result.rc == 2 and len(result.stderr.strip().splitlines()) == 1 and "truncated" in result.stderr
    assert not (tmp_path / "q.gguf").exists()


def test_unknown_quantize_type_lists_the_valid_ones(fixture_f16, tmp_path):
    result = run_cli("quantize", fixture_f16, tmp_path / "x.gguf", "q4_k_x")
    assert result.rc == 2 and "q4_k_m" in result.stderr and "q2_k" in result.stderr


def test_type_names_are_case_insensitive(fixture_f16, tmp_path):
    assert run_cli("quantize", fixture_f16, tmp_path / "x.gguf", "Q4_K_M").rc == 0


def test_ctrl_c_leaves_no_partial_output(tmp_path):
    """A model big enough to take seconds; SIGINT once writing has begun."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=4096, hidden_size=1024, intermediate_size=4096, num_hidden_layers=8, num_attention_heads=8)
    LlamaForCausalLM(config).to(torch.float16).save_pretrained(tmp_path / "big")
    copy_tokenizer(tmp_path / "big")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rc, stderr = interrupt_cli("gguf", tmp_path / "big", "--type", "q2_k", "-o", out_dir / "big.gguf", ready=lambda: any(out_dir.iterdir()))
    assert rc == 130, stderr
    assert "interrupted" in stderr
    assert list(out_dir.iterdir()) == []

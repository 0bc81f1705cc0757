"""The real llama.cpp build loads what we write, tokenizes like the HF tokenizer, and computes the
same perplexity as transformers does on the HF checkpoint (within 1%)."""

import ast

import pytest
from transformers import AutoTokenizer

from qconvert.quant.file_types import FileType
from qconvert.llama_cpp import run_tool
from tests.conftest import EVAL_TEXT, FIXTURE, PPL_CHUNKS, convert, ppl_json
from tests.variants import LLAMA3_ROPE, resave_as_llama

SAMPLE = (
    "The quick brown fox, in 1984, jumped over 12345 lazy dogs!\n\n"
    "    def f(x):\n        return x ** 2  # squares\n"
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n"
    "Don't stop—it's   spaced\tout… e=mc² 3.14159\n"
)


def llama_cpp_token_ids(gguf_path, text_path) -> list[int]:
    out = run_tool("llama-tokenize", ["-m", str(gguf_path), "-f", str(text_path), "--ids", "--log-disable"]).stdout
    line = next(ln for ln in reversed(out.splitlines()) if ln.startswith("["))
    return ast.literal_eval(line)


@pytest.mark.parametrize("text", [SAMPLE, None], ids=["mixed-sample", "eval-text-head"])
def test_llama_cpp_tokenizes_like_hf(llama_tools, fixture_f16, tmp_path, text):
    text = text if text is not None else EVAL_TEXT.read_text(encoding="utf-8")[:4000]
    path = tmp_path / "sample.txt"
    path.write_text(text, encoding="utf-8")
    hf_ids = AutoTokenizer.from_pretrained(FIXTURE)(text)["input_ids"]
    assert llama_cpp_token_ids(fixture_f16, path) == hf_ids


def _assert_ppl_agrees(gguf_path, hf_dir):
    llama = ppl_json(gguf_path, "--text", EVAL_TEXT, "--chunks", PPL_CHUNKS)
    torch_ = ppl_json(hf_dir, "--text", EVAL_TEXT, "--chunks", PPL_CHUNKS)
    assert llama["n_tokens"] == torch_["n_tokens"] == PPL_CHUNKS * 255
    assert abs(llama["ppl"] - torch_["ppl"]) / torch_["ppl"] < 0.01, (llama, torch_)
    return llama, torch_


def test_qwen2_f16_perplexity_matches_torch(llama_tools, fixture_f16):
    llama, _ = _assert_ppl_agrees(fixture_f16, FIXTURE)
    # A trained model: far below the vocabulary size (uniform guessing).
    assert llama["ppl"] < 4096 / 10


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_llama_resave_perplexity_matches_torch(llama_tools, tmp_path, tied):
    """Proves the Q/K RoPE permutation (a wrong one wrecks the perplexity) and the tied-output path."""
    hf_dir = resave_as_llama(tmp_path / "llama", tied)
    gguf_path = convert(hf_dir, tmp_path / "llama.gguf", FileType.F16)
    _assert_ppl_agrees(gguf_path, hf_dir)


def test_llama3_rope_scaling_matches_torch(llama_tools, tmp_path):
    """Llama 3 RoPE scaling travels as a rope_freqs tensor; wrong factors would move the perplexity."""
    hf_dir = resave_as_llama(tmp_path / "llama3", tied=False, rope_scaling=LLAMA3_ROPE)
    gguf_path = convert(hf_dir, tmp_path / "llama3.gguf", FileType.F16)
    _assert_ppl_agrees(gguf_path, hf_dir)


@pytest.mark.parametrize("out_type", [FileType.F32, FileType.BF16])
def test_other_float_types_run_in_llama_cpp(llama_tools, gguf_dir, fixture_f16, out_type):
    path = convert(FIXTURE, gguf_dir / f"run-{out_type.value}.gguf", out_type)
    result = ppl_json(path, "--text", EVAL_TEXT, "--chunks", 2, "--kld-base", fixture_f16)
    assert result["kld_mean"] < 0.01 and result["same_top_p"] > 0.95

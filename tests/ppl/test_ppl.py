"""`qconvert ppl`: output shapes, KL divergence, and the too-short-text error, for both engines."""

import json

import pytest

from tests.conftest import EVAL_TEXT, FIXTURE, run_cli


def test_json_has_the_documented_fields(llama_tools, fixture_f16):
    result = run_cli("ppl", fixture_f16, "--text", EVAL_TEXT, "--chunks", 3, "--ctx", 256, "--json")
    assert result.rc == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"ppl", "ppl_err", "n_tokens", "ctx", "chunks"}
    assert data["ctx"] == 256 and data["chunks"] == 3 and data["n_tokens"] == 3 * 127
    assert 1 < data["ppl"] < 4096 and 0 < data["ppl_err"] < data["ppl"]


def test_plain_output_is_one_summary_line(llama_tools, fixture_f16):
    result = run_cli("ppl", fixture_f16, "--text", EVAL_TEXT, "--chunks", 2)
    assert result.rc == 0, result.stderr
    assert result.stdout.startswith("PPL = ") and len(result.stdout.strip().splitlines()) == 1


@pytest.mark.parametrize("engine", ["gguf", "hf"])
def test_a_model_against_itself_has_zero_kld(llama_tools, fixture_f16, engine):
    model = fixture_f16 if engine == "gguf" else FIXTURE
    result = run_cli("ppl", model, "--text", EVAL_TEXT, "--chunks", 2, "--kld-base", model, "--json")
    assert result.rc == 0, result.stderr
    data = json.loads(result.stdout)
    # llama.cpp stores base log-probs quantized to 16 bits, so its self-KLD is tiny, not exactly zero.
    assert abs(data["kld_mean"]) < 1e-4
    assert data["same_top_p"] > 0.999


@pytest.mark.parametrize("engine", ["gguf", "hf"])
def test_text_shorter_than_two_chunks_is_a_clear_error(llama_tools, fixture_f16, tmp_path, engine):
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here, far from two chunks of context.\n")
    model = fixture_f16 if engine == "gguf" else FIXTURE
    result = run_cli("ppl", model, "--text", short)
    assert result.rc == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "too short" in result.stderr and str(short) in result.stderr


def test_kld_base_of_another_kind_is_refused(fixture_f16):
    result = run_cli("ppl", fixture_f16, "--text", EVAL_TEXT, "--kld-base", FIXTURE)
    assert result.rc == 2 and "same kind" in result.stderr

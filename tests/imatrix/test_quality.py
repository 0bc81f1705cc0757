"""The importance matrix pays: with qconvert's own imatrix from the bundled calibration set, q2_k,
q3_k_m, q4_0 and q4_k_m have a lower KL divergence from the f16 model (llama-perplexity, held-out
text) than without, and are no worse than with llama-imatrix's file made from the same text (the
calibration windows decoded back to text), within a few percent of run-to-run noise."""

import pytest
from safetensors.torch import load_file
from transformers import AutoTokenizer

from qconvert.llama_cpp import run_tool
from tests.conftest import EVAL_TEXT, FIXTURE, PPL_CHUNKS, ppl_json, run_cli

TYPES = ("q2_k", "q3_k_m", "q4_0", "q4_k_m")


@pytest.fixture(scope="module")
def imatrices(calib_file, fixture_f16, llama_tools, tmp_path_factory):
    d = tmp_path_factory.mktemp("quality")
    ours = d / "ours.gguf"
    assert run_cli("imatrix", FIXTURE, "--calib", calib_file, "-o", ours).rc == 0
    tokenizer = AutoTokenizer.from_pretrained(FIXTURE)
    text = d / "calib.txt"
    text.write_text("".join(tokenizer.decode(row) for row in load_file(calib_file)["input_ids"].tolist()))
    theirs = d / "theirs.gguf"
    run_tool("llama-imatrix", ["-m", str(fixture_f16), "-f", str(text), "-o", str(theirs), "-c", "256", "-b", "256", "-t", "2", "--no-ppl"])
    return {"ours": ours, "theirs": theirs}


def kld(fixture_f16, tmp_path, file_type, imatrix=None) -> float:
    out = tmp_path / f"{file_type}-{imatrix.stem if imatrix else 'plain'}.gguf"
    assert run_cli("quantize", fixture_f16, out, file_type, *(["--imatrix", imatrix] if imatrix else [])).rc == 0
    return ppl_json(out, "--text", EVAL_TEXT, "--chunks", PPL_CHUNKS, "--kld-base", fixture_f16)["kld_mean"]


@pytest.mark.parametrize("file_type", TYPES)
def test_imatrix_lowers_the_kld(imatrices, fixture_f16, tmp_path, file_type):
    plain = kld(fixture_f16, tmp_path, file_type)
    ours = kld(fixture_f16, tmp_path, file_type, imatrices["ours"])
    theirs = kld(fixture_f16, tmp_path, file_type, imatrices["theirs"])
    print(f"{file_type}: KLD without {plain:.3e}, qconvert imatrix {ours:.3e} ({ours / plain - 1:+.0%}), llama-imatrix {theirs:.3e} ({theirs / plain - 1:+.0%})")
    assert ours < plain
    assert ours < 1.05 * theirs

"""What the importance matrix buys, measured: q2_k, q3_k_m, q4_0 and q4_k_m quantized without an
imatrix, with qconvert's own (from the calibration set) and with llama-imatrix's (from the same
text: the calibration windows decoded back to text); KL divergence from the f16 GGUF by
llama-perplexity on the held-out text. On the fixture and on its variant with real-model
activation outliers (tests/awq/models.py).

qconvert's matrix must do as well as llama-imatrix's (within 5%) everywhere: the quantizers are
byte-identical to llama-quantize --imatrix, so this compares the matrices. Whether an imatrix helps
at all is llama.cpp's weighted quantizers' doing, and on these small models it does not always:
with outliers it cuts q2_k's KLD by ~79% and q4_k_m's by ~45%, but q3_k_m and q4_0 come out
~10-15% worse, and on the plain fixture (no outliers) only q4_0 gains — with either matrix alike.
The test holds those gains; the README has the whole table."""

import pytest
from safetensors.torch import load_file
from transformers import AutoTokenizer

from qconvert.llama_cpp import run_tool
from tests.awq.models import make_outlier_variant
from tests.conftest import EVAL_TEXT, FIXTURE, PPL_CHUNKS, convert, ppl_json, run_cli

TYPES = ("q2_k", "q3_k_m", "q4_0", "q4_k_m")
GAINS = {("fixture", "q4_0"), ("outliers", "q2_k"), ("outliers", "q4_k_m")}  # measured: -5%, -79%, -45%


@pytest.fixture(scope="module", params=["fixture", "outliers"])
def setup(request, calib_file, llama_tools, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    model = FIXTURE if request.param == "fixture" else make_outlier_variant(d / "hf")
    f16 = convert(model, d / "f16.gguf")
    ours = d / "ours.gguf"
    assert run_cli("imatrix", model, "--calib", calib_file, "-o", ours).rc == 0
    text = d / "calib.txt"
    tokenizer = AutoTokenizer.from_pretrained(FIXTURE)
    text.write_text("".join(tokenizer.decode(row) for row in load_file(calib_file)["input_ids"].tolist()))
    theirs = d / "theirs.gguf"
    run_tool("llama-imatrix", ["-m", str(f16), "-f", str(text), "-o", str(theirs), "-c", "256", "-b", "256", "-t", "2", "--no-ppl"])
    return request.param, f16, {"ours": ours, "theirs": theirs}


def kld(f16, tmp_path, file_type, imatrix=None) -> float:
    out = tmp_path / f"{file_type}-{imatrix.stem if imatrix else 'plain'}.gguf"
    assert run_cli("quantize", f16, out, file_type, *(["--imatrix", imatrix] if imatrix else [])).rc == 0
    return ppl_json(out, "--text", EVAL_TEXT, "--chunks", PPL_CHUNKS, "--kld-base", f16)["kld_mean"]


@pytest.mark.parametrize("file_type", TYPES)
def test_imatrix_quality(setup, tmp_path, file_type):
    model, f16, imatrices = setup
    plain = kld(f16, tmp_path, file_type)
    ours = kld(f16, tmp_path, file_type, imatrices["ours"])
    theirs = kld(f16, tmp_path, file_type, imatrices["theirs"])
    print(f"{model} {file_type}: KLD without {plain:.3e}, qconvert imatrix {ours:.3e} ({ours / plain - 1:+.0%}), llama-imatrix {theirs:.3e} ({theirs / plain - 1:+.0%})")
    assert ours < 1.05 * theirs
    if (model, file_type) in GAINS:
        assert ours < plain

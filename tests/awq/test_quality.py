"""AWQ against round-to-nearest on the same grid (4-bit, group size 128, zero point), perplexity and
KL divergence from the unquantized model on the held-out text, measured by `qconvert ppl` in torch:
on the trained fixture, and on its variant with real-model activation outliers (tests/awq/models.py)."""

from pathlib import Path

import pytest

from qconvert.awq.grid import fake_quantize
from tests.awq.conftest import awq_cli
from tests.awq.models import make_outlier_variant
from tests.conftest import EVAL_TEXT, FIXTURE, PPL_CHUNKS, ppl_json
from tests.variants import fake_quantized_copy


def rtn_model(source: Path, dst: Path) -> Path:
    return fake_quantized_copy(source, dst, lambda w: fake_quantize(w, 4, 128, zero_point=True))


def measure(model: Path, base: Path) -> dict:
    return ppl_json(model, "--text", EVAL_TEXT, "--chunks", PPL_CHUNKS, "--kld-base", base)


# The fixture has no activation outliers (normed activations peak at 1.3-3× their median), so AWQ
# has little to protect there: measured KLD 3.4e-4 (RTN) against 2.5e-4 (AWQ). With outliers like
# real models' the gap is an order of magnitude.
@pytest.mark.parametrize("model, kld_ratio", [("fixture", 0.85), ("outliers", 0.3)])
def test_awq_beats_round_to_nearest(request, tmp_path, calib_file, model, kld_ratio):
    source = FIXTURE if model == "fixture" else make_outlier_variant(tmp_path / "outliers")
    awq = request.getfixturevalue("awq_4bit") if model == "fixture" else awq_cli(tmp_path / "awq", "--calib", calib_file, model=source)
    awq_result, rtn_result = measure(awq, source), measure(rtn_model(source, tmp_path / "rtn"), source)
    print(f"{model} W4 g128: RTN ppl {rtn_result['ppl']:.3f} KLD {rtn_result['kld_mean']:.2e}; AWQ ppl {awq_result['ppl']:.3f} KLD {awq_result['kld_mean']:.2e}")
    assert awq_result["ppl"] < rtn_result["ppl"]
    assert awq_result["kld_mean"] < kld_ratio * rtn_result["kld_mean"]

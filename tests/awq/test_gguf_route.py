"""The GGUF route: AWQ's scaling baked into fp16 weights (--gguf-type, which implies
--export-compatible), converted to q4_k_m and q3_k_m, against the unscaled model converted the same
way; KL divergence from the original f16 GGUF, measured by llama.cpp's llama-perplexity.

On the fixture, which has no activation outliers, AWQ has nothing to gain (measured on the full
held-out text: KLD 6.84e-4 vs 6.82e-4 at q4_k_m, 2.92e-3 vs 3.06e-3 at q3_k_m): it must not
hurt. On the fixture with real-model outliers it must cut the KLD by more than half (measured:
-86% at q4_k_m, -63% at q3_k_m)."""

import pytest

from tests.awq.conftest import awq_cli
from tests.awq.models import make_outlier_variant
from tests.conftest import EVAL_TEXT, FIXTURE, PPL_CHUNKS, ppl_json, run_cli


def kld(model_dir, file_type, base_gguf, tmp_path, tag):
    gguf = tmp_path / f"{tag}-{file_type}.gguf"
    result = run_cli("gguf", model_dir, "-o", gguf, "--type", file_type)
    assert result.rc == 0, result.stderr
    return ppl_json(gguf, "--text", EVAL_TEXT, "--chunks", PPL_CHUNKS, "--kld-base", base_gguf)["kld_mean"]


@pytest.mark.parametrize("model, bound", [("fixture", 1.1), ("outliers", 0.5)])
def test_awq_scaling_before_gguf_quantization(model, bound, tmp_path, calib_file, llama_tools):
    source = FIXTURE if model == "fixture" else make_outlier_variant(tmp_path / "outliers")
    base_f16 = tmp_path / "base-f16.gguf"
    assert run_cli("gguf", source, "-o", base_f16).rc == 0
    for file_type in ("q4_k_m", "q3_k_m"):
        scaled = awq_cli(tmp_path / f"awq-{file_type}", "--calib", calib_file, "--gguf-type", file_type, model=source)
        plain, awq = kld(source, file_type, base_f16, tmp_path, "plain"), kld(scaled, file_type, base_f16, tmp_path, "awq")
        print(f"{model} {file_type}: KLD unscaled {plain:.2e}, AWQ-scaled {awq:.2e} ({awq / plain - 1:+.0%})")
        assert awq < bound * plain, file_type

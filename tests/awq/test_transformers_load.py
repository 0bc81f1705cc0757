"""Optional: our AWQ GEMM checkpoint loaded by transformers itself (GPTQModel's CPU AWQ kernel,
TorchCpuAvx512AwqLinear here) gives the logits of our dense unpacking."""

from tests.peer_logits import assert_transformers_matches_our_unpacking, needs_gptqmodel


@needs_gptqmodel
def test_transformers_with_gptqmodel_kernels_matches_our_unpacking(awq_4bit, tmp_path):
    printed = assert_transformers_matches_our_unpacking(awq_4bit, tmp_path)
    assert "Awq" in printed  # an AWQ kernel ran, not a dense fallback

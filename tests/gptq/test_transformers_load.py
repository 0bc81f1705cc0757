"""Optional: our GPTQ checkpoint loaded by transformers itself (GPTQModel's CPU kernels) gives the
logits of our dense unpacking."""

from tests.peer_logits import assert_transformers_matches_our_unpacking, needs_gptqmodel


@needs_gptqmodel
def test_transformers_with_gptqmodel_kernels_matches_our_unpacking(gptq_4bit, tmp_path):
    assert_transformers_matches_our_unpacking(gptq_4bit, tmp_path)

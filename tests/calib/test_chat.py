"""Chat data goes through the model's own chat template, exactly as `apply_chat_template` does."""

from qconvert.calib.build import build_calibration
from qconvert.calib.types import SampleMode, SamplingOptions, SourceSpec
from tests.calib.conftest import CHAT_SAMPLE


def test_every_sample_is_a_conversation_as_apply_chat_template_makes_it(tokenizer, chats):
    # seqlen above the longest conversation (1,003 tokens), so nothing is truncated
    options = SamplingOptions(n_samples=len(chats), seqlen=1024, mode=SampleMode.SAMPLES, seed=1)
    calib = build_calibration(tokenizer, [SourceSpec(CHAT_SAMPLE)], options)
    assert calib.n_samples == len(chats) and calib.manifest.counts.truncated == 0

    reference_text = {tokenizer.apply_chat_template(c, tokenize=False): c for c in chats}
    for ids, mask in zip(calib.input_ids.tolist(), calib.attention_mask.tolist()):
        real = ids[: sum(mask)]
        decoded = tokenizer.decode(real, skip_special_tokens=False)
        assert decoded in reference_text
        assert decoded.startswith("<|im_start|>") and decoded.endswith("<|im_end|>\n")
        assert real == tokenizer.apply_chat_template(reference_text[decoded], tokenize=True)["input_ids"]
    # every conversation is there once
    decoded_all = {tokenizer.decode(ids[: sum(m)]) for ids, m in zip(calib.input_ids.tolist(), calib.attention_mask.tolist())}
    assert decoded_all == set(reference_text)


def test_a_truncated_conversation_is_the_start_of_its_template_text(tokenizer, chats):
    options = SamplingOptions(n_samples=20, seqlen=48, mode=SampleMode.SAMPLES)
    calib = build_calibration(tokenizer, [SourceSpec(CHAT_SAMPLE)], options)
    starts = {tuple(tokenizer.apply_chat_template(c, tokenize=True)["input_ids"][:48]) for c in chats}
    assert calib.attention_mask.all()  # every conversation is longer than 48 tokens
    assert {tuple(row) for row in calib.input_ids.tolist()} <= starts

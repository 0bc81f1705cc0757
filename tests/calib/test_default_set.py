"""No --source: the bundled set, defined once; the held-out evaluation text is never in it."""

import logging

from transformers import AutoTokenizer

from qconvert.calib.build import BUNDLED_DIR, DEFAULT_SET, build_calibration, default_sources, read_source
from qconvert.calib.types import SamplingOptions
from tests.calib.conftest import CALIBRATION


def test_the_default_set_is_the_bundled_text_and_chat_sample(tokenizer):
    calib = build_calibration(tokenizer, None, SamplingOptions(n_samples=128, seqlen=512))
    assert calib.n_samples == 128 and calib.seqlen == 512
    sources = calib.manifest.sources
    assert [(s.path, s.kind) for s in sources] == [
        ("calibration/en", "text"), ("calibration/zh", "text"), ("calibration/code", "text"), ("calibration/chat/sample.jsonl", "chat")
    ]
    assert BUNDLED_DIR == CALIBRATION and len(DEFAULT_SET) == 4


def test_the_held_out_text_is_not_in_the_default_set():
    heldout = (CALIBRATION / "eval" / "heldout-en.txt").read_text(encoding="utf-8")
    first_paragraphs = [p for p in heldout.split("\n\n") if len(p) > 100][:5]
    for spec in default_sources(has_chat_template=True):
        assert "eval" not in spec.path.relative_to(CALIBRATION).parts
        for doc in read_source(spec).documents:
            text = doc.value if isinstance(doc.value, str) else " ".join(m["content"] for m in doc.value)
            assert not any(p in text for p in first_paragraphs)


def test_without_a_chat_template_the_chat_part_is_left_out_with_a_note(model_without_chat_template, caplog):
    tok = AutoTokenizer.from_pretrained(model_without_chat_template)
    assert not tok.chat_template
    with caplog.at_level(logging.WARNING):
        calib = build_calibration(tok, None, SamplingOptions(n_samples=32, seqlen=256))
    assert [s.path for s in calib.manifest.sources] == ["calibration/en", "calibration/zh", "calibration/code"]
    assert "no chat template" in caplog.text and "calibration/chat/sample.jsonl" in caplog.text
    assert calib.n_samples == 32

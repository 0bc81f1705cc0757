"""Windows, samples, padding and dedup, checked against the tokenizer's own tokenization."""

import logging

import numpy as np

from qconvert.calib.build import build_calibration, concat_windows, make_rng, pick_unique_rows
from qconvert.calib.types import SampleMode, SamplingOptions, SourceSpec
from tests.calib.conftest import EMMA, write_jsonl


def test_concat_windows_are_aligned_slices_of_the_whole_tokenization(tokenizer):
    seqlen = 100
    calib = build_calibration(tokenizer, [SourceSpec(EMMA)], SamplingOptions(n_samples=40, seqlen=seqlen, seed=5))
    reference = tokenizer(EMMA.read_text(encoding="utf-8"), add_special_tokens=True)["input_ids"]
    windows = {tuple(reference[i : i + seqlen]) for i in range(0, len(reference) - seqlen + 1, seqlen)}
    rows = [tuple(r) for r in calib.input_ids.tolist()]
    assert set(rows) <= windows and len(set(rows)) == 40
    assert rows != sorted(rows, key=lambda r: reference.index(r[0]))  # picked in a random order


def test_samples_mode_truncates_long_and_right_pads_short_documents(tokenizer, tmp_path, paragraphs):
    short = "Short note."
    long = paragraphs[0]
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": short}, {"text": long}])
    calib = build_calibration(tokenizer, [SourceSpec(path)], SamplingOptions(n_samples=2, seqlen=32, mode=SampleMode.SAMPLES))
    pad = tokenizer.pad_token_id
    by_first = {row[0]: (row, mask) for row, mask in zip(calib.input_ids.tolist(), calib.attention_mask.tolist())}
    short_ids = tokenizer(short)["input_ids"]
    long_ids = tokenizer(long)["input_ids"]
    row, mask = by_first[short_ids[0]]
    assert row == short_ids + [pad] * (32 - len(short_ids))
    assert mask == [1] * len(short_ids) + [0] * (32 - len(short_ids))
    row, mask = by_first[long_ids[0]]
    assert row == long_ids[:32] and mask == [1] * 32
    counts = calib.manifest.counts
    assert (counts.truncated, counts.padded, counts.tokens) == (1, 1, len(short_ids) + 32)
    assert calib.manifest.tokenizer.pad_token_id == pad


def test_min_tokens_drops_short_documents(tokenizer, tmp_path, paragraphs):
    records = [{"text": p} for p in paragraphs[:30]] + [{"text": f"Line {i}."} for i in range(30)]
    path = write_jsonl(tmp_path / "docs.jsonl", records)
    options = SamplingOptions(n_samples=40, seqlen=64, mode=SampleMode.SAMPLES, min_tokens=20)
    calib = build_calibration(tokenizer, [SourceSpec(path)], options)  # warns: only 30 are long enough
    assert calib.n_samples == 30 and calib.manifest.counts.short_dropped == 30
    assert calib.attention_mask.sum(dim=1).min() >= 20


def test_identical_documents_and_samples_are_kept_once(tokenizer, tmp_path, paragraphs, caplog):
    records = [{"text": p} for p in paragraphs[:10]] * 3 + [{"text": paragraphs[0] + " And a different ending."}]
    path = write_jsonl(tmp_path / "docs.jsonl", records)
    with caplog.at_level(logging.WARNING):
        calib = build_calibration(tokenizer, [SourceSpec(path)], SamplingOptions(n_samples=20, seqlen=16, mode=SampleMode.SAMPLES))
    counts = calib.manifest.counts
    assert counts.duplicate_documents == 20
    assert counts.duplicate_samples == 1  # the different ending is past the first 16 tokens
    assert calib.n_samples == 10 and len({tuple(r) for r in calib.input_ids.tolist()}) == 10
    assert "asked for 20 samples" in caplog.text and "made 10 samples" in caplog.text


def test_asking_for_more_tokens_than_there_are_warns_with_the_count(tokenizer, tmp_path, paragraphs, caplog):
    path = tmp_path / "small.txt"
    path.write_text("\n\n".join(paragraphs[:5]), encoding="utf-8")
    n_tokens = len(tokenizer(path.read_text())["input_ids"])
    with caplog.at_level(logging.WARNING):
        calib = build_calibration(tokenizer, [SourceSpec(path)], SamplingOptions(n_samples=128, seqlen=64))
    assert calib.n_samples == n_tokens // 64 < 128
    assert calib.attention_mask.all()  # nothing padded
    assert f"made {n_tokens // 64} samples" in caplog.text and f"{n_tokens:,} tokens" in caplog.text


def test_pick_unique_rows_skips_duplicates_and_is_seeded():
    rows = np.array([[1, 2], [3, 4], [1, 2], [5, 6], [3, 4]], dtype=np.int64)
    picked, dups = pick_unique_rows(rows, 5, make_rng(0))
    assert sorted(map(tuple, picked.tolist())) == [(1, 2), (3, 4), (5, 6)] and dups == 2
    again, _ = pick_unique_rows(rows, 5, make_rng(0))
    assert np.array_equal(picked, again)


def test_concat_windows_drop_the_short_tail():
    windows = concat_windows([[1, 2, 3], [4, 5], [6, 7, 8]], 3)
    assert windows.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert concat_windows([[1]], 3).shape == (0, 3)

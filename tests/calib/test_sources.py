"""Every kind of source builds a set of the requested count and length, through the library API."""

import os
import socket

import datasets
import pyarrow as pa
import pytest
from huggingface_hub import constants as hub_constants

from qconvert.calib.build import build_calibration
from qconvert.calib.datasets import OFFLINE_VARIABLES, arrow_split
from qconvert.calib.types import SampleMode, SamplingOptions, SourceFormat, SourceSpec
from tests.calib.conftest import CALIBRATION, EMMA, write_jsonl

N, SEQLEN = 12, 64
CONCAT = SamplingOptions(n_samples=N, seqlen=SEQLEN, mode=SampleMode.CONCAT, seed=3)
SAMPLES = SamplingOptions(n_samples=N, seqlen=SEQLEN, mode=SampleMode.SAMPLES, seed=3)


def _check(calib, n=N, seqlen=SEQLEN):
    assert tuple(calib.input_ids.shape) == (n, seqlen)
    assert tuple(calib.attention_mask.shape) == (n, seqlen)
    assert calib.manifest.counts.samples == n
    # no two samples alike
    assert len({tuple(row) for row in calib.input_ids.tolist()}) == n


def _build(tokenizer, path, options=CONCAT, **spec):
    return build_calibration(tokenizer, [SourceSpec(path, **spec)], options)


def test_text_file(tokenizer):
    calib = _build(tokenizer, EMMA)
    _check(calib)
    assert calib.manifest.sources[0].format == "text" and calib.attention_mask.all()


def test_text_folder(tokenizer):
    calib = _build(tokenizer, CALIBRATION / "code")
    _check(calib)
    assert calib.manifest.sources[0].documents == 5


def test_markdown_files_count_as_text(tokenizer, tmp_path, paragraphs):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.md").write_text("\n\n".join(paragraphs[:40]))
    (tmp_path / "notes" / "skip.bin").write_bytes(b"\0\1\2")  # not .txt/.md: not read
    calib = _build(tokenizer, tmp_path / "notes", SamplingOptions(n_samples=4, seqlen=SEQLEN))
    _check(calib, n=4)


@pytest.mark.parametrize("options", [CONCAT, SAMPLES], ids=["concat", "samples"])
def test_jsonl_text(tokenizer, tmp_path, paragraphs, options):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": p, "id": i} for i, p in enumerate(paragraphs)])
    calib = _build(tokenizer, path, options)
    _check(calib)
    assert calib.manifest.sources[0].format == "jsonl"


def test_jsonl_with_a_custom_field(tokenizer, tmp_path, paragraphs):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"body": p} for p in paragraphs])
    _check(_build(tokenizer, path, SAMPLES, field="body"))
    _check(_build(tokenizer, path, CONCAT, format=SourceFormat.JSONL, field="body"))


def test_chat_jsonl(tokenizer):
    calib = _build(tokenizer, CALIBRATION / "chat" / "sample.jsonl", SAMPLES)
    _check(calib)
    assert calib.manifest.sources[0].kind == "chat"


def _dataset(paragraphs):
    return datasets.Dataset.from_dict({"text": paragraphs, "n": list(range(len(paragraphs)))})


def test_parquet(tokenizer, tmp_path, paragraphs):
    _dataset(paragraphs).to_parquet(str(tmp_path / "docs.parquet"))
    for options in (CONCAT, SAMPLES):
        calib = _build(tokenizer, tmp_path / "docs.parquet", options)
        _check(calib)
    assert calib.manifest.sources[0].format == "parquet"


def test_parquet_with_chat_messages(tokenizer, tmp_path, chats):
    datasets.Dataset.from_list([{"messages": c} for c in chats]).to_parquet(str(tmp_path / "chat.parquet"))
    calib = _build(tokenizer, tmp_path / "chat.parquet", SAMPLES)
    _check(calib)
    assert calib.manifest.sources[0].kind == "chat"


def _offline_state() -> tuple:
    return (
        tuple(os.environ.get(name) for name in OFFLINE_VARIABLES),
        datasets.config.HF_HUB_OFFLINE,
        datasets.config.HF_DATASETS_OFFLINE,
        hub_constants.is_offline_mode(),
    )


@pytest.mark.parametrize(("suffix", "before"), [("parquet", None), ("json", "0"), ("parquet", "1")], ids=["parquet-unset", "json-online", "parquet-offline"])
def test_a_datasets_source_is_read_offline_and_the_process_left_as_it_was(tokenizer, tmp_path, paragraphs, monkeypatch, suffix, before):
    """Offline mode holds for the read only: the variables and the libraries' constants are back to
    what they were afterwards, whatever they were; and the read needs no network at all."""
    path = tmp_path / f"docs.{suffix}"
    getattr(_dataset(paragraphs), f"to_{suffix}")(str(path))
    for name in OFFLINE_VARIABLES:
        if before is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, before)
    state_before = _offline_state()
    during = []
    load_dataset = datasets.load_dataset

    def spy(*args, **kwargs):
        during.append(_offline_state())
        return load_dataset(*args, **kwargs)

    def no_network(self, *args, **kwargs):
        raise AssertionError("reading a local source tried to connect")

    monkeypatch.setattr(datasets, "load_dataset", spy)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    _check(_build(tokenizer, path, SAMPLES))
    assert during == [(("1", "1"), True, True, True)]
    assert _offline_state() == state_before


@pytest.mark.parametrize("lines", [False, True], ids=["json-array", "json-lines"])
def test_json_file(tokenizer, tmp_path, paragraphs, lines):
    _dataset(paragraphs).to_json(str(tmp_path / "docs.json"), lines=lines)
    _check(_build(tokenizer, tmp_path / "docs.json", SAMPLES))


@pytest.mark.parametrize("ipc", ["file", "stream"])
def test_arrow_file(tokenizer, tmp_path, paragraphs, ipc):
    table = pa.table({"text": paragraphs})
    new = pa.ipc.new_file if ipc == "file" else pa.ipc.new_stream
    with pa.OSFile(str(tmp_path / "docs.arrow"), "wb") as sink, new(sink, table.schema) as writer:
        writer.write_table(table)
    calib = _build(tokenizer, tmp_path / "docs.arrow", CONCAT)
    _check(calib)
    assert calib.manifest.sources[0].format == "arrow"


def test_dataset_saved_to_disk(tokenizer, tmp_path, paragraphs):
    _dataset(paragraphs).save_to_disk(str(tmp_path / "saved"))
    calib = _build(tokenizer, tmp_path / "saved", SAMPLES)
    _check(calib)
    assert calib.manifest.sources[0].format == "dataset"


def test_dataset_dict_picks_the_split(tokenizer, tmp_path, paragraphs):
    half = len(paragraphs) // 2
    datasets.DatasetDict({"train": _dataset(paragraphs[:half]), "validation": _dataset(paragraphs[half:])}).save_to_disk(str(tmp_path / "dd"))
    train = _build(tokenizer, tmp_path / "dd", SAMPLES)
    validation = _build(tokenizer, tmp_path / "dd", SAMPLES, split="validation")
    _check(train)
    _check(validation)
    assert train.manifest.sources[0].documents == half
    assert validation.manifest.sources[0].documents == len(paragraphs) - half


def test_datasets_cache_folder(tokenizer, tmp_path, paragraphs):
    """The folder `load_dataset` caches a dataset in, read offline from its .arrow files."""
    (tmp_path / "emma.txt").write_text("\n".join(paragraphs), encoding="utf-8")
    datasets.load_dataset("text", data_files=str(tmp_path / "emma.txt"), cache_dir=str(tmp_path / "cache"))
    [info] = (tmp_path / "cache").rglob("dataset_info.json")
    calib = _build(tokenizer, info.parent, SAMPLES)
    _check(calib)
    assert calib.manifest.sources[0].documents == len(paragraphs)


def test_several_sources_together(tokenizer, tmp_path, paragraphs):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": p} for p in paragraphs])
    specs = [SourceSpec(path), SourceSpec(CALIBRATION / "chat" / "sample.jsonl"), SourceSpec(CALIBRATION / "zh")]
    calib = build_calibration(tokenizer, specs, SamplingOptions(n_samples=32, seqlen=SEQLEN, mode=SampleMode.SAMPLES))
    _check(calib, n=32)
    assert [s.kind for s in calib.manifest.sources] == ["text", "chat", "text"]


def test_cache_file_names_give_their_split():
    assert arrow_split("text-train.arrow") == "train"
    assert arrow_split("my-data-validation.arrow") == "validation"
    assert arrow_split("wikitext-train-00003-of-00004.arrow") == "train"
    assert arrow_split("notes.arrow") is None

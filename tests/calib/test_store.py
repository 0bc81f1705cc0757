"""The calibration file: written atomically, loaded back equal, refused for another tokenizer or version."""

import hashlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoTokenizer

from qconvert.calib.build import build_calibration
from qconvert.calib.store import load_calibration, tokenizer_sha256, write_calibration
from qconvert.calib.types import MANIFEST_KEY, SampleMode, SamplingOptions, SourceSpec
from qconvert.errors import QConvertError
from tests.calib.conftest import CHAT_SAMPLE, EMMA
from tests.conftest import FIXTURE

OPTIONS = SamplingOptions(n_samples=16, seqlen=64, mode=SampleMode.SAMPLES, seed=2)


@pytest.fixture(scope="module")
def calib(tokenizer):
    return build_calibration(tokenizer, [SourceSpec(EMMA), SourceSpec(CHAT_SAMPLE)], OPTIONS)


@pytest.fixture()
def calib_file(calib, tmp_path):
    return write_calibration(calib, tmp_path / "calib.safetensors")


def test_round_trip_with_the_same_tokenizer(calib, calib_file, tokenizer):
    loaded = load_calibration(calib_file, tokenizer)
    assert torch.equal(loaded.input_ids, calib.input_ids) and torch.equal(loaded.attention_mask, calib.attention_mask)
    assert loaded.input_ids.dtype == torch.int64 and loaded.manifest == calib.manifest
    assert sorted(p.name for p in calib_file.parent.iterdir()) == ["calib.safetensors"]  # no temporary left


def test_the_manifest_is_one_json_object_with_format_and_version(calib_file, tokenizer):
    with safe_open(str(calib_file), framework="pt") as f:
        metadata = f.metadata()
    assert list(metadata) == [MANIFEST_KEY]
    manifest = json.loads(metadata[MANIFEST_KEY])
    assert (manifest["format"], manifest["version"]) == ("qconvert-calibration", 1)
    assert manifest["tokenizer"]["sha256"] == tokenizer_sha256(tokenizer)
    assert manifest["options"] == {"n_samples": 16, "seqlen": 64, "mode": "samples", "min_tokens": 0, "seed": 2}
    assert [s["path"] for s in manifest["sources"]] == [str(EMMA), str(CHAT_SAMPLE)]
    assert manifest["sources"][0]["sha256"] == hashlib.sha256(EMMA.read_bytes()).hexdigest()
    assert manifest["counts"]["samples"] == 16 and manifest["qconvert_version"]


def test_a_file_from_another_tokenizer_is_refused(calib_file, other_tokenizer_dir):
    other = AutoTokenizer.from_pretrained(other_tokenizer_dir)
    with pytest.raises(QConvertError, match="made with a different tokenizer") as exc:
        load_calibration(calib_file, other)
    assert "qconvert calib" in str(exc.value)


def test_a_changed_chat_template_is_another_tokenizer(calib_file, tmp_path):
    tok = AutoTokenizer.from_pretrained(FIXTURE)
    tok.chat_template = tok.chat_template.replace("<|im_start|>", "<|im_start|> ")
    with pytest.raises(QConvertError, match="different tokenizer"):
        load_calibration(calib_file, tok)


def test_the_hash_survives_a_re_save(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path / "resaved")
    assert tokenizer_sha256(AutoTokenizer.from_pretrained(tmp_path / "resaved")) == tokenizer_sha256(tokenizer)


def _rewrite_manifest(path, change):
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        manifest = json.loads(f.metadata()[MANIFEST_KEY])
    change(manifest)
    save_file(tensors, str(path), metadata={MANIFEST_KEY: json.dumps(manifest)})


def test_another_manifest_version_is_refused_with_how_to_fix(calib_file, tokenizer):
    _rewrite_manifest(calib_file, lambda m: m.update(version=99, qconvert_version="9.0"))
    with pytest.raises(QConvertError, match="version 99") as exc:
        load_calibration(calib_file, tokenizer)
    assert "rebuild it with `qconvert calib" in str(exc.value) and "9.0" in str(exc.value)


def test_another_format_is_refused(calib_file, tokenizer):
    _rewrite_manifest(calib_file, lambda m: m.update(format="something-else"))
    with pytest.raises(QConvertError, match="not a qconvert calibration file"):
        load_calibration(calib_file, tokenizer)


def test_a_model_checkpoint_is_not_a_calibration_file(tokenizer):
    with pytest.raises(QConvertError, match="not a qconvert calibration file"):
        load_calibration(FIXTURE / "model.safetensors", tokenizer)


def test_an_existing_output_is_kept_without_force(calib, tmp_path):
    out = tmp_path / "calib.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(QConvertError, match="--force"):
        write_calibration(calib, out)
    assert out.read_bytes() == b"precious"
    write_calibration(calib, out, force=True)
    assert out.stat().st_size > 8

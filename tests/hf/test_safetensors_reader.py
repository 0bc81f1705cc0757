"""The streaming reader against the safetensors library's own loader."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file

from qconvert.errors import QConvertError
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint
from tests.conftest import FIXTURE


def test_reads_every_fixture_tensor_like_the_safetensors_library():
    ckpt = SafetensorsCheckpoint.open(FIXTURE)
    reference = load_file(FIXTURE / "model.safetensors")
    assert set(ckpt.entries) == set(reference)
    for name, expected in reference.items():
        got = ckpt.load(name)
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        assert np.array_equal(got, expected), name


def test_bf16_is_widened_exactly_to_f32(tmp_path):
    w = torch.randn(8, 64).to(torch.bfloat16)
    save_file({"w": w}, tmp_path / "model.safetensors")
    got = SafetensorsCheckpoint.open(tmp_path).load("w")
    assert got.dtype == np.float32
    assert np.array_equal(got, w.float().numpy())


def test_sharded_checkpoint_reads_through_the_index(tmp_path):
    a, b = torch.randn(4, 32), torch.randn(16).half()
    save_file({"a": a}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"b": b}, tmp_path / "model-00002-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    ckpt = SafetensorsCheckpoint.open(tmp_path)
    assert np.array_equal(ckpt.load("a"), a.numpy())
    assert np.array_equal(ckpt.load("b"), b.numpy())


def test_missing_shard_is_named(tmp_path):
    save_file({"a": torch.zeros(2)}, tmp_path / "s1.safetensors")
    index = {"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(QConvertError, match="s2.safetensors.*missing"):
        SafetensorsCheckpoint.open(tmp_path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw[: len(raw) - 100], "outside the file"),
        (lambda raw: raw[:4], "no header"),
        (lambda raw: raw[:8] + b"#" * 20 + raw[28:], "not JSON"),
        (lambda raw: (10**9).to_bytes(8, "little") + raw[8:], "header"),
    ],
    ids=["truncated-data", "truncated-header", "garbled-header", "huge-header-length"],
)
def test_damaged_files_raise_a_clear_error(tmp_path, damage, message):
    save_file({"w": torch.randn(32, 32)}, tmp_path / "model.safetensors")
    raw = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(damage(raw))
    with pytest.raises(QConvertError, match=message):
        SafetensorsCheckpoint.open(tmp_path)

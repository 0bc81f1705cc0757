"""Bad importance-matrix input: one clear error line naming what is wrong, exit code 2, no output
(partial or temporary) left behind."""

import numpy as np
import pytest

from qconvert.imatrix.file import ImatrixEntry, ImportanceMatrix, write_imatrix
from tests.conftest import FIXTURE, assert_one_error, run_cli


def fixture_like_matrix(**changes) -> ImportanceMatrix:
    """Entries for the fixture's 4 layers, with `changes` (name → width or None to drop) applied."""
    widths = {"attn_q": 256, "attn_k": 256, "attn_v": 256, "attn_output": 256, "ffn_gate": 256, "ffn_up": 256, "ffn_down": 768}
    entries = {f"blk.{i}.{n}.weight": ImatrixEntry(np.ones((1, w), np.float32), np.array([8.0], np.float32)) for i in range(4) for n, w in widths.items()}
    for name, width in changes.items():
        if width is None:
            entries.pop(name)
        else:
            entries[name] = ImatrixEntry(np.ones((1, width), np.float32), np.array([8.0], np.float32))
    return ImportanceMatrix(entries, ["test"], 1, 128)


@pytest.fixture
def out_parent(tmp_path):
    parent = tmp_path / "out"
    parent.mkdir()
    return parent


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"blk.7.attn_q.weight": 256}, "the importance matrix has blk.7.attn_q.weight, which this model does not have"),
        ({"blk.2.ffn_down.weight": 256}, "the importance matrix has 256 columns for blk.2.ffn_down.weight, whose rows are 768 long"),
    ],
    ids=["foreign-tensor", "wrong-width"],
)
@pytest.mark.parametrize("command", ["quantize", "gguf"])
def test_imatrix_of_another_model(command, changes, message, tmp_path, out_parent, fixture_f16):
    imatrix = write_imatrix(tmp_path / "other.gguf", fixture_like_matrix(**changes))
    args = ("quantize", fixture_f16, out_parent / "q.gguf", "q4_k_m") if command == "quantize" else ("gguf", FIXTURE, "--type", "q4_k_m", "-o", out_parent / "q.gguf")
    assert_one_error(run_cli(*args, "--imatrix", imatrix), message, out_parent)


def test_missing_tensors_are_quantized_without(tmp_path, fixture_f16):
    """As llama-quantize: a tensor the matrix lacks is quantized without importance weights."""
    imatrix = write_imatrix(tmp_path / "partial.gguf", fixture_like_matrix(**{"blk.0.attn_q.weight": None}))
    assert run_cli("quantize", fixture_f16, tmp_path / "q.gguf", "q4_k_m", "--imatrix", imatrix).rc == 0


def test_truncated_imatrix(tmp_path, out_parent, fixture_f16):
    good = write_imatrix(tmp_path / "good.gguf", fixture_like_matrix())
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    result = run_cli("quantize", fixture_f16, out_parent / "q.gguf", "q4_k_m", "--imatrix", bad)
    assert_one_error(result, "bad.gguf", out_parent)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--type", "q4_k_m", "--imatrix", "x.gguf", "--n-samples", "8"), "both an importance matrix file and calibration options were given"),
        (("--type", "f16", "--n-samples", "8"), "f16 is not quantized"),
        (("--type", "q4_k_m", "--imatrix-out", "m.gguf"), "--imatrix-out keeps an importance matrix computed in-line"),
        (("--type", "q4_k_m", "--n-samples", "2", "--seqlen", "64"), "the importance matrix needs at least 1024"),
    ],
    ids=["file-and-calib", "not-quantized", "out-without-calib", "too-few-tokens"],
)
def test_bad_in_line_options(args, message, out_parent):
    assert_one_error(run_cli("gguf", FIXTURE, "-o", out_parent / "q.gguf", *args), message, out_parent)


def test_imatrix_command_keeps_an_existing_output(tmp_path, calib_file):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"precious")
    result = run_cli("imatrix", FIXTURE, "--calib", calib_file, "-o", out)
    assert result.rc == 2 and "--force" in result.stderr and out.read_bytes() == b"precious"


def test_scales_that_overflow_fp16_are_refused(tmp_path, out_parent):
    """llama-quantize validates its output and stops on an infinite block scale; so does qconvert
    (the weighted Q4_1 fit overflows fp16 on weights of ±3e4)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    model = tmp_path / "extreme"
    shutil.copytree(FIXTURE, model)
    tensors = load_file(model / "model.safetensors")
    name = "model.layers.1.mlp.gate_proj.weight"
    tensors[name] = (torch.randn(tensors[name].shape, generator=torch.Generator().manual_seed(0)) * 3e4).clamp(-6e4, 6e4).half()
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    matrix = fixture_like_matrix()
    rng = np.random.default_rng(0)
    matrix.entries["blk.1.ffn_gate.weight"] = ImatrixEntry(rng.random((1, 256)).astype(np.float32), np.array([1.0], np.float32))
    imatrix = write_imatrix(tmp_path / "m.gguf", matrix)
    result = run_cli("gguf", model, "--type", "q4_1", "--imatrix", imatrix, "-o", out_parent / "q.gguf")
    assert_one_error(result, "tensor blk.1.ffn_gate.weight, row", out_parent)
    assert "scales overflow fp16" in result.stderr

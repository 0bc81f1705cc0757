"""`qconvert imatrix` measures what llama-imatrix measures: on the same tokens (the held-out text,
tokenized once, cut into the same 128-token chunks), the same tensors, the same token counts, and
per-column mean squared activations that agree to a cosine of 0.99 or better per tensor.

They differ in arithmetic only: llama.cpp multiplies with f16 weights and activations rounded to
f16, torch here runs the layers in float32 (and bf16 under --compute-dtype auto on AMX CPUs)."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from qconvert.calib.store import CalibrationSet
from qconvert.convert.arch import LLAMA_BLOCK
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint
from qconvert.imatrix.compute import ImatrixAlgorithm
from qconvert.imatrix.file import read_imatrix
from qconvert.layerwise.driver import DriverOptions, run_layerwise
from qconvert.llama_cpp import run_tool
from tests.conftest import EVAL_TEXT, FIXTURE, run_cli

CTX, CHUNKS = 128, 16


@pytest.fixture(scope="module")
def theirs(llama_tools, fixture_f16, tmp_path_factory):
    out = tmp_path_factory.mktemp("imatrix") / "theirs.gguf"
    run_tool("llama-imatrix", ["-m", str(fixture_f16), "-f", str(EVAL_TEXT), "-o", str(out), "-c", str(CTX), "-b", str(CTX), "--chunks", str(CHUNKS), "-t", "2", "--no-ppl"])
    return read_imatrix(out)


def same_chunks() -> CalibrationSet:
    """The chunks llama-imatrix cuts: the whole text tokenized (Qwen2 adds no BOS), CTX tokens each."""
    ids = AutoTokenizer.from_pretrained(FIXTURE)(EVAL_TEXT.read_text())["input_ids"]
    windows = torch.tensor(ids[: CHUNKS * CTX]).reshape(CHUNKS, CTX)
    return CalibrationSet(windows, torch.ones_like(windows), manifest=None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_same_statistics_as_llama_imatrix(theirs, dtype):
    algorithm = ImatrixAlgorithm(LLAMA_BLOCK)
    run_layerwise(FIXTURE, LLAMA_BLOCK, SafetensorsCheckpoint.open(FIXTURE), same_chunks(), algorithm, DriverOptions(dtype=dtype, progress=False))
    ours = algorithm.matrix("test", CHUNKS, CTX)
    assert sorted(ours.entries) == sorted(theirs.entries)
    worst = 1.0
    for name, entry in theirs.entries.items():
        assert np.array_equal(ours.entries[name].counts, entry.counts), name
        a, b = ours.importance(name).astype(np.float64), theirs.importance(name).astype(np.float64)
        cosine = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        worst = min(worst, cosine)
        assert cosine >= 0.99, (name, cosine)
    print(f"{dtype}: lowest per-tensor cosine {worst:.6f}")


def test_cli_writes_a_file_llama_quantize_takes(tmp_path, calib_file, fixture_f16, llama_tools):
    out = tmp_path / "ours.gguf"
    result = run_cli("imatrix", FIXTURE, "--calib", calib_file, "-o", out)
    assert result.rc == 0, result.stderr
    matrix = read_imatrix(out)
    assert len(matrix.entries) == 4 * 7 and matrix.chunk_count == 64 and matrix.chunk_size == 256
    assert all(float(e.counts[0]) == 64 * 256 for e in matrix.entries.values())  # the set is concat windows: no padding
    run_tool("llama-quantize", ["--imatrix", str(out), str(fixture_f16), str(tmp_path / "q.gguf"), "q4_k_m", "2"])
    assert (tmp_path / "q.gguf").stat().st_size > 0

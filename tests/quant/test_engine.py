"""The native file engine behind `qconvert quantize` (native/engine.c, qconvert/quant/engine.py): f32
input against llama-quantize, output independent of the thread count and the instruction set, and
bad input or Ctrl-C ending in one clear error line with nothing left behind."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter

from qconvert import _native
from qconvert.llama_cpp import find_tool
from qconvert.quant import kernels
from qconvert.quant.file_types import FileType
from tests.conftest import assert_one_error, convert, interrupt_cli, run_cli
from tests.quant.gguf_compare import differences
from tests.quant.random_models import SMOLLM2, make_llama


@pytest.fixture(scope="module")
def smollm2_hf(tmp_path_factory) -> Path:
    return make_llama(tmp_path_factory.mktemp("smollm2") / "hf", SMOLLM2.with_layers(2))


@pytest.mark.parametrize("file_type", [FileType.Q4_0, FileType.Q5_1, FileType.Q8_0, FileType.Q3_K_M, FileType.Q6_K], ids=lambda t: t.value)
def test_f32_input_matches_llama_quantize(llama_tools, smollm2_hf, tmp_path, file_type):
    src = convert(smollm2_hf, tmp_path / "f32.gguf", FileType.F32)
    reference, ours = tmp_path / "reference.gguf", tmp_path / "ours.gguf"
    proc = subprocess.run([str(find_tool("llama-quantize")), str(src), str(reference), file_type.value.upper(), "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert run_cli("quantize", src, ours, file_type.value).rc == 0
    assert differences(ours, reference) == []


@pytest.mark.parametrize("file_type", [FileType.Q4_K_M, FileType.Q5_0, FileType.F16, FileType.BF16, FileType.F32], ids=lambda t: t.value)
def test_same_file_on_any_thread_count_and_path(smollm2_hf, tmp_path, monkeypatch, file_type):
    src = convert(smollm2_hf, tmp_path / "f16.gguf")
    files = []
    for threads, isa in ((1, "scalar"), (3, _native.isas()[-1])):
        monkeypatch.setenv("QCONVERT_ISA", isa)
        files.append(tmp_path / f"{threads}-{isa}.gguf")
        assert run_cli("quantize", src, files[-1], file_type.value, "--threads", threads).rc == 0
    assert files[0].read_bytes() == files[1].read_bytes()


def _small_gguf(path: Path, tensors: dict[str, np.ndarray], head_count_kv: int = 2) -> Path:
    w = GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(64)
    w.add_feed_forward_length(64)
    w.add_head_count(2)
    w.add_head_count_kv(head_count_kv)
    w.add_file_type(1)
    for name, data in tensors.items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _weights(rows: int = 64, cols: int = 64) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float16)


def test_nan_names_tensor_row_and_column(tmp_path):
    x = _weights()
    x[5, 17] = np.nan
    src = _small_gguf(tmp_path / "nan.gguf", {"blk.0.ffn_up.weight": _weights(), "blk.0.ffn_down.weight": x})
    out = tmp_path / "out"
    out.mkdir()
    assert_one_error(run_cli("quantize", src, out / "q.gguf", "q8_0"), "tensor blk.0.ffn_down.weight has a NaN or Inf at row 5, column 17", out)


@pytest.mark.parametrize(
    "case, message",
    [("head_count_kv=0", "head_count_kv is 0"), ("zero dimension", "no values"), ("truncated", "truncated")],
)
def test_bad_input_is_one_error_line(tmp_path, case, message):
    if case == "head_count_kv=0":
        src = _small_gguf(tmp_path / "in.gguf", {"blk.0.ffn_up.weight": _weights()}, head_count_kv=0)
    elif case == "zero dimension":
        src = _small_gguf(tmp_path / "in.gguf", {"blk.0.ffn_up.weight": _weights(0, 64)})
    else:
        src = _small_gguf(tmp_path / "in.gguf", {"blk.0.ffn_up.weight": _weights()})
        src.write_bytes(src.read_bytes()[:-100])
    out = tmp_path / "out"
    out.mkdir()
    assert_one_error(run_cli("quantize", src, out / "q.gguf", "q4_0"), message, out)


def test_ctrl_c_leaves_no_partial_output(smollm2_hf, tmp_path, monkeypatch):
    """The slowest path (scalar Q2_K, one thread), so that SIGINT lands while the engine runs."""
    src = convert(smollm2_hf, tmp_path / "f16.gguf")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    monkeypatch.setenv("QCONVERT_ISA", "scalar")
    rc, stderr = interrupt_cli("quantize", src, out_dir / "q.gguf", "q2_k", "--threads", 1, ready=lambda: any(out_dir.iterdir()))
    assert rc == 130, stderr
    assert "interrupted" in stderr
    assert list(out_dir.iterdir()) == []


def test_each_matrix_of_a_stack_takes_its_own_importance_row(tmp_path):
    """A 3-D tensor (experts) with n_mat rows of weights: the engine quantizes matrix i's rows with
    row i, as kernels.quantize does slice by slice; one row for all gives other bytes."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 10, 256)).astype(np.float32)  # 3 experts of 10 rows; chunks of 1024 rows span them all
    weights = rng.random((3, 256), dtype=np.float32)
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(b"\0" * 64 + x.tobytes())
    expected = b"".join(kernels.quantize(x[i], T.Q4_K, importance=weights[i]).tobytes() for i in range(3))

    def engine(importance: np.ndarray, n_mat: int) -> bytes:
        with open(src, "rb") as fin, open(dst, "w+b") as fout:
            _native.quantize_file(fin.fileno(), fout.fileno(), [(64, int(T.F32), int(T.Q4_K), 30, 256, 0, importance, n_mat)], 2, None, str(src), str(dst))
        return dst.read_bytes()

    assert engine(weights.ravel(), 3) == expected
    assert engine(weights[0], 1) != expected

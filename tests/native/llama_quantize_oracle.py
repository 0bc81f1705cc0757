"""llama-quantize as an oracle for single tensors: write the rows into a minimal f32 GGUF, run the
bundled llama-quantize with --pure, and read back the quantized bytes."""

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter

from qconvert.llama_cpp import find_tool
from qconvert.quant import kernels

# llama-quantize's type names for a pure (unmixed) file of each block type.
PURE_FTYPE = {
    GGMLQuantizationType.Q4_0: "Q4_0",
    GGMLQuantizationType.Q4_1: "Q4_1",
    GGMLQuantizationType.Q5_0: "Q5_0",
    GGMLQuantizationType.Q5_1: "Q5_1",
    GGMLQuantizationType.Q8_0: "Q8_0",
    GGMLQuantizationType.Q2_K: "Q2_K",
    GGMLQuantizationType.Q3_K: "Q3_K_S",
    GGMLQuantizationType.Q4_K: "Q4_K_S",
    GGMLQuantizationType.Q5_K: "Q5_K_S",
    GGMLQuantizationType.Q6_K: "Q6_K",
}
TENSOR = "blk.0.ffn_up.weight"


def write_single_tensor_gguf(path: Path, rows: np.ndarray) -> None:
    """A minimal llama GGUF holding one f32 matrix, enough for llama-quantize to load."""
    n_rows, n_cols = rows.shape
    w = GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(n_cols)
    w.add_feed_forward_length(n_rows)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(32)
    w.add_file_type(0)
    w.add_tensor(TENSOR, np.ascontiguousarray(rows, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


_ORACLE_CACHE: dict[tuple[bytes, tuple[int, ...], GGMLQuantizationType], bytes] = {}  # one llama-quantize run per input, whatever the ISA


def llama_quantize_rows(rows: np.ndarray, qtype: GGMLQuantizationType, workdir: Path) -> bytes:
    """The bytes llama-quantize writes for `rows` (n_rows, n_cols) quantized to `qtype`."""
    key = (hashlib.sha256(np.ascontiguousarray(rows, dtype=np.float32).tobytes()).digest(), rows.shape, qtype)
    if key not in _ORACLE_CACHE:
        _ORACLE_CACHE[key] = _run_llama_quantize(rows, qtype, workdir)
    return _ORACLE_CACHE[key]


def _run_llama_quantize(rows: np.ndarray, qtype: GGMLQuantizationType, workdir: Path) -> bytes:
    src, dst = workdir / f"oracle-in-{qtype.name}.gguf", workdir / f"oracle-out-{qtype.name}.gguf"
    write_single_tensor_gguf(src, rows)
    proc = subprocess.run(
        [str(find_tool("llama-quantize")), "--pure", str(src), str(dst), PURE_FTYPE[qtype], "2"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    tensor = next(t for t in GGUFReader(dst).tensors if t.name == TENSOR)
    assert tensor.tensor_type == qtype, f"llama-quantize wrote {tensor.tensor_type.name}, not {qtype.name}"
    return tensor.data.tobytes()


def assert_same_blocks(ours: bytes, ref: bytes, qtype: GGMLQuantizationType, n_per_row: int, what: str) -> None:
    """Byte equality, reporting the first differing block (flat index, row, block in row) and both
    blocks in hex."""
    if ours == ref:
        return
    _, elems, nbytes = kernels.block_info(qtype)
    assert len(ours) == len(ref), f"{what}: {len(ours)} bytes, llama-quantize wrote {len(ref)}"
    a = np.frombuffer(ours, dtype=np.uint8).reshape(-1, nbytes)
    b = np.frombuffer(ref, dtype=np.uint8).reshape(-1, nbytes)
    bad = np.flatnonzero((a != b).any(axis=1))
    i = int(bad[0])
    per_row = n_per_row // elems
    pytest.fail(
        f"{what} {qtype.name}: {len(bad)} of {len(a)} blocks differ; first is block {i} "
        f"(row {i // per_row}, block {i % per_row})\n ours: {a[i].tobytes().hex(' ')}\n  ref: {b[i].tobytes().hex(' ')}"
    )


def assert_matches_llama_quantize(x: np.ndarray, qtype: GGMLQuantizationType, workdir: Path, what: str) -> None:
    """Our quantization of the finite rows `x` equals llama-quantize's, block for block."""
    assert np.isfinite(x).all()
    ours = kernels.quantize(x, qtype, threads=2).tobytes()
    assert_same_blocks(ours, llama_quantize_rows(x, qtype, workdir), qtype, x.shape[1], what)

"""The imatrix-weighted block quantizers (native/, the `importance` argument of
qconvert.quant.kernels.quantize) against the bundled llama-quantize --imatrix, byte for byte.

Two f32 GGUF files, each quantized by llama-quantize --pure --imatrix to every type, then every
tensor compared with our quantization of the same rows under the weights llama-quantize derives from
the imatrix file:
- "rows": tensors of widths 32, 96, 256, 800 and 1280 (one block; a row of legacy blocks that
  super-blocks do not tile; one super-block; a k-quant fallback; an odd number of super-blocks);
- "llama": a random Llama converted by qconvert (widths 512 and 800, tied embeddings).
Every tensor's rows mix edge-case distributions (zero and constant rows, ties, huge dynamic ranges,
heavy tails, zero and lone-value groups), and its importance weights are random with zeros, ties,
all-zero blocks and 16 orders of magnitude; the imatrix file is the legacy .dat format.

Then the bindings' errors with importance weights and bad buffers.
"""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFWriter

from qconvert import _native
from qconvert.llama_cpp import find_tool
from qconvert.quant import kernels
from qconvert.quant.file_types import FileType
from tests.conftest import convert
from tests.native.isa import ALL_ISAS, forced_isa
from tests.native.llama_quantize_oracle import PURE_FTYPE
from tests.quant.legacy_imatrix import ImatrixEntry, quantizer_weights, write_legacy_imatrix

TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
ROW_WIDTHS = (32, 96, 256, 800, 1280)
ROWS_PER_TENSOR = 40  # 10 bands of the edge cases below, 4 rows each

# ---- edge-case rows and weights ----------------------------------------------------------------


def _band(kind: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """`rows` rows of one distribution (float64; the caller rounds to float32)."""
    normal = rng.standard_normal((rows, cols))
    if kind == "normal":
        return 0.02 * normal
    if kind == "heavy":  # Student-t and normal·exp(normal): outliers stretch every group
        return np.where(rng.random((rows, cols)) < 0.5, rng.standard_t(2, (rows, cols)), normal * np.exp(2 * rng.standard_normal((rows, cols))))
    if kind == "huge_range":  # 16 orders of magnitude within a row, both signs
        return np.clip(normal * 10.0 ** rng.uniform(-12, 4, (rows, cols)), -2e3, 2e3)
    if kind == "constant":  # constant rows: positive, negative, tiny, large
        return np.array([0.75, -3.0, 1e-20, 3e4])[np.arange(rows) % 4, None] * np.ones((rows, cols))
    if kind == "zero":  # rows of +0, of -0, and of both
        signs = np.where(rng.random((rows, cols)) < 0.5, -0.0, 0.0)
        return np.where(np.arange(rows)[:, None] % 3 == 0, 0.0, np.where(np.arange(rows)[:, None] % 3 == 1, -0.0, signs))
    if kind == "ties":  # values on a 5-point grid: the largest |x| ties, with either sign first
        return rng.integers(-2, 3, (rows, cols)) * 0.125
    if kind == "zero_groups":  # zeroed 16- and 32-value groups and half super-blocks
        x = normal.copy()
        for size in (16, 32, 128):
            for start in rng.choice(max(1, cols // size), size=max(1, cols // size // 3), replace=False):
                x[rng.integers(0, rows), start * size : (start + 1) * size] = 0.0
        return x
    if kind == "lone_values":  # groups that are zero but for one value
        x = np.zeros((rows, cols))
        idx = rng.integers(0, cols, (rows, max(1, cols // 24)))
        np.put_along_axis(x, idx, rng.choice([-1, 1], idx.shape) * 10.0 ** rng.uniform(-8, 4, idx.shape), axis=1)
        return x
    if kind == "tiny":  # subnormals and values just above GROUP_MAX_EPS (1e-15)
        return normal * np.where(rng.random((rows, cols)) < 0.5, 1e-40, 1e-15)
    if kind == "big":  # |x| up to 2e3: large, yet with room for the fitted fp16 scales and mins, which
        # the weights can stretch well past the range (llama-quantize refuses an inf one)
        return rng.choice([-1, 1], (rows, cols)) * rng.uniform(5e2, 2e3, (rows, cols))
    raise ValueError(kind)


BANDS = ("normal", "heavy", "huge_range", "constant", "zero", "ties", "zero_groups", "lone_values", "tiny", "big")


def edge_case_matrix(rows: int, cols: int, seed: int) -> np.ndarray:
    """A (rows, cols) float32 matrix whose rows run through every band, in a seed-dependent order."""
    rng = np.random.default_rng(seed)
    kinds = [BANDS[i] for i in rng.permutation(len(BANDS))]
    per_band = -(-rows // len(kinds))
    x = np.vstack([_band(kind, per_band, cols, rng) for kind in kinds])[:rows]
    return x.astype(np.float32)


def edge_case_importance(cols: int, seed: int) -> ImatrixEntry:
    """Imatrix sums for one tensor: log-uniform over 16 orders of magnitude, a fifth of the columns
    zero, a run of ties, an all-zero 256-column span (32 for narrow rows). Every sixth tensor's are
    all zero, all equal, or of random sign: no imatrix has negative sums, but the loader and the
    quantizers take them, and they drive the fits to negative scales whose codes wrap. ncall runs
    through 1, 3, 7, 0 (the loader then takes the sums as they are) and 10."""
    rng = np.random.default_rng(seed)
    sums = 10.0 ** rng.uniform(-8, 8, cols)
    sums[rng.random(cols) < 0.2] = 0.0
    start = rng.integers(0, cols)
    sums[start : start + max(2, cols // 8)] = sums[start]
    span = 256 if cols >= 512 else 32
    zero_at = rng.integers(0, cols // span) * span
    sums[zero_at : zero_at + span] = 0.0
    variant = seed % 6
    if variant == 3:
        sums[:] = 0.0
    elif variant == 4:
        sums[:] = 2.5
    elif variant == 5:
        sums *= rng.choice([-1.0, 1.0], cols)
    return ImatrixEntry(sums.astype(np.float32), ncall=(1, 3, 7, 0, 10)[seed % 5])


# ---- the two source files ----------------------------------------------------------------------


def write_rows_gguf(path: Path) -> Path:
    """A minimal llama GGUF with one f32 tensor per width (blk.i.ffn_up.weight), enough for
    llama-quantize, which does not check tensor shapes against the hyperparameters."""
    w = GGUFWriter(path, "llama")
    w.add_block_count(len(ROW_WIDTHS))
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_feed_forward_length(64)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(32)
    w.add_file_type(0)
    for i, cols in enumerate(ROW_WIDTHS):
        w.add_tensor(f"blk.{i}.ffn_up.weight", edge_case_matrix(ROWS_PER_TENSOR, cols, seed=i))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_llama_gguf(workdir: Path) -> Path:
    """A random one-layer Llama (hidden 512 = two super-blocks, ffn 800 = 25 legacy blocks, GQA,
    tied embeddings) whose every matrix holds edge-case rows, saved in float32 and converted to an
    f32 GGUF by qconvert."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.variants import copy_tokenizer

    config = LlamaConfig(
        vocab_size=4096,
        hidden_size=512,
        intermediate_size=800,
        num_hidden_layers=1,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=0,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(model.named_parameters())):
            if p.dim() == 2:
                p.copy_(torch.from_numpy(edge_case_matrix(*p.shape, seed=100 + i)))
    model.save_pretrained(workdir / "hf")
    copy_tokenizer(workdir / "hf")
    return convert(workdir / "hf", workdir / "llama-f32.gguf", FileType.F32)


def matrices(gguf: Path) -> dict[str, np.ndarray]:
    """The 2-D f32 tensors of a GGUF, as (rows, cols) arrays."""
    return {t.name: np.asarray(t.data) for t in GGUFReader(gguf).tensors if len(t.shape) == 2}


@pytest.fixture(scope="module", params=["rows", "llama"])
def source(request, tmp_path_factory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """(f32 GGUF, imatrix file, per-tensor quantizer weights) for one of the two source files."""
    workdir = tmp_path_factory.mktemp(f"weighted-{request.param}")
    gguf = write_rows_gguf(workdir / "rows-f32.gguf") if request.param == "rows" else write_llama_gguf(workdir)
    entries = {name: edge_case_importance(m.shape[1], seed=i) for i, (name, m) in enumerate(sorted(matrices(gguf).items()))}
    imatrix = write_legacy_imatrix(workdir / "imatrix.dat", entries)
    return gguf, imatrix, {name: quantizer_weights(e) for name, e in entries.items()}


# ---- byte identity -----------------------------------------------------------------------------


def llama_quantize_imatrix(src: Path, imatrix: Path, dst: Path, qtype: T) -> str:
    proc = subprocess.run(
        [str(find_tool("llama-quantize")), "--pure", "--imatrix", str(imatrix), str(src), str(dst), PURE_FTYPE[qtype], "1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def first_difference(name: str, ours: bytes, ref: bytes, qtype: T, n_per_row: int) -> str | None:
    """None when equal, else which blocks differ: the count, and the first one's row, block index
    in the row and bytes."""
    if ours == ref:
        return None
    _, elems, nbytes = kernels.block_info(qtype)
    if len(ours) != len(ref):
        return f"{name} {qtype.name}: {len(ours)} bytes, llama-quantize wrote {len(ref)}"
    a = np.frombuffer(ours, np.uint8).reshape(-1, nbytes)
    b = np.frombuffer(ref, np.uint8).reshape(-1, nbytes)
    bad = np.flatnonzero((a != b).any(axis=1))
    i, per_row = int(bad[0]), n_per_row // elems
    return (
        f"{name} {qtype.name}: {len(bad)} of {len(a)} blocks differ; first at row {i // per_row}, block {i % per_row}\n"
        f"  ours: {a[i].tobytes().hex(' ')}\n   ref: {b[i].tobytes().hex(' ')}"
    )


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("isa", ALL_ISAS)
def test_weighted_quantizers_match_llama_quantize_imatrix(llama_tools, source, qtype, isa, tmp_path):
    gguf, imatrix, weights = source
    log = llama_quantize_imatrix(gguf, imatrix, tmp_path / "ref.gguf", qtype)
    assert "did not find weights" not in log, "llama-quantize ran without the imatrix for some tensor"
    rows = matrices(gguf)
    ref = {t.name: t for t in GGUFReader(tmp_path / "ref.gguf").tensors if t.name in rows}
    assert set(ref) == set(rows)
    problems, weighted_differs = [], False
    for name, r in sorted(ref.items()):
        x, qt = rows[name], r.tensor_type
        _, elems, _ = kernels.block_info(qt)
        assert qt == qtype or x.shape[1] % 256 != 0, f"{name}: llama-quantize wrote {qt.name}"
        with forced_isa(isa):
            ours = kernels.quantize(x, qt, threads=2, importance=weights[name]).tobytes()
            plain = kernels.quantize(x, qt, threads=2).tobytes()
        problems.append(first_difference(name, ours, r.data.tobytes(), qt, x.shape[1]))
        weighted_differs |= ours != plain
    assert [p for p in problems if p] == []
    # the weights changed something, so both sides ran their weighted algorithm (Q8_0 has none)
    assert weighted_differs == (qtype != T.Q8_0)


# ---- the bindings: importance weights and bad input ----------------------------------------------


def _normal(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols), dtype=np.float32)


def _weights(cols: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random(cols, dtype=np.float32)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_weighted_output_does_not_depend_on_threads_or_fp16_widening(qtype):
    x = _normal(11, 768).astype(np.float16)
    one = kernels.quantize(x, qtype, threads=1, importance=_weights(768))
    np.testing.assert_array_equal(kernels.quantize(x, qtype, threads=3, importance=_weights(768)), one)
    np.testing.assert_array_equal(kernels.quantize(x.astype(np.float32), qtype, threads=2, importance=_weights(768)), one)


def test_q8_0_ignores_importance_weights_as_llama_cpp_does():
    x = _normal(4, 256)
    np.testing.assert_array_equal(kernels.quantize(x, T.Q8_0, importance=_weights(256)), kernels.quantize(x, T.Q8_0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("qtype", [T.Q4_1, T.Q4_K], ids=lambda t: t.name)
def test_non_finite_input_with_weights_names_row_and_column(qtype, bad):
    x = _normal(5, 512)
    x[2, 300] = bad
    with pytest.raises(FloatingPointError, match=r"row 2, column 300"):
        kernels.quantize(x, qtype, threads=2, importance=_weights(512))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_importance_weight_is_refused(bad):
    w = _weights(256)
    w[17] = bad
    with pytest.raises(ValueError, match="importance weight at column 17 is not finite"):
        kernels.quantize(_normal(2, 256), T.Q4_K, importance=w)


def _args(**override):
    """quantize_into's arguments for 2 Q4_K rows of 512, with some replaced."""
    args = dict(type=int(T.Q4_K), src=_normal(2, 512), n_rows=2, n_per_row=512, dst=np.empty(2 * 288, np.uint8), threads=1, importance=None, src_f16=False)
    args.update(override)
    return tuple(args.values())


@pytest.mark.parametrize(
    "override, error, message",
    [
        (dict(type=99), ValueError, "unsupported block type id 99"),
        (dict(n_rows=-1), ValueError, "n_rows must not be negative"),
        (dict(n_per_row=0), ValueError, "n_per_row must be positive"),
        (dict(n_per_row=500), ValueError, "not a multiple of Q4_K's block of 256"),
        (dict(n_rows=2**62, n_per_row=2**20), OverflowError, "more than a buffer can hold"),
        (dict(type=int(T.Q8_0), n_rows=2**58 - 1, n_per_row=32), OverflowError, "more than a buffer can hold"),  # bytes, not values
        (dict(src=[1.0] * 1024), TypeError, "source must be a buffer of float32"),
        (dict(src=_normal(2, 512).astype(np.float64)), TypeError, r"source buffer holds items of format 'd' and size 8, expected float32"),
        (dict(src=_normal(2, 512), src_f16=True), TypeError, "expected float16"),
        (dict(src=_normal(2, 512).byteswap().view(">f4")), TypeError, "format '>f'"),
        (dict(src=_normal(2, 1024)[:, ::2]), ValueError, "source buffer is not C-contiguous"),
        (dict(src=_normal(3, 512)), ValueError, "source buffer has 1536 float32 items, expected 1024"),
        (dict(src=np.empty(4100, np.uint8)[2:4098].view(np.float32)), ValueError, "source buffer is not aligned to 4 bytes"),
        (dict(dst=bytes(576)), ValueError, "destination buffer is read-only"),
        (dict(dst=np.empty(144, np.float32)), TypeError, "destination buffer holds items of format 'f'"),
        (dict(dst=np.empty(577, np.uint8)), ValueError, "destination buffer has 577 uint8 items, expected 576"),
        (dict(dst=np.empty(578, np.uint8)[1:-1]), ValueError, "destination buffer is not aligned to 2 bytes"),
        (dict(importance=_weights(256)), ValueError, "importance buffer has 256 float32 items, expected 512"),
        (dict(importance=_weights(512).astype(np.float16)), TypeError, "importance buffer holds items of format 'e'"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_quantize_into_checks_its_arguments(override, error, message):
    with pytest.raises(error, match=message):
        _native.quantize_into(*_args(**override))


def test_dequantize_and_fp16_bindings_check_their_buffers():
    blocks = kernels.quantize(_normal(1, 256), T.Q4_K)
    with pytest.raises(ValueError, match="source buffer has 143 uint8 items, expected 144"):
        _native.dequantize_into(int(T.Q4_K), blocks.ravel()[:143], 256, np.empty(256, np.float32))
    with pytest.raises(ValueError, match="destination buffer has 255 float32 items, expected 256"):
        _native.dequantize_into(int(T.Q4_K), blocks, 256, np.empty(255, np.float32))
    with pytest.raises(OverflowError, match="more than a buffer can hold"):
        _native.dequantize_into(int(T.Q8_0), blocks, 2**63 - 32, np.empty(256, np.float32))
    with pytest.raises(TypeError, match="destination buffer holds items of format 'e'"):
        _native.fp32_to_fp16_into(np.ones(4, np.float32), np.empty(4, np.float16))
    with pytest.raises(ValueError, match="destination buffer has 3 uint16 items, expected 4"):
        _native.fp32_to_fp16_into(np.ones(4, np.float32), np.empty(3, np.uint16))

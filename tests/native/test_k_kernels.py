"""The k-quant block quantizers (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) in native/quants_k.c.

The reference is llama.cpp itself: for every input below our bytes must equal what the bundled
llama-quantize --pure writes (its quantize_row_qN_K_ref, no imatrix). The gguf package's numpy
dequantizers are the oracle for our dequantizers.
"""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants as gguf_quants

from qconvert.quant import kernels
from tests.native.isa import ALL_ISAS, forced_isa
from tests.native.llama_quantize_oracle import assert_matches_llama_quantize

K_TYPES = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
QK_K = 256

# byte offsets of the fp16 fields (d, and dmin where there is one) in each super-block
HALF_OFFSETS = {T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}


# ---- inputs ------------------------------------------------------------------------------------


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def normal(rows: int, cols: int, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    return (_rng(seed).standard_normal((rows, cols)) * scale).astype(np.float32)


def heavy_tailed() -> np.ndarray:
    """Student-t (2 degrees of freedom) rows and normal·exp(normal) rows: outliers that stretch a
    group's range so that most codes sit near the middle."""
    rng = _rng(1)
    t = rng.standard_t(2, (4, 1024))
    lognormal_mix = rng.standard_normal((4, 1024)) * np.exp(rng.standard_normal((4, 1024)))
    return np.vstack([t, lognormal_mix]).astype(np.float32)


def zero_superblocks() -> np.ndarray:
    """Whole super-blocks of +0, of -0, and of both zeros, between random ones."""
    x = normal(4, 1024, seed=2)
    sb = x.reshape(-1, QK_K)
    sb[1] = 0.0
    sb[4] = -0.0
    sb[6] = np.where(np.arange(QK_K) % 3 == 0, -0.0, 0.0)
    sb[-1] = 0.0
    return x


def zero_subblocks() -> np.ndarray:
    """All-zero 16-value groups (the Q2_K/Q3_K/Q6_K unit) and 32-value groups (Q4_K/Q5_K) inside
    super-blocks that are otherwise random; and super-blocks where a single group is non-zero."""
    rng = _rng(3)
    x = normal(6, 1024, seed=3)
    sb = x.reshape(-1, QK_K)  # 24 super-blocks
    for i in range(0, 8):
        for g in rng.choice(16, 1 + i % 5, replace=False):
            sb[i, 16 * g : 16 * g + 16] = 0.0 if g % 2 else -0.0
    for i in range(8, 16):
        for g in rng.choice(8, 1 + i % 4, replace=False):
            sb[i, 32 * g : 32 * g + 32] = 0.0
    for i in range(16, 24):
        keep = (i - 16) * 2
        group = sb[i, 16 * keep : 16 * keep + 16].copy()
        sb[i] = 0.0
        sb[i, 16 * keep : 16 * keep + 16] = group
    return x


def single_nonzero() -> np.ndarray:
    """Each super-block is zero but for one element of random position, sign and magnitude."""
    rng = _rng(4)
    sb = np.zeros((16, QK_K), dtype=np.float32)
    pos = rng.integers(0, QK_K, len(sb))
    vals = rng.choice([-1, 1], len(sb)) * 10.0 ** rng.uniform(-6, 4, len(sb))
    sb[np.arange(len(sb)), pos] = vals
    sb[0, :] = 0.0
    sb[0, 0] = 1.0
    sb[1, :] = 0.0
    sb[1, 255] = -1.0
    return sb.reshape(4, 1024)


def tiny() -> np.ndarray:
    """Tiny magnitudes: ~1e-30 (x² underflows, so the x²-weighted fits see zero weights), normal
    floats near the bottom of the range, subnormals (grid scales overflow to inf), random
    subnormal bit patterns; and a row mixing tiny and ordinary groups."""
    rng = _rng(5)
    rows = [
        rng.standard_normal(1024) * 1e-30,
        rng.standard_normal(1024) * 1e-20,
        rng.standard_normal(1024) * 1e-36,
        rng.standard_normal(1024) * 1e-38,
        rng.standard_normal(1024) * 1e-40,
        rng.standard_normal(1024) * 1e-43,
        np.full(1024, 1.4e-45) * rng.choice([-1, 0, 1], 1024),  # the smallest subnormal
    ]
    x = np.array(rows, dtype=np.float32)
    bits = rng.integers(1, 0x00800000, 1024, dtype=np.uint32) | (rng.integers(0, 2, 1024, dtype=np.uint32) << 31)
    subnormal = bits.view(np.float32)
    mixed = normal(1, 1024, seed=6)[0]
    mixed[16:48] *= 1e-30
    mixed[300:316] *= 1e-40
    mixed[600:700] *= 1e-8
    return np.vstack([x, subnormal[None, :], mixed[None, :]]).astype(np.float32)


def mixed_magnitudes() -> np.ndarray:
    """Groups 1e3..1e5 times smaller than the super-block's largest: their quantized sub-scale
    rounds to 0, and the reference keeps their first-pass codes."""
    rng = _rng(7)
    x = normal(4, 1024, scale=1e-3, seed=7)
    sb = x.reshape(-1, QK_K)
    for i in range(len(sb)):
        g = rng.integers(0, 16)
        sb[i, 16 * g : 16 * g + 16] *= 10.0 ** rng.uniform(3, 5)
    return x


def large() -> np.ndarray:
    """|x| from 1e4 to 6e4 with mixed signs (the fp16 scales stay finite), one-signed groups, ramps."""
    rng = _rng(8)
    x = rng.uniform(1e4, 6e4, (4, 1024)) * rng.choice([-1, 1], (4, 1024))
    x[0, :256] = np.abs(x[0, :256])
    x[0, 256:512] = -np.abs(x[0, 256:512])
    x[1, :256] = np.linspace(-6e4, 6e4, 256)
    x[1, 256:288] = 6e4
    x[1, 288:320] = -6e4
    return x.astype(np.float32)


def constant_rows() -> np.ndarray:
    """Whole rows of one value (positive, negative, tiny, large) and super-blocks of one value."""
    rows = [np.full(1024, v) for v in (1.0, -1.0, 0.37, -2.5, 1e-20, -1e-20, 6e4, -6e4)]
    values = [1.0, -1.0, 0.5, -0.3, 0.0, -0.0, 7.25, -7.25, 1234.5, -3.0e-5, 0.1, -65504.0]
    per_superblock = np.repeat(np.array(values), QK_K).reshape(3, 1024)
    return np.vstack([np.array(rows), per_superblock]).astype(np.float32)


def fp16_patterns() -> np.ndarray:
    """Rows from random finite fp16 bit patterns: every exponent, subnormals, signed zeros, ±65504."""
    bits = _rng(9).integers(0, 1 << 16, 64 * 1024, dtype=np.uint32).astype(np.uint16)
    h = bits.view(np.float16)
    h = h[np.isfinite(h)][: 32 * 1024]
    return h.astype(np.float32).reshape(32, 1024)


def one_signed() -> np.ndarray:
    """All-positive and all-negative rows, near zero and offset far from it (the fitted min of
    Q2_K/Q4_K/Q5_K is clamped to ≤ 0 and the symmetric types see one sign only)."""
    rng = _rng(10)
    a = np.abs(rng.standard_normal((2, 1024)))
    b = 5.0 + 0.1 * rng.standard_normal((2, 1024))
    return np.vstack([a, -a, b, -b]).astype(np.float32)


def grid_values() -> np.ndarray:
    """Values on small integer grids and ramps: many codes land on rounding ties."""
    rng = _rng(11)
    a = rng.integers(-4, 4, (2, 1024)).astype(np.float32)
    b = rng.integers(0, 16, (2, 1024)).astype(np.float32) * 0.5
    c = rng.integers(-32, 32, (2, 1024)).astype(np.float32) / 8.0
    ramp = np.tile(np.linspace(-1, 1, 256), (2, 4))
    return np.vstack([a, b, c, ramp]).astype(np.float32)


CASES = {
    "normal-4x256": lambda: normal(4, 256),
    "normal-8x4096": lambda: normal(8, 4096, seed=12),
    "normal-odd-superblocks-3x1280": lambda: normal(3, 1280, seed=13),  # Q4_K/Q5_K fit super-blocks in pairs
    "heavy-tailed": heavy_tailed,
    "zero-superblocks": zero_superblocks,
    "zero-subblocks": zero_subblocks,
    "single-nonzero": single_nonzero,
    "tiny": tiny,
    "mixed-magnitudes": mixed_magnitudes,
    "large": large,
    "constant": constant_rows,
    "fp16-patterns": fp16_patterns,
    "one-signed": one_signed,
    "grid-values": grid_values,
}


# ---- comparison --------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("isa", ALL_ISAS)
def test_bytes_match_llama_quantize(case, qtype, isa, tmp_path, llama_tools):
    with forced_isa(isa):
        assert_matches_llama_quantize(CASES[case](), qtype, tmp_path, case)


# ---- dequantization ----------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("case", ["normal-4x256", "heavy-tailed", "zero-subblocks", "mixed-magnitudes", "large", "fp16-patterns", "tiny"])
def test_dequantize_matches_gguf(case, qtype):
    x = CASES[case]()
    q = kernels.quantize(x, qtype)
    ours = kernels.dequantize(q, qtype, x.shape[1])
    ref = gguf_quants.dequantize(q, qtype).astype(np.float32)
    assert ours.shape == x.shape
    # bit patterns, so that -0.0 vs 0.0 counts too
    np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
def test_dequantize_random_blocks_matches_gguf(qtype):
    """Arbitrary block bytes (with finite fp16 scales), not only those our quantizer writes."""
    _, elems, nbytes = kernels.block_info(qtype)
    rng = _rng(13)
    raw = rng.integers(0, 256, (32, nbytes), dtype=np.uint8)
    for off in HALF_OFFSETS[qtype]:
        raw[:, off : off + 2] = (rng.standard_normal((32, 1)) * 0.1).astype(np.float16).view(np.uint8)
    data = raw.reshape(4, -1)
    n_per_row = data.shape[1] // nbytes * elems
    ours = kernels.dequantize(data, qtype, n_per_row)
    ref = gguf_quants.dequantize(data, qtype).astype(np.float32)
    np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))


def test_round_trip_error_orders_by_bits():
    x = normal(16, 4096, seed=31)
    rmse = {}
    for qtype in K_TYPES:
        back = kernels.dequantize(kernels.quantize(x, qtype), qtype, x.shape[1])
        rmse[qtype.name] = float(np.sqrt(np.mean((back.astype(np.float64) - x) ** 2)))
    order = [rmse[t.name] for t in (T.Q6_K, T.Q5_K, T.Q4_K, T.Q3_K, T.Q2_K)]
    assert order == sorted(order) and len(set(order)) == len(order), rmse
    assert rmse["Q6_K"] < 0.03 and rmse["Q2_K"] < 0.5, rmse  # sanity: it is a quantizer at all

"""The legacy block quantizers (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) in native/quants_legacy.c.

The reference is llama.cpp itself: for every input below our bytes must equal what the bundled
llama-quantize --pure writes. The gguf package's numpy (de)quantizers are a second oracle.
"""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants as gguf_quants

from qconvert.quant import kernels
from tests.native.isa import ALL_ISAS, forced_isa
from tests.native.llama_quantize_oracle import assert_matches_llama_quantize, assert_same_blocks

LEGACY = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
QK = 32


# ---- inputs ------------------------------------------------------------------------------------


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def normal(rows: int, cols: int, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    return (_rng(seed).standard_normal((rows, cols)) * scale).astype(np.float32)


def with_zero_blocks() -> np.ndarray:
    """Random rows in which some blocks are all +0, all -0, or mix the two zeros; and blocks whose
    minimum or maximum is a zero of either sign (the stored m of Q4_1/Q5_1 shows which)."""
    x = normal(8, 512, seed=1)
    blocks = x.reshape(-1, QK)
    blocks[0] = 0.0
    blocks[3] = -0.0
    blocks[5] = np.where(np.arange(QK) % 2 == 0, 0.0, -0.0)
    blocks[6] = np.where(np.arange(QK) % 2 == 0, -0.0, 0.0)
    blocks[9] = np.abs(blocks[9])
    blocks[9, 4], blocks[9, 7] = -0.0, 0.0  # minimum is zero, -0 first
    blocks[10] = np.abs(blocks[10])
    blocks[10, 4], blocks[10, 7] = 0.0, -0.0  # minimum is zero, +0 first
    blocks[11] = -np.abs(blocks[11])
    blocks[11, 2], blocks[11, 30] = -0.0, 0.0  # maximum is zero, -0 first
    blocks[12] = -np.abs(blocks[12])
    blocks[12, 2], blocks[12, 30] = 0.0, -0.0  # maximum is zero, +0 first
    blocks[20:40] = 0.0
    return x


def single_nonzero() -> np.ndarray:
    """Each block is zero but for one element, of random position, sign and magnitude."""
    rng = _rng(2)
    blocks = np.zeros((4 * 256 // QK, QK), dtype=np.float32)
    pos = rng.integers(0, QK, len(blocks))
    vals = rng.choice([-1, 1], len(blocks)) * 10.0 ** rng.uniform(-6, 4, len(blocks))
    blocks[np.arange(len(blocks)), pos] = vals
    blocks[-1] = 0.0
    blocks[-1, 0] = -0.0
    blocks[-1, 31] = -3.0
    return blocks.reshape(4, 256)


def tiny() -> np.ndarray:
    """Tiny magnitudes: ~1e-30, and subnormals. A block whose largest |x| is a small subnormal gets
    d = 0 (all codes from id = 0); one a little larger gets a nonzero d whose 1/d overflows to inf,
    so x*id is ±inf or NaN; a larger one keeps a finite id with few mantissa bits in d."""
    rng = _rng(3)
    rows = [
        rng.standard_normal(256) * 1e-30,
        rng.standard_normal(256) * 1e-38,
        rng.standard_normal(256) * 1e-40,
        rng.standard_normal(256) * 1e-43,
        rng.standard_normal(256) * 1e-37,
        rng.standard_normal(256) * 3e-37,
        rng.standard_normal(256) * 2e-36,
        np.full(256, 1.4e-45) * rng.choice([-1, 0, 1], 256),  # the smallest subnormal
    ]
    x = np.array(rows, dtype=np.float32)
    bits = rng.integers(1, 0x00800000, 256, dtype=np.uint32) | (rng.integers(0, 2, 256, dtype=np.uint32) << 31)
    subnormal = bits.view(np.float32)  # random subnormal bit patterns, either sign
    return np.vstack([x, subnormal[None, :]])


def large() -> np.ndarray:
    """|x| from 1e4 to 6e4 (the fp16 d and m stay finite), with mixed signs."""
    rng = _rng(4)
    x = rng.uniform(1e4, 6e4, (4, 256)) * rng.choice([-1, 1], (4, 256))
    x[0, :32] = 6e4
    x[0, 32:64] = -6e4
    x[1, :32] = np.linspace(-6e4, 6e4, 32)
    return x.astype(np.float32)


def constant_blocks() -> np.ndarray:
    """Every block holds one repeated value: positive, negative, zero, tiny and large."""
    values = [1.0, -1.0, 0.5, -0.3, 0.0, -0.0, 1e-20, -1e-20, 1e-40, 7.25, 65504.0, -65504.0, 1234.5, 3.0e-5, 0.1, -2.0]
    return np.repeat(np.array(values, dtype=np.float32), QK).reshape(2, -1)


def fp16_patterns() -> np.ndarray:
    """Rows built from random fp16 bit patterns (finite ones only): every exponent, subnormals,
    signed zeros, values up to ±65504."""
    bits = _rng(5).integers(0, 1 << 16, 64 * 512, dtype=np.uint32).astype(np.uint16)
    h = bits.view(np.float16)
    h = h[np.isfinite(h)][: 32 * 512]
    return h.astype(np.float32).reshape(32, 512)


def sign_ties() -> np.ndarray:
    """Blocks where max == -min, with the positive or the negative extreme first (Q4_0/Q5_0 take
    the sign of the first), and blocks where the extreme value repeats with the same sign."""
    rng = _rng(6)
    blocks = rng.uniform(-0.9, 0.9, (32, QK)).astype(np.float32)
    for i, b in enumerate(blocks):
        p, q = sorted(rng.choice(QK, 2, replace=False))
        m = np.float32(rng.uniform(1, 3))
        first = m if i % 2 == 0 else -m
        b[p], b[q] = first, first if i % 4 == 3 else -first
    return blocks.reshape(4, 256)


def grid_values() -> np.ndarray:
    """Values on small integer grids, so x*id lands on or next to the .5 boundaries that the
    truncation (x*id + 8.5) and Q8_0's roundf (halves away from zero) decide."""
    rng = _rng(7)
    a = rng.integers(-16, 17, (4, 256)).astype(np.float32) * 0.25
    b = rng.integers(-127, 128, (4, 256)).astype(np.float32) / 2.0
    c = (rng.integers(-254, 255, (4, 256)).astype(np.float32) + 0.5) / 254.0
    return np.vstack([a, b, c]).astype(np.float32)


CASES = {
    "normal-4x256": lambda: normal(4, 256),
    "normal-16x4096": lambda: normal(16, 4096, seed=11),
    "normal-small-scale-8x1024": lambda: normal(8, 1024, scale=0.02, seed=12),
    "zero-blocks": with_zero_blocks,
    "single-nonzero": single_nonzero,
    "tiny": tiny,
    "large": large,
    "constant-blocks": constant_blocks,
    "fp16-patterns": fp16_patterns,
    "sign-ties": sign_ties,
    "grid-values": grid_values,
}


# ---- comparison --------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", LEGACY, ids=lambda t: t.name)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("isa", ALL_ISAS)
def test_bytes_match_llama_quantize(case, qtype, isa, tmp_path, llama_tools):
    with forced_isa(isa):
        assert_matches_llama_quantize(CASES[case](), qtype, tmp_path, case)


@pytest.mark.parametrize("qtype", LEGACY, ids=lambda t: t.name)
def test_bytes_match_gguf_numpy_quantizer(qtype):
    x = normal(8, 1024, seed=21)
    ours = kernels.quantize(x, qtype).tobytes()
    assert_same_blocks(ours, gguf_quants.quantize(x, qtype).tobytes(), qtype, x.shape[1], "gguf-py")


# ---- dequantization ----------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", LEGACY, ids=lambda t: t.name)
@pytest.mark.parametrize("case", ["normal-4x256", "zero-blocks", "large", "fp16-patterns", "sign-ties", "tiny"])
def test_dequantize_matches_gguf(case, qtype):
    x = CASES[case]()
    q = kernels.quantize(x, qtype)
    ours = kernels.dequantize(q, qtype, x.shape[1])
    ref = gguf_quants.dequantize(q, qtype).astype(np.float32)
    assert ours.shape == x.shape
    # bit patterns, so that -0.0 vs 0.0 counts too
    np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("qtype", LEGACY, ids=lambda t: t.name)
def test_dequantize_random_blocks_matches_gguf(qtype):
    """Arbitrary block bytes (with finite fp16 scales), not only those our quantizer writes."""
    _, elems, nbytes = kernels.block_info(qtype)
    rng = _rng(8)
    raw = rng.integers(0, 256, (64, nbytes), dtype=np.uint8)
    n_halves = 2 if qtype in (T.Q4_1, T.Q5_1) else 1
    halves = (rng.standard_normal((64, n_halves)) * 3).astype(np.float16)
    raw[:, : 2 * n_halves] = halves.view(np.uint8).reshape(64, -1)
    data = raw.reshape(4, -1)
    n_per_row = data.shape[1] // nbytes * elems
    ours = kernels.dequantize(data, qtype, n_per_row)
    ref = gguf_quants.dequantize(data, qtype).astype(np.float32)
    np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))


def test_round_trip_error_orders_by_bits():
    x = normal(16, 4096, seed=31)
    rmse = {}
    for qtype in LEGACY:
        back = kernels.dequantize(kernels.quantize(x, qtype), qtype, x.shape[1])
        rmse[qtype] = float(np.sqrt(np.mean((back.astype(np.float64) - x) ** 2)))
    assert rmse[T.Q8_0] < min(rmse[T.Q5_0], rmse[T.Q5_1]), rmse
    assert max(rmse[T.Q5_0], rmse[T.Q5_1]) < min(rmse[T.Q4_0], rmse[T.Q4_1]), rmse
    assert rmse[T.Q4_0] < 0.15 and rmse[T.Q8_0] < 0.01, rmse  # sanity: it is a quantizer at all

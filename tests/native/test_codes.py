"""The codes inside GGUF blocks (native/codes.h) against the gguf package's dequantizers, an unpacker
written from the format description independently of ours: every block type's codes and affine
maps reproduce the dequantized values, new codes written into blocks dequantize as they should
(so each code bit sits where the format puts it), and the weighted legacy quantizers fitted on a
part of a row give that part's blocks of the whole row."""

import gguf
import numpy as np
import pytest
from gguf import quants

from qconvert import _native
from qconvert.ggml_types import GGMLQuantizationType as T
from qconvert.quant import kernels

TYPES = sorted(kernels.BLOCK_TYPES)
N = 512


def rows(seed: int) -> np.ndarray:
    """Rows of varied scale and sign, with an all-zero row and a row of equal values."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((6, N)) * rng.uniform(0.01, 4, (6, 1))).astype(np.float32)
    x[1] = 0
    x[2] = 0.25
    x[3, :64] = np.abs(x[3, :64])  # all-positive blocks: mins at zero
    return x


def reference_dequantize(blocks: np.ndarray, qtype: T) -> np.ndarray:
    return quants.dequantize(blocks, gguf.GGMLQuantizationType(int(qtype)))


@pytest.mark.parametrize("weighted", [False, True], ids=["reference", "imatrix"])
@pytest.mark.parametrize("qtype", TYPES, ids=[t.name for t in TYPES])
def test_codes_and_affine_maps_give_the_dequantized_values(qtype, weighted):
    x = rows(0)
    importance = np.random.default_rng(1).uniform(0.1, 5, N).astype(np.float32) if weighted else None
    blocks = kernels.quantize(x, qtype, importance=importance)
    codes, s, o = kernels.block_codes(blocks, qtype, N)
    bits, zero = kernels.code_info(qtype)
    assert codes.max() < 1 << bits
    values = s * (codes.astype(np.float32) - zero) + o
    np.testing.assert_array_equal(values, kernels.dequantize(blocks, qtype, N))  # the same float operations as our dequantizer
    np.testing.assert_allclose(values, reference_dequantize(blocks, qtype), rtol=1e-6, atol=0)


@pytest.mark.parametrize("qtype", TYPES, ids=[t.name for t in TYPES])
def test_codes_written_into_blocks_sit_where_the_format_puts_them(qtype):
    x = rows(2)
    blocks = kernels.quantize(x, qtype)
    bits, zero = kernels.code_info(qtype)
    same = blocks.copy()
    kernels.set_block_codes(same, qtype, kernels.block_codes(blocks, qtype, N)[0])
    assert np.array_equal(same, blocks)
    new_codes = np.random.default_rng(3).integers(0, 1 << bits, (x.shape[0], N)).astype(np.uint8)
    kernels.set_block_codes(blocks, qtype, new_codes)
    codes, s, o = kernels.block_codes(blocks, qtype, N)
    assert np.array_equal(codes, new_codes)
    np.testing.assert_allclose(s * (new_codes.astype(np.float32) - zero) + o, reference_dequantize(blocks, qtype), rtol=1e-6, atol=0)


@pytest.mark.parametrize("qtype", TYPES, ids=[t.name for t in TYPES])
def test_codes_too_wide_for_the_type_are_refused(qtype):
    bits, _ = kernels.code_info(qtype)
    if bits == 8:
        pytest.skip("every uint8 is a Q8_0 code")
    blocks = kernels.quantize(rows(4), qtype)
    codes = np.zeros((blocks.shape[0], N), dtype=np.uint8)
    codes[2, 7] = 1 << bits
    with pytest.raises(ValueError, match="does not fit"):
        kernels.set_block_codes(blocks, qtype, codes)


@pytest.mark.parametrize("qtype", sorted(kernels.LEGACY_PART_TYPES), ids=lambda t: t.name)
def test_weighted_legacy_fit_of_a_row_part_equals_the_whole_rows_blocks(qtype):
    x = rows(5)
    importance = np.random.default_rng(6).uniform(0.1, 5, N).astype(np.float32)
    whole = kernels.quantize(x, qtype, importance=importance)
    sigma2 = kernels.row_sigma2(x)
    _, elems, nbytes = kernels.block_info(qtype)
    for start, stop in ((0, 32), (96, 160), (256, 512)):  # one block, two, eight (the lockstep lanes of Q4_1/Q5_1)
        part = kernels.quantize_part_weighted(x[:, start:stop], qtype, importance[start:stop], sigma2)
        assert np.array_equal(part, whole[:, start // elems * nbytes : stop // elems * nbytes]), (start, stop)


def test_binding_checks_its_arguments():
    blocks = kernels.quantize(rows(7), T.Q4_K)
    with pytest.raises(ValueError, match="not whole Q4_K blocks"):
        _native.block_codes(int(T.Q4_K), blocks, 100, np.empty(100, np.uint8), np.empty(100, np.float32), np.empty(100, np.float32))
    with pytest.raises(ValueError, match="no row-wide sigma2"):
        _native.quantize_part_weighted(int(T.Q4_K), np.zeros(256, np.float32), 1, 256, np.empty(144, np.uint8), np.ones(256, np.float32), np.ones(1, np.float32))
    with pytest.raises(ValueError, match="codes buffer has"):
        _native.block_codes(int(T.Q4_K), blocks, blocks.size // 144 * 256, np.empty(3, np.uint8), np.empty(3, np.float32), np.empty(3, np.float32))

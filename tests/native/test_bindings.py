"""The Python bindings of the C quantizers, for every block type: threads, fp16 input, bad input,
the importance-weight hook of the API, and the instruction-set switch."""

import os
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from qconvert import _native
from qconvert.quant import kernels
from tests.native.isa import ALL_ISAS, forced_isa, require_isa

ALL_TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]


def normal(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols), dtype=np.float32)


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_thread_count_does_not_change_output(qtype):
    x = normal(13, 1024, seed=41)
    one = kernels.quantize(x, qtype, threads=1)
    for threads in (2, 7):
        np.testing.assert_array_equal(kernels.quantize(x, qtype, threads=threads), one)


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_fp16_rows_quantize_as_their_exact_float32_values(qtype):
    x = normal(9, 512, seed=5).astype(np.float16)
    np.testing.assert_array_equal(kernels.quantize(x, qtype, threads=2), kernels.quantize(x.astype(np.float32), qtype, threads=2))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_non_finite_input_names_row_and_column(qtype, bad, dtype):
    x = normal(5, 256).astype(dtype)
    x[3, 77] = bad
    with pytest.raises(FloatingPointError, match=r"row 3, column 77"):
        kernels.quantize(x, qtype, threads=2)


def test_row_length_must_fit_the_block():
    with pytest.raises(ValueError, match="multiple of"):
        kernels.quantize(normal(2, 100), T.Q4_K)


def test_fp32_to_fp16_rounding_matches_numpy():
    rng = np.random.default_rng(1)
    scales = [1e-8, 1e-6, 1e-4, 1.0, 1e4, 6e4]
    special = [0.0, -0.0, 65504, 65519, 65520, 65536, 1e9, np.inf, -np.inf, 2**-25, 2**-24, 3 * 2**-26]
    x = np.concatenate([rng.standard_normal(20000).astype(np.float32) * s for s in scales] + [np.array(special, np.float32)])
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(kernels.fp32_to_fp16_bits(x), expected)


# ---- the instruction-set paths ------------------------------------------------------------------


def test_set_isa_refuses_an_unknown_path():
    with pytest.raises(ValueError, match="instruction set mmx is not one this CPU runs"):
        _native.set_isa("mmx")


@pytest.mark.parametrize("isa", ALL_ISAS)
def test_qconvert_isa_chooses_the_path_at_start_up(isa):
    require_isa(isa)
    code = "from qconvert import _native; print(_native.isa())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "QCONVERT_ISA": isa})
    assert proc.stdout.strip() == isa, proc.stderr


def test_qconvert_isa_naming_no_path_is_an_import_error():
    code = "from qconvert import _native"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "QCONVERT_ISA": "sse9"})
    assert proc.returncode != 0 and "QCONVERT_ISA=sse9: not a path this CPU can run" in proc.stderr


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("isa", ALL_ISAS[1:])
def test_simd_paths_write_the_scalar_bytes(qtype, isa):
    """Rows of every width class (a tail of blocks that fills no SIMD group, one block, many), fp16
    and float32, with and without importance weights: the same bytes as the scalar reference."""
    rng = np.random.default_rng(3)
    for cols in (256, 288, 1536, 4096 + 32 * 5):
        if cols % kernels.block_info(qtype)[1]:
            continue
        x = (rng.standard_normal((7, cols)) * 10.0 ** rng.uniform(-3, 3, (7, 1))).astype(np.float32)
        x[1, : cols // 2] = 0.0
        for rows, weights in ((x, None), (x.astype(np.float16), None), (x, rng.random(cols, dtype=np.float32))):
            with forced_isa("scalar"):
                ref = kernels.quantize(rows, qtype, threads=2, importance=weights)
            with forced_isa(isa):
                np.testing.assert_array_equal(kernels.quantize(rows, qtype, threads=2, importance=weights), ref)

"""The block solve (qconvert/blockq/solve.py) on matrices: with an identity Hessian it is the type's
own quantizer, byte for byte, in every mode; with a real Hessian it lowers the layer's output error
against that quantizer's rounding to nearest on every type; a weight the compensation moved lands
on the nearest level of its block's grid."""

import numpy as np
import pytest
import torch

from qconvert import _native
from qconvert.blockq.solve import BlockGPTQConfig, act_order, asymmetric_shift, hessian_factor, quantize_blocks
from qconvert.ggml_types import GGMLQuantizationType as T
from qconvert.quant import kernels

TYPES = sorted(kernels.BLOCK_TYPES)
N_OUT, N_IN = 48, 768  # three k-quant super-blocks, 24 legacy blocks
MODES = {"refit": BlockGPTQConfig(), "static": BlockGPTQConfig(refit=False), "act-order": BlockGPTQConfig(refit=False, act_order=True)}


@pytest.fixture(scope="module")
def weight() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((N_OUT, N_IN)) * rng.uniform(0.05, 2, (N_OUT, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def hessian() -> torch.Tensor:
    """2·XᵀX/n of correlated inputs with uneven column scales, as a linear's inputs are."""
    rng = np.random.default_rng(1)
    mix = np.eye(N_IN) + 0.3 * rng.standard_normal((N_IN, N_IN)) / np.sqrt(N_IN)
    x = torch.from_numpy((rng.standard_normal((3000, N_IN)) @ mix * rng.uniform(0.2, 3, N_IN)).astype(np.float32))
    return 2 * x.T @ x / x.shape[0]


def solve(weight: np.ndarray, hessian: torch.Tensor, qtype: T, importance, mode: str) -> np.ndarray:
    config = MODES[mode]
    perm = act_order(hessian) if config.act_order else None
    h = hessian if perm is None else hessian[perm][:, perm]
    return quantize_blocks(torch.from_numpy(weight), hessian_factor(h, config.damp_percent, "test"), qtype, importance, config, perm)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("weighted", [False, True], ids=["uniform", "importance"])
@pytest.mark.parametrize("qtype", TYPES, ids=[t.name for t in TYPES])
def test_identity_hessian_gives_the_quantizers_bytes(weight, qtype, weighted, mode):
    importance = np.random.default_rng(2).uniform(0.1, 5, N_IN).astype(np.float32) if weighted else None
    ours = solve(weight, torch.eye(N_IN), qtype, importance, mode)
    assert np.array_equal(ours, kernels.quantize(weight, qtype, importance=importance))


def output_error(blocks: np.ndarray, weight: np.ndarray, hessian: torch.Tensor, qtype: T) -> float:
    """tr(ΔW·H·ΔWᵀ): the layer's squared output error over the calibration inputs, up to a constant."""
    delta = torch.from_numpy(kernels.dequantize(blocks, qtype, N_IN) - weight)
    return float(((delta @ hessian) * delta).sum())


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("qtype", TYPES, ids=[t.name for t in TYPES])
def test_error_compensation_lowers_the_output_error(weight, hessian, qtype, mode):
    importance = (torch.diag(hessian) / 2).numpy()  # the imatrix of these inputs
    rounded = kernels.quantize(weight, qtype, importance=importance)
    ours = solve(weight, hessian, qtype, importance, mode)
    assert ours.shape == rounded.shape
    # measured 0.72-0.90 across types and modes
    assert output_error(ours, weight, hessian, qtype) < 0.93 * output_error(rounded, weight, hessian, qtype)


def test_a_moved_weight_takes_the_nearest_level_of_its_block():
    """One column of two rows on a grid of step 0.5 from −1: the first still equals the weight it
    was fitted on and keeps its (deliberately not nearest) code, the second moved and rounds."""
    w = np.array([[0.3, 0.74]], dtype=np.float32)  # (m, n_out) = one column of two rows
    err = np.empty_like(w)
    s = np.full((1, 2), 0.5, np.float32)
    o = np.full((1, 2), -1.0, np.float32)
    fit_w = np.array([[0.3, 0.2]], dtype=np.float32)  # row 1 moved from 0.2 to 0.74
    codes = np.array([[1, 0]], dtype=np.uint8)  # the fit's codes: 1 (−0.5) for 0.3, 0 for 0.2
    _native.gptq_block_columns(w, err, np.ones((1, 1), np.float32), np.ones(1, np.float32), s, o, fit_w, codes, 1, 2, 0, 7)
    assert codes.tolist() == [[1, 3]]  # 0.74 → level 3 (0.5); 0.3 kept its code
    np.testing.assert_array_equal(w, [[-0.5, 0.5]])
    np.testing.assert_allclose(err, [[0.8, 0.24]], rtol=1e-6)


def test_act_order_needs_fixed_block_parameters(weight):
    with pytest.raises(ValueError, match="refit=False"):
        quantize_blocks(torch.from_numpy(weight), torch.eye(N_IN), T.Q4_0, None, BlockGPTQConfig(), perm=torch.arange(N_IN))


@pytest.mark.parametrize("order", ["columns in order", "act-order"])
def test_the_asymmetric_target_is_the_least_squares_fit_to_the_original_outputs(weight, order):
    """W' = argmin ‖W'X − W·X₀‖ (X: the rounded model's inputs, X₀: the original's), by torch's
    least-squares solver; so ‖QX − W·X₀‖ is smallest where ‖(Q − W')X‖ is, GPTQ's own objective."""
    rng = np.random.default_rng(2)
    x0 = torch.from_numpy(rng.standard_normal((4000, N_IN)).astype(np.float32)) * torch.from_numpy(rng.uniform(0.2, 3, N_IN).astype(np.float32))
    x = x0 + 0.1 * torch.from_numpy(rng.standard_normal((4000, N_IN)).astype(np.float32)) + 0.05 * x0.roll(1, dims=1)
    w, h = torch.from_numpy(weight), 2 * x.T @ x / len(x)
    perm = act_order(h) if order == "act-order" else None
    hinv = hessian_factor(h if perm is None else h[perm][:, perm], 0.0, "test")
    ours = w + w @ asymmetric_shift(2 * (x0 - x).T @ x / len(x), hinv, perm)
    fit = torch.linalg.lstsq(x.double(), (x0 @ w.T).double()).solution.T.float()
    torch.testing.assert_close(ours, fit, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(ours, w, atol=1e-2)
    # with identical inputs there is nothing to compensate
    assert torch.equal(w + w @ asymmetric_shift(torch.zeros(N_IN, N_IN), hinv, perm), w)

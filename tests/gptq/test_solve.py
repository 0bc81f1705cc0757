"""The GPTQ math on tensors: the packed tensors restore exactly the weights the solve produced (read
back by an unpacker written from the format description), the solve agrees with an unblocked
textbook GPTQ, beats round-to-nearest on its own objective, and handles dead inputs and failing
Cholesky factorisations."""

import itertools
import logging

import numpy as np
import pytest
import torch

from qconvert.errors import QConvertError
from qconvert.gptq.config import GPTQConfig
from qconvert.gptq.grid import dequantize, grid_params, quantize_levels
from qconvert.gptq.hessian import Hessian
from qconvert.gptq.packing import dequantize_linear, pack_linear
from qconvert.gptq import solve
from qconvert.gptq.solve import gptq_quantize, inverse_hessian_factor, round_to_nearest
from tests.gptq.unpack_reference import dequantize_reference


def _problem(out_features: int, in_features: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight and the Hessian of correlated, unevenly scaled inputs, as real activations are."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=g) * 0.05
    mix = torch.randn(in_features, in_features, generator=g) / in_features**0.5
    x = torch.randn(2048, in_features, generator=g) @ (torch.eye(in_features) + mix)
    x *= torch.rand(in_features, generator=g) * 3 + 0.1
    h = Hessian(in_features)
    h.add(x)
    return w, h.matrix()


def _objective(w: torch.Tensor, q: torch.Tensor, h: torch.Tensor) -> float:
    d = (w - q).double()
    return float(torch.einsum("oi,ij,oj->", d, h.double(), d))


COMBINATIONS = [
    c
    for c in itertools.product((2, 3, 4, 8), (-1, 32, 64, 128), (False, True), (False, True), (False, True))
    if not (c[4] and c[1] == -1)  # static groups mean nothing per channel
]


@pytest.mark.parametrize("bits, group_size, desc_act, sym, static_groups", COMBINATIONS)
def test_packed_tensors_restore_exactly_the_solved_weights(bits, group_size, desc_act, sym, static_groups):
    # 576 inputs: with group 128 the last group holds 64 columns; 64 outputs: 3-bit qzeros need 32s.
    w, h = _problem(64, 576, seed=bits * 1000 + group_size)
    config = GPTQConfig(bits=bits, group_size=group_size, sym=sym, desc_act=desc_act, static_groups=static_groups)
    result = gptq_quantize(w, h, config)
    packed = {k: v.numpy() for k, v in pack_linear(result, bits).items()}
    n_groups = 1 if group_size == -1 else -(-576 // group_size)
    assert packed["qweight"].shape == (576 * bits // 32, 64) and packed["qweight"].dtype == np.int32
    assert packed["qzeros"].shape == (n_groups, 64 * bits // 32) and packed["scales"].shape == (n_groups, 64)
    assert packed["scales"].dtype == np.float16 and packed["g_idx"].dtype == np.int32
    restored = dequantize_reference(packed["qweight"], packed["qzeros"], packed["scales"], packed["g_idx"], bits)
    assert np.array_equal(restored, result.dequantized().numpy())
    # at most 2^bits levels per row within each group
    g_idx = packed["g_idx"]
    for g in range(n_groups):
        assert len(np.unique(restored[0, g_idx == g])) <= 2**bits
    if not desc_act or static_groups:
        assert np.array_equal(g_idx, np.arange(576) // (576 if group_size == -1 else group_size))
    else:  # act-order: groups of columns in Hessian order, so g_idx is a permutation's groups
        assert sorted(np.bincount(g_idx)) == sorted(np.bincount(np.arange(576) // (576 if group_size == -1 else group_size)))


def _textbook_gptq(w: torch.Tensor, h: torch.Tensor, config: GPTQConfig) -> torch.Tensor:
    """GPTQ without lazy blocks, act-order or static groups: one column at a time, full updates."""
    w = w.double().clone()
    h = h.double().clone()
    h.diagonal().add_(config.damp_percent * torch.diag(h).mean())
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    gs = config.group_width(w.shape[1])
    q = torch.zeros_like(w)
    for i in range(w.shape[1]):
        if i % gs == 0:
            scale, zero = (t.double() for t in grid_params(w[:, i : i + gs].float(), config.bits, config.sym))
        q[:, i] = dequantize(quantize_levels(w[:, i], scale, zero, config.maxq), scale, zero)
        err = (w[:, i] - q[:, i]) / hinv[i, i]
        w[:, i:] -= torch.outer(err, hinv[i, i:])
    return q.float()


@pytest.mark.parametrize("group_size", [-1, 64])
def test_solve_agrees_with_textbook_gptq(group_size):
    w, h = _problem(48, 320, seed=7)
    config = GPTQConfig(bits=4, group_size=group_size)
    ours = gptq_quantize(w, h, config).dequantized()
    reference = _textbook_gptq(w, h, config)
    # float32 vs float64 arithmetic may tip a rare value to the neighbouring level
    assert (ours == reference).float().mean() > 0.995
    assert abs(_objective(w, ours, h) - _objective(w, reference, h)) < 0.02 * _objective(w, reference, h)


@pytest.mark.parametrize("group_size, desc_act, static_groups", [(-1, False, False), (64, False, False), (64, True, False), (128, True, True)])
def test_native_column_loop_matches_the_torch_one(monkeypatch, group_size, desc_act, static_groups):
    """The C kernel (CPU) and the torch loop (other devices) quantize the same columns alike."""
    w, h = _problem(96, 576, seed=11)
    config = GPTQConfig(bits=4, group_size=group_size, desc_act=desc_act, static_groups=static_groups)
    native = gptq_quantize(w, h, config)
    monkeypatch.setattr(solve, "_columns_native", solve._columns_torch)
    torch_loop = gptq_quantize(w, h, config)
    assert torch.equal(native.g_idx, torch_loop.g_idx)
    # the kernels may contract or order float ops differently: a rare value may tip to a neighbour level
    assert (native.levels == torch_loop.levels).float().mean() > 0.998
    assert abs(_objective(w, native.dequantized(), h) - _objective(w, torch_loop.dequantized(), h)) < 1e-3 * _objective(w, torch_loop.dequantized(), h)


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("desc_act", [False, True])
def test_gptq_beats_round_to_nearest_on_its_objective(bits, desc_act):
    w, h = _problem(128, 512, seed=bits)
    config = GPTQConfig(bits=bits, group_size=128, desc_act=desc_act)
    gptq = _objective(w, gptq_quantize(w, h, config).dequantized(), h)
    rtn = _objective(w, round_to_nearest(w, config).dequantized(), h)
    assert gptq < 0.8 * rtn, (gptq, rtn)


def test_dead_inputs_get_zero_weights():
    w, h = _problem(32, 256)
    h[5, :] = 0
    h[:, 5] = 0
    result = gptq_quantize(w, h, GPTQConfig(bits=4, group_size=64))
    assert torch.all(result.dequantized()[:, 5] == 0)


def test_failing_cholesky_retries_with_more_damping(caplog):
    # eigenvalues 2.055 and -0.055: not positive definite until the damping exceeds 5.5% of the diagonal
    h = torch.tensor([[1.0, 1.055], [1.055, 1.0]])
    with caplog.at_level(logging.WARNING):
        _, damp = inverse_hessian_factor(h, 0.01, "layer 0 q_proj")
    assert damp == 0.06
    assert "layer 0 q_proj" in caplog.text and "0.01" in caplog.text


def test_hopeless_hessian_is_a_clear_error():
    h = torch.tensor([[1.0, 3.0], [3.0, 1.0]])  # needs damping of 2x the diagonal
    with pytest.raises(QConvertError, match="not positive definite"):
        inverse_hessian_factor(h, 0.01, "layer 3 down_proj")


def test_asymmetric_grid_keeps_zero_points_storable():
    # rows of non-negative values would want zero point 0, which GPTQ v1 (zero − 1) cannot store
    w = torch.rand(8, 64) + 0.1
    scale, zero = grid_params(w, 4, sym=False)
    assert torch.all(zero >= 1)
    q = dequantize(quantize_levels(w, scale[:, None], zero[:, None], 15), scale[:, None], zero[:, None])
    assert torch.all((q - w).abs() <= scale[:, None] / 2 + 1e-6)  # nothing clipped at the top


@pytest.mark.parametrize("bits, out_features", [(2, 48), (4, 40), (8, 36)])
def test_output_widths_that_fill_whole_words_but_not_runs(bits, out_features):
    # qzeros pack along the output width: 40 outputs are 5 words at 4 bits
    w, h = _problem(out_features, 256, seed=out_features)
    result = gptq_quantize(w, h, GPTQConfig(bits=bits, group_size=64, sym=False))
    packed = {k: v.numpy() for k, v in pack_linear(result, bits).items()}
    assert packed["qzeros"].shape == (4, out_features * bits // 32)
    restored = dequantize_reference(packed["qweight"], packed["qzeros"], packed["scales"], packed["g_idx"], bits)
    assert np.array_equal(restored, result.dequantized().numpy())
    assert np.array_equal(dequantize_linear(*(torch.from_numpy(packed[k]) for k in ("qweight", "qzeros", "scales", "g_idx")), bits).numpy(), restored)

"""AWQ's pure functions against direct computations written out here: the per-group grid (partial
last groups included), the scale candidates and search, the clip search (its Gram-matrix error
against the output error AutoAWQ computes), and the grid a GGUF type implies."""

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T

from qconvert.awq.config import gguf_grid
from qconvert.awq.grid import fake_quantize, quantize
from qconvert.awq.search import apply_clip, candidate_scales, search_clip, search_scales, weight_magnitude
from qconvert.awq.trial import GGUFTrial
from qconvert.errors import QConvertError
from qconvert.quant import kernels
from qconvert.quant.file_types import FileType
from qconvert.quant.tensor_types import ModelShape


def one_group(w: torch.Tensor, bits: int, zero_point: bool) -> torch.Tensor:
    """AutoAWQ's pseudo_quantize_tensor for one group of one row, value by value (fp16 scales)."""
    if zero_point:
        maxq = 2**bits - 1
        scale = float(np.float16(max(float(w.max() - w.min()), 1e-5) / maxq))
        zero = min(max(-round(float(w.min()) / scale), 0), maxq)
        return torch.tensor([(min(max(round(float(v) / scale) + zero, 0), maxq) - zero) * scale for v in w])
    half = 2 ** (bits - 1)
    scale = float(np.float16(max(float(w.abs().max()), 1e-5) / (half - 1)))
    return torch.tensor([min(max(round(float(v) / scale), -half), half - 1) * scale for v in w])


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("zero_point", [True, False])
@pytest.mark.parametrize("in_features, group_size", [(96, 32), (100, 32), (70, -1), (20, 64)])
def test_grid_group_by_group(bits, zero_point, in_features, group_size):
    torch.manual_seed(bits * in_features)
    w = torch.randn(3, in_features, dtype=torch.float64).float() + 0.3
    got = fake_quantize(w, bits, group_size, zero_point)
    width = in_features if group_size == -1 else group_size
    for row in range(3):
        for start in range(0, in_features, width):
            stop = min(start + width, in_features)  # the last group may be partial
            expected = one_group(w[row, start:stop], bits, zero_point)
            assert torch.allclose(got[row, start:stop], expected, rtol=0, atol=1e-6), (row, start)
    q = quantize(w, bits, group_size, zero_point)
    assert q.scales.shape == (3, -(-in_features // width)) and int(q.q.min()) >= 0 and int(q.q.max()) < 2**bits


def test_candidate_scales_are_normalised_and_search_takes_the_least_loss():
    torch.manual_seed(0)
    x_mean, w_mean = torch.rand(64) * 5 + 0.01, torch.rand(64) + 0.1
    for ratio in (0.0, 0.35, 0.95):
        s = candidate_scales(x_mean, w_mean, ratio)
        assert float(s.max() * s.min()) == pytest.approx(1.0, rel=1e-5)
        expected = (x_mean**ratio / (w_mean ** (1 - ratio) + 1e-4)).clamp(min=1e-4)
        assert torch.allclose(s, expected / (expected.max() * expected.min()).sqrt())
    assert torch.allclose(candidate_scales(x_mean, None, 0.5), x_mean.sqrt() / (x_mean.sqrt().max() * x_mean.sqrt().min()).sqrt())
    tried = []

    def loss(s):  # least at the 7th ratio
        tried.append(s)
        return abs(len(tried) - 7)

    best, ratio = search_scales(x_mean, w_mean, loss, 20)
    assert len(tried) == 20 and ratio == pytest.approx(6 / 20) and torch.equal(best, tried[6])
    with pytest.raises(ValueError):
        search_scales(x_mean, w_mean, lambda s: float("nan"), 20)


def test_weight_magnitude_is_relative_to_each_group():
    w = torch.tensor([[1.0, -2.0, 4.0, 4.0, 1.0], [2.0, 2.0, -1.0, 0.5, 0.5]])
    got = weight_magnitude([w[:1], w[1:]], 2)  # groups (0,1) (2,3) and a partial (4,)
    rel = torch.tensor([[0.5, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.5, 1.0]])
    assert torch.allclose(got, rel.mean(0), atol=1e-5)


@pytest.mark.parametrize("zero_point", [True, False])
def test_clip_search_matches_the_output_error_search(zero_point):
    torch.manual_seed(1)
    w = torch.randn(96, 200)
    x = torch.randn(300, 200) * torch.rand(200) * 3
    limits = search_clip(w, x, 4, 64, zero_point, 20, 0.5)
    assert limits.shape == (96, 4)
    for g, start in enumerate(range(0, 200, 64)):  # AutoAWQ's way: the group's partial outputs over the tokens
        wg, xg = w[:, start : start + 64], x[:, start : start + 64]
        reference = xg @ wg.t()
        absmax = wg.abs().amax(1)
        errors = []
        for step in range(10):
            limit = absmax * (1 - step / 20)
            trial = fake_quantize(torch.max(torch.min(wg, limit[:, None]), -limit[:, None]), 4, wg.shape[1], zero_point)
            errors.append(((xg @ trial.t() - reference) ** 2).mean(0))
        best = torch.stack(errors).argmin(0)
        assert torch.allclose(limits[:, g], absmax * (1 - best / 20)), g
    clipped = apply_clip(w, limits, 64)
    assert torch.equal(clipped[:, 192:], w[:, 192:].clamp(-limits[:, 3:4], limits[:, 3:4]))


def test_gguf_grid_follows_the_file_type_and_its_fallbacks():
    assert gguf_grid(FileType.Q4_K_M, [256, 768]) == (4, 32, True)
    assert gguf_grid(FileType.Q4_K_M, [576, 1536]) == (5, 32, False)  # Q4_K falls back to Q5_0 at 576
    assert gguf_grid(FileType.Q3_K_M, [1024]) == (3, 16, False)
    assert gguf_grid(FileType.Q4_0, [576]) == (4, 32, False)
    with pytest.raises(QConvertError, match="not a quantized GGUF type"):
        gguf_grid(FileType.F16, [256])


def test_gguf_trial_is_llama_cpps_round_trip_of_each_tensors_type():
    trial = GGUFTrial(FileType.Q4_K_M, ModelShape("qwen2", n_layer=8, n_head=4, n_head_kv=2, tied_embeddings=False))
    assert trial.qtype(0, "self_attn.v_proj", (128, 256)) == T.Q6_K  # q4_k_m gives some attn_v more bits
    assert trial.qtype(2, "self_attn.v_proj", (128, 256)) == T.Q4_K
    assert trial.qtype(2, "self_attn.q_proj", (256, 576)) == T.Q5_0  # 576 is no whole super-block
    w = torch.randn(16, 512)
    expected = kernels.dequantize(kernels.quantize(w.half().numpy(), T.Q4_K), T.Q4_K, 512)
    assert np.array_equal(trial(2, "mlp.gate_proj", w).numpy(), expected)

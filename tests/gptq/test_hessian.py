"""The Hessian's accumulation: the C kernel for bfloat16 activations (AVX-512 BF16) against XᵀX
in float64 of the same bfloat16 values, and against the float32 path it replaces."""

import numpy as np
import pytest
import torch

from qconvert import _native
from qconvert.gptq.hessian import NATIVE_BF16, Hessian, gram_bf16_upper

pytestmark = pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no AVX-512 BF16: bfloat16 Hessians take the float32 path")


def _activations(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Correlated inputs with unevenly scaled channels and a few outliers, in bfloat16."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) @ (torch.eye(d) + torch.randn(d, d, generator=g) / d**0.5)
    x *= torch.rand(d, generator=g) * 3 + 0.05
    x[:, :: max(1, d // 5)] *= 40
    return x.bfloat16()


def _exact_upper(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return (x.t() @ x).triu()


# widths that are not whole vectors (16 lanes) or tiles (8 rows); odd token counts (a lone last row)
@pytest.mark.parametrize("n, d", [(1, 1), (2, 3), (3, 17), (7, 8), (64, 16), (513, 100), (1000, 576), (257, 1000)])
def test_native_gram_is_the_exact_gram_summed_in_float32(n, d):
    x = _activations(n, d, seed=n + d)
    lower = torch.full((d, d), 7.25).tril(-1)  # a sentinel below the diagonal, zeros on and above it
    h = lower.clone()
    gram_bf16_upper(x, h)
    exact = _exact_upper(x)
    # float32 sums of exact products: relative error a few ulps times the sum's length
    scale = exact.diagonal().sqrt()
    bound = 4e-7 * max(n, 16) ** 0.5 * torch.outer(scale, scale)
    assert (h.double().triu() - exact).abs().le(bound.triu()).all()
    assert torch.equal(h.tril(-1), lower), "the strictly lower triangle was written"


def test_native_gram_accumulates_and_does_not_depend_on_threads():
    x, y = _activations(300, 200, seed=1), _activations(129, 200, seed=2)
    results = []
    for threads in (1, 2, 3, 64):
        h = torch.zeros(200, 200)
        bits = lambda t: t.view(torch.int16).numpy().view(np.uint16)  # noqa: E731
        _native.gram_bf16_upper(bits(x), 300, 200, h.numpy(), threads)
        _native.gram_bf16_upper(bits(y), 129, 200, h.numpy(), threads)
        results.append(h)
    assert all(torch.equal(results[0], r) for r in results[1:])
    both = _exact_upper(torch.cat([x, y]))
    assert torch.allclose(results[0].double().triu(), both, rtol=1e-5, atol=1e-6 * float(both.abs().max()))


def test_bfloat16_hessian_matches_the_float32_path():
    x = _activations(2048, 576, seed=3)
    native, widened = Hessian(576), Hessian(576)
    native.add(x)
    widened.add(x.float())  # the same values through sgemm
    a, b = native.matrix(), widened.matrix()
    assert native.tokens == widened.tokens == 2048
    assert torch.equal(a, a.t())
    assert torch.allclose(a, b, rtol=2e-5, atol=2e-5 * float(b.diagonal().max()))
    # the rounding of float32 sums aside, it is the Hessian of the bfloat16 values: positive definite
    torch.linalg.cholesky(a.double() + 1e-6 * torch.eye(576, dtype=torch.float64) * float(a.diagonal().mean()))


def test_binding_checks_its_buffers():
    x = np.zeros(12, np.uint16)
    h = np.zeros(16, np.float32)
    _native.gram_bf16_upper(x, 3, 4, h, 2)
    with pytest.raises(TypeError, match="x buffer holds items"):
        _native.gram_bf16_upper(np.zeros(12, np.float16), 3, 4, h, 2)
    with pytest.raises(ValueError, match="h buffer has 16"):
        _native.gram_bf16_upper(x, 4, 3, h, 2)
    with pytest.raises(ValueError, match="h buffer is read-only"):
        h.flags.writeable = False
        _native.gram_bf16_upper(x, 3, 4, h, 2)
    with pytest.raises(ValueError, match="bad geometry"):
        _native.gram_bf16_upper(x, -1, 4, np.zeros(16, np.float32), 2)

"""The driver's CPU attention in blocks of queries against torch's scaled_dot_product_attention (in
float64, to its rounding), and whole models with it against the same models with transformers'
sdpa: Llama with GQA, Qwen3 (head_dim apart from hidden, q/k norms), Mistral's sliding window
(which it hands to sdpa), sequences longer than a block and padded ones."""

import types

import pytest
import torch
import transformers
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from qconvert.layerwise.attention import MAX_ROWS, NAME, causal_blocks_attention
from tests.arch_models import ARCH_CONFIGS, COMMON

CAUSAL = types.SimpleNamespace(is_causal=True, num_key_value_groups=3, training=False)


def _qkv(n: int, seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 6, n, 16, generator=g, dtype=dtype) * 2
    k, v = (torch.randn(2, 2, n, 16, generator=g, dtype=dtype) * 2 for _ in range(2))
    return q, k, v


def _reference(q, k, v, mask=None):
    """torch's own attention, (b, n, heads, d) as transformers hands it on."""
    k, v = k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
    return out.transpose(1, 2)


# lengths around a block, and one long enough for smaller blocks (the scores budget)
@pytest.mark.parametrize("n", [1, 5, MAX_ROWS, MAX_ROWS + 1, 3 * MAX_ROWS - 7, 1500])
def test_causal_blocks_equal_torch_attention(n):
    q, k, v = _qkv(n)
    out, weights = causal_blocks_attention(CAUSAL, q, k, v, None)
    assert weights is None and out.shape == (2, n, 6, 16)
    assert torch.allclose(out, _reference(q, k, v), rtol=1e-10, atol=1e-12)


def test_masks_bool_and_additive_and_rows_masked_everywhere():
    n = 200
    q, k, v = _qkv(n, seed=1)
    allowed = torch.ones(n, n, dtype=torch.bool).tril()[None, None].repeat(2, 1, 1, 1)
    allowed[1, :, :, :30] = False  # left padding: keys 0..29 of sequence 1 unseen
    allowed[1, :, :30, :] = False  # and those padding queries see nothing at all
    additive = torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(~allowed, torch.finfo(torch.float64).min)
    for mask in (allowed, additive):
        out, _ = causal_blocks_attention(CAUSAL, q, k, v, mask)
        assert torch.isfinite(out).all()  # a row masked everywhere does not turn into NaN
        want = _reference(q, k, v, allowed.clone().index_fill_(2, torch.arange(30), True) & (torch.arange(n)[:, None] >= torch.arange(n)))
        assert torch.allclose(out[0], want[0], rtol=1e-10, atol=1e-12)
        assert torch.allclose(out[1, 30:], _reference(q, k, v, allowed)[1, 30:], rtol=1e-10, atol=1e-12)


def test_sliding_windows_and_non_causal_modules_go_to_sdpa():
    q, k, v = (t.float() for t in _qkv(64, seed=2))
    bidirectional = types.SimpleNamespace(is_causal=False, num_key_value_groups=3, training=False)
    for module, extra in ((CAUSAL, {"sliding_window": 16}), (bidirectional, {})):
        got, _ = causal_blocks_attention(module, q, k, v, None, **extra)
        want, _ = sdpa_attention_forward(module, q, k, v, None, **extra)
        assert torch.equal(got, want)


def _pair(arch: str, dtype: torch.dtype):
    if arch == "llama":
        config_class, model_class = "LlamaConfig", "LlamaForCausalLM"
        shape = dict(hidden_size=96, intermediate_size=160, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2)
    else:
        config_class, model_class, shape = ARCH_CONFIGS[arch]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(**COMMON, **shape)
    cls = getattr(transformers, model_class)
    plain = cls._from_config(config, attn_implementation="sdpa", dtype=dtype).eval()
    ours = cls._from_config(config, attn_implementation=NAME, dtype=dtype).eval()
    ours.load_state_dict(plain.state_dict())
    return plain, ours


@pytest.mark.parametrize("arch", ["llama", "qwen3", "mistral"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_models_give_sdpa_logits(arch, dtype):
    plain, ours = _pair(arch, dtype)
    ids = torch.randint(0, COMMON["vocab_size"], (3, 300), generator=torch.Generator().manual_seed(3))
    padded = torch.ones(3, 300, dtype=torch.long)
    padded[1, 260:] = 0  # right padding
    padded[2, :50] = 0  # left padding
    for mask in (None, padded):
        with torch.inference_mode():
            want = plain(input_ids=ids, attention_mask=mask).logits.float()
            got = ours(input_ids=ids, attention_mask=mask).logits.float()
        real = torch.ones(3, 300, dtype=torch.bool) if mask is None else mask.bool()
        assert torch.isfinite(got).all()
        # float32: the sums' order; bfloat16: a last-bit difference of an activation, carried on
        tolerance = 1e-5 if dtype == torch.float32 else 0.05
        assert (got - want)[real].abs().max() <= tolerance * want.abs().max()

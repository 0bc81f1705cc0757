"""Llama 3 RoPE factors against transformers' own Llama 3 frequency computation."""

import numpy as np
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from qconvert.convert.rope import llama3_rope_factors
from tests.variants import LLAMA3_ROPE


def test_llama3_factors_divide_the_default_frequencies_into_transformers_ones():
    head_dim, theta = 64, 10000.0
    config = LlamaConfig(hidden_size=256, num_attention_heads=4, rope_parameters=LLAMA3_ROPE)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, torch.device("cpu"))
    default = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ours = llama3_rope_factors(LLAMA3_ROPE, head_dim, theta)
    # llama.cpp uses freq / factor; transformers stores the scaled inv_freq directly.
    np.testing.assert_allclose(default.numpy() / ours, scaled.double().numpy(), rtol=1e-6)
    assert ours.min() == 1.0 and ours.max() == 8.0  # both ends of the blend are exercised

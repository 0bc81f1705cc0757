"""Causal self-attention for the calibration forwards on a CPU, in blocks of queries.

torch's CPU flash-attention kernel computes every query against every key and runs bfloat16 no
faster than float32; the driver's passes spent a quarter of their time in it. Here the queries
are taken a block of rows at a time against the keys up to the block's end (causal: the later
keys are masked anyway), several sequences and all heads per step (each key/value head broadcast
over the query heads that share it, no copies), with matrix products in the layer's precision and
the softmax in float32, as transformers' eager attention computes it. Few, large steps: each torch
op wakes the OpenMP threads, which under OMP_WAIT_POLICY=PASSIVE costs more than a small product.
About 1.3-1.8× the CPU kernel's speed in the driver's passes on SmolLM2's shapes, the outputs
those of sdpa to bfloat16's rounding.

Registered with transformers as an attention implementation (with sdpa's mask making), and used
by the layer-wise driver's model skeleton on CPUs. A call it is not made for (a sliding window,
soft-capping, attention sinks, a non-causal module, queries that are not the keys' positions)
goes to sdpa.
"""

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "qconvert_causal_blocks"
SCORES_BUDGET = 1 << 21  # float32 scores per step: 8 MiB
MAX_ROWS = 128


def causal_blocks_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """query (b, heads, n, d), key and value (b, kv_heads, n, d); attention_mask None (causal) or
    (b, 1, n, n), bool (True: attend) or additive. Returns ((b, n, heads, d), None) as sdpa does."""
    special = kwargs.get("sliding_window") or kwargs.get("softcap") or kwargs.get("s_aux") is not None
    if special or not getattr(module, "is_causal", False) or query.shape[2] != key.shape[2] or query.device.type != "cpu":
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs)
    batch, heads, n, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads  # the query heads that share one key/value head
    scale = scaling if scaling is not None else dim**-0.5
    rows = min(MAX_ROWS, n)
    samples = max(1, min(batch, SCORES_BUDGET // (heads * rows * n)))  # few, large steps: each op wakes the threads
    lowest = torch.finfo(query.dtype).min  # not -inf: a row of padding masked everywhere stays finite
    softmax_dtype = torch.promote_types(query.dtype, torch.float32)
    q5 = query.unflatten(1, (kv_heads, group))  # (b, kv, group, n, d): no copies of k and v
    k5, v5 = key[:, :, None], value[:, :, None]
    out = torch.empty(batch, n, heads, dim, dtype=query.dtype, device=query.device)
    for s in range(0, n, rows):
        e = min(s + rows, n)
        causal = torch.ones(e - s, e, dtype=torch.bool, device=query.device).tril(s) if attention_mask is None else None
        for b0 in range(0, batch, samples):
            b1 = min(b0 + samples, batch)
            scores = torch.matmul(q5[b0:b1, :, :, s:e], k5[b0:b1, :, :, :e].transpose(-1, -2)) * scale  # (S, kv, group, e-s, e)
            if attention_mask is None:
                scores.masked_fill_(~causal, lowest)
            elif attention_mask.dtype == torch.bool:
                scores.masked_fill_(~attention_mask[b0:b1, :, None, s:e, :e], lowest)
            else:
                scores += attention_mask[b0:b1, :, None, s:e, :e]
            probs = torch.softmax(scores, dim=-1, dtype=softmax_dtype).to(query.dtype)
            out[b0:b1, s:e] = torch.matmul(probs, v5[b0:b1, :, :, :e]).flatten(1, 2).transpose(1, 2)
    return out, None


AttentionInterface.register(NAME, causal_blocks_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)

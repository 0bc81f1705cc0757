"""An unpacker for AWQ GEMM checkpoints written from the format description alone (AutoAWQ's
WQLinear_GEMM, ../shared/reference/gptq-awq.md §4), not from qconvert's packer.

qweight (K, N/8) int32 and qzeros (K/gs, N/8) int32 pack along the output dimension: shift each word
by 0, 4, …, 28 to get eight nibbles, then reorder them with [0, 4, 1, 5, 2, 6, 3, 7] to get output
columns 8c … 8c+7. Zeros are raw. scales (K/gs, N) fp16. W[o, i] = (q[i, o] − z[i // gs, o])·s[i // gs, o].
"""

import numpy as np

REORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def unpack_words(words: np.ndarray) -> np.ndarray:
    """(rows, n/8) int32 → (rows, n) int64 values 0..15."""
    u = words.astype(np.int64) & 0xFFFFFFFF
    nibbles = np.stack([(u >> shift) & 0xF for shift in range(0, 32, 4)], axis=-1)  # (rows, n/8, 8)
    return nibbles[:, :, REORDER].reshape(words.shape[0], -1)


def dequantize_reference(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The (out, in) float32 weight."""
    q = unpack_words(qweight)  # (in, out)
    z = unpack_words(qzeros)  # (groups, out)
    group_size = q.shape[0] // scales.shape[0]
    w = np.empty(q.shape, dtype=np.float32)
    for i in range(q.shape[0]):
        g = i // group_size
        w[i] = (q[i] - z[g]).astype(np.float32) * scales[g].astype(np.float32)
    return w.T

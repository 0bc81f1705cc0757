"""An unpacker for GPTQ v1 checkpoints written from the format description alone (AutoGPTQ's
QuantLinear, ../shared/reference/gptq-awq.md §2), not from qconvert's packer: word by word, shift and
mask, with the 3-bit word layout spelled out value by value.

qweight (K·bits/32, N) int32, packed along K; qzeros (G, N·bits/32) int32 holding zero − 1, packed
along N; scales (G, N) fp16; g_idx (K,) int32. W[o, i] = scales[g, o]·(q[i, o] − (z[g, o] + 1)).
"""

import numpy as np


def _three_bit_layout() -> list[list[tuple[int, int, int, int]]]:
    """For each of the 32 values of a 3-word run: (word, shift, value bit offset, n bits) pieces."""
    layout = []
    for j in range(32):
        if j < 10:
            layout.append([(0, 3 * j, 0, 3)])
        elif j == 10:
            layout.append([(0, 30, 0, 2), (1, 0, 2, 1)])
        elif j < 21:
            layout.append([(1, 3 * (j - 11) + 1, 0, 3)])
        elif j == 21:
            layout.append([(1, 31, 0, 1), (2, 0, 1, 2)])
        else:
            layout.append([(2, 3 * (j - 22) + 2, 0, 3)])
    return layout


def unpack_columns(words: np.ndarray, bits: int) -> np.ndarray:
    """Unpack along axis 0: (n_words, M) int32 → (n_words·32/bits, M) int64."""
    u = words.astype(np.int64) & 0xFFFFFFFF
    n_words, m = u.shape
    if bits in (2, 4, 8):
        per_word = 32 // bits
        out = np.zeros((n_words * per_word, m), dtype=np.int64)
        for r in range(n_words):
            for j in range(per_word):
                out[r * per_word + j] = (u[r] >> (bits * j)) & ((1 << bits) - 1)
        return out
    assert bits == 3
    layout = _three_bit_layout()
    out = np.zeros((n_words // 3 * 32, m), dtype=np.int64)
    for run in range(n_words // 3):
        for j, pieces in enumerate(layout):
            value = np.zeros(m, dtype=np.int64)
            for word, shift, value_bit, n in pieces:
                value |= ((u[3 * run + word] >> shift) & ((1 << n) - 1)) << value_bit
            out[run * 32 + j] = value
    return out


def dequantize_reference(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, g_idx: np.ndarray, bits: int) -> np.ndarray:
    """The dense (N, K) float32 weight."""
    q = unpack_columns(qweight, bits)  # (K, N)
    z = unpack_columns(qzeros.T, bits).T + 1  # (G, N)
    k, n = q.shape
    w = np.zeros((n, k), dtype=np.float32)
    for i in range(k):
        g = int(g_idx[i])
        w[:, i] = scales[g].astype(np.float32) * (q[i] - z[g]).astype(np.float32)
    return w

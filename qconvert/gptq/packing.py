"""The GPTQ v1 checkpoint tensors of one linear (AutoGPTQ's QuantLinear layout), packed and unpacked.

Every bit width packs the same way: 32 consecutive values along the packing axis form one
little-endian bit stream of 32·bits bits, stored as `bits` int32 words (value j at stream bit
bits·j). For 4 bits that is 8 values a word, lowest first; for 3 bits, 32 values in 3 words with
values 10 and 21 straddling words, as AutoGPTQ packs them.

  qweight (in·bits/32, out) int32 — levels, packed along the input axis
  qzeros  (n_groups, out·bits/32) int32 — zero points minus one (the v1 convention), packed along out
  scales  (n_groups, out) fp16
  g_idx   (in,) int32
"""

import numpy as np
import torch

from qconvert.gptq.solve import GPTQResult

PACK = 32  # values per packed run


def pack_rows(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack (n, m) unsigned values < 2^bits along axis 1 → (n, m·bits/32) int32.

    m must fill whole words: a multiple of 32/bits at 2, 4 and 8 bits, of 32 at 3 bits."""
    n, m = values.shape
    if PACK % bits == 0:  # whole values per word: shift and add (the same bits as the stream)
        per_word = PACK // bits
        v = values.astype(np.uint32).reshape(n, m // per_word, per_word) << (bits * np.arange(per_word, dtype=np.uint32))
        return v.sum(axis=-1, dtype=np.uint32).view(np.int32)
    assert m % PACK == 0, "callers check the widths"
    v = values.astype(np.uint8).reshape(n, m // PACK, PACK, 1)
    stream = (v >> np.arange(bits, dtype=np.uint8)) & 1  # (n, runs, 32, bits): bit t of value j at stream bit bits·j + t
    packed = np.packbits(stream.reshape(n, m // PACK, PACK * bits), axis=-1, bitorder="little")
    return packed.view("<i4").reshape(n, m * bits // PACK)


def unpack_rows(words: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of pack_rows: (n, w) int32 → (n, w·32/bits) int32 values."""
    n, w = words.shape
    if PACK % bits == 0:
        per_word = PACK // bits
        u = np.ascontiguousarray(words, dtype="<i4").view(np.uint32)[..., None] >> (bits * np.arange(per_word, dtype=np.uint32))
        return (u & ((1 << bits) - 1)).astype(np.int32).reshape(n, w * per_word)
    stream = np.unpackbits(np.ascontiguousarray(words, dtype="<i4").view(np.uint8).reshape(n, w // bits, 4 * bits), axis=-1, bitorder="little")
    values = stream.reshape(n, w // bits, PACK, bits).astype(np.int32) << np.arange(bits, dtype=np.int32)
    return values.sum(axis=-1, dtype=np.int32).reshape(n, w * PACK // bits)


def pack_linear(result: GPTQResult, bits: int) -> dict[str, torch.Tensor]:
    """The checkpoint tensors of one quantized linear (bias excluded)."""
    levels = result.levels.cpu().numpy()  # (out, in)
    qweight = pack_rows(levels, bits).T  # (in·bits/32, out)
    qzeros = pack_rows(result.zeros.cpu().numpy().T - 1, bits)  # (n_groups, out·bits/32)
    return {
        "qweight": torch.from_numpy(np.ascontiguousarray(qweight)),
        "qzeros": torch.from_numpy(qzeros),
        "scales": result.scales.t().contiguous().half().cpu(),
        "g_idx": result.g_idx.cpu().clone(),  # linears solved together share it: one copy each
    }


def dequantize_linear(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor, bits: int, zero_offset: int = 1) -> torch.Tensor:
    """The dense (out, in) float32 weight of a GPTQ linear: scales[g]·(q − z[g]), g = g_idx[i].

    zero_offset 1 is the v1 format, which stores zero − 1; 0 is GPTQModel's gptq_v2 (raw zeros).
    At 2, 4 and 8 bits the one is added back word by word, with carries, as GPTQModel converts v1
    to v2: that undoes GPTQModel's word-wise subtraction exactly, even where a zero point of 0
    borrowed from its neighbour, and equals adding 1 per value everywhere else. 3-bit values
    straddle words, so there it is added per value."""
    levels = unpack_rows(qweight.numpy().T, bits)  # (out, in)
    words = qzeros.numpy().view(np.uint32)
    if zero_offset and bits != 3:
        ones = pack_rows(np.full((1, PACK), zero_offset), bits).view(np.uint32)[0, 0]  # 0x11111111 at 4 bits
        words = words + ones  # wraps modulo 2^32
    zeros = unpack_rows(words.view(np.int32), bits) + (zero_offset if bits == 3 else 0)  # (n_groups, out)
    g = g_idx.long().numpy()
    s = scales.float().numpy()  # (n_groups, out)
    return torch.from_numpy(s[g].T * (levels - zeros[g].T).astype(np.float32))

/* The legacy GGUF block quantizers: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
 *
 * Contract (see quants.h): a row of n floats, n a multiple of 32, becomes n/32 blocks laid out
 * as ggml's block_q4_0 ... block_q8_0 (ggml-common.h). Without importance weights the output is
 * byte-identical to llama.cpp's reference quantizers (quantize_row_q4_0_ref ... q8_0_ref in
 * ggml-quants.c), which is what llama-quantize runs when it has no imatrix. With importance
 * weights it is byte-identical to what llama-quantize --imatrix runs (quantize_row_q4_0_impl ...
 * q5_1_impl): per block a least-squares fit under the weights qw·sqrt(sigma2 + x²), sigma2 the
 * mean square of the whole row (make_qx_quants for Q4_0/Q5_0, make_qkx3_quants for Q4_1/Q5_1;
 * see fits.h). Q8_0 has no weighted variant in llama.cpp and ignores the weights.
 * Dequantizers mirror dequantize_row_q4_0 ... q8_0 and give the same floats.
 *
 * Float semantics matter for byte-identity: every expression below is evaluated in float, in the
 * order llama.cpp writes it, with no fused multiply-add (the build uses -ffp-contract=off, the
 * reference is built for the baseline x86-64 ISA, which has no FMA). Codes come from
 * id = 1/d with the fp32 d, not from the fp16-rounded d that the block stores.
 *
 * Inputs are finite (the Python bindings reject NaN and Inf before calling in).
 *
 * This is the scalar path (isa.h). quants_avx2.c and quants_avx512.c compile this file again for
 * their ISA, the public names suffixed (QC_ISA_FN), for the weighted kernels; the reference ones
 * they replace with hand-written vector code (legacy_simd.h). The dequantizers are built once.
 */
#include <math.h>
#include <string.h>

#include "blocks.h"
#include "fits.h"
#include "fp16.h"
#include "quants.h"

/* ---- shared helpers --------------------------------------------------------------------- */

/* Put before the fixed-length per-block loops. Inside the loop over a row's blocks, GCC at -O3
 * would unroll them completely before its loop vectorizer runs, and the straight-line code it
 * leaves is mostly scalar; kept as loops they become packed SSE2 instructions (about 1.5x
 * faster overall). It changes how the same float operations are scheduled, never their results
 * (each element still gets the same correctly rounded operations). */
#if defined(__GNUC__)
#define VECTOR_LOOP _Pragma("GCC unroll 1")
#else
#define VECTOR_LOOP
#endif

/* The input x86's cvttss2si/cvttps2dq effectively convert. C leaves out-of-range float → int
 * conversion undefined; those instructions, which llama.cpp's reference build executes for its
 * (int8_t), (uint8_t) and roundf-to-int8 casts, return INT32_MIN ("integer indefinite") for NaN
 * and for values outside the int32 range. Degenerate blocks reach that case (a block of
 * subnormals can get d > 0 with id = 1/d = inf, so x*id is ±inf, or NaN for x = 0), and it
 * decides their bytes; so map such inputs to -2^31, which converts to INT32_MIN in defined C.
 * The comparisons are false for NaN. The choice is made with masks on the bit pattern rather
 * than with ?: because GCC splits a ?: with a constant arm into branches, and a loop with
 * branches around its conversions does not vectorize. */
static inline float to_int32_range(float v) {
    const uint32_t ok = (uint32_t)((v >= -2147483648.0f) & (v < 2147483648.0f));
    const uint32_t minus_2_31 = 0xcf000000u; /* -2^31 as a float's bits */
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    bits = (bits & (0u - ok)) | (minus_2_31 & (ok - 1u));
    float w;
    memcpy(&w, &bits, sizeof w);
    return w;
}

/* Truncation toward zero, as the reference's float → integer casts on x86. */
static inline int32_t trunc_i32(float v) {
    return (int32_t)to_int32_range(v);
}

/* roundf (halves away from zero) and then the conversion above, as quantize_row_q8_0_ref's
 * `qs[j] = roundf(x0)`. Computed from the truncation: for |w| < 2^31 the fraction w - trunc(w)
 * is exact in float (from 2^23 up, w is already an integer and the fraction is 0), so comparing
 * it with ±0.5 decides the rounding exactly. */
static inline int32_t round_away_i32(float v) {
    const float w = to_int32_range(v);
    const int32_t i = (int32_t)w;
    const float frac = w - (float)i;
    return i + (frac >= 0.5f) - (frac <= -0.5f);
}

/* The low byte of an int32 read as a signed char: what the reference's (int8_t) cast of a
 * float keeps after the conversion above. Spelled out to avoid implementation-defined casts. */
static inline int low_byte_signed(int32_t i) {
    const int b = (int)((uint32_t)i & 0xffu);
    return b < 128 ? b : b - 256;
}

/* Largest and smallest of 32 floats by halving: the compiler turns each step into packed
 * max/min instructions, where a sequential scan is a chain of 32 dependent scalar ones. The
 * value is the same in any order; among equal values (which differ at most in the sign of zero)
 * which one comes back is unspecified — callers that care fix the sign up. */
static inline float max_of_32(const float *v) {
    float t[QC_QK / 2];
    VECTOR_LOOP
    for (int k = 0; k < 16; k++) t[k] = v[k] > v[k + 16] ? v[k] : v[k + 16];
    VECTOR_LOOP
    for (int k = 0; k < 8; k++) t[k] = t[k] > t[k + 8] ? t[k] : t[k + 8];
    VECTOR_LOOP
    for (int k = 0; k < 4; k++) t[k] = t[k] > t[k + 4] ? t[k] : t[k + 4];
    for (int k = 0; k < 2; k++) t[k] = t[k] > t[k + 2] ? t[k] : t[k + 2];
    return t[0] > t[1] ? t[0] : t[1];
}

static inline float min_of_32(const float *v) {
    float t[QC_QK / 2];
    VECTOR_LOOP
    for (int k = 0; k < 16; k++) t[k] = v[k] < v[k + 16] ? v[k] : v[k + 16];
    VECTOR_LOOP
    for (int k = 0; k < 8; k++) t[k] = t[k] < t[k + 8] ? t[k] : t[k + 8];
    VECTOR_LOOP
    for (int k = 0; k < 4; k++) t[k] = t[k] < t[k + 4] ? t[k] : t[k + 4];
    for (int k = 0; k < 2; k++) t[k] = t[k] < t[k + 2] ? t[k] : t[k + 2];
    return t[0] < t[1] ? t[0] : t[1];
}

/* The largest |x| of the block, as quantize_row_q8_0_ref's MAX(amax, fabsf(v)) scan from
 * amax = 0 (inputs are finite, so the result is the same). */
static inline float absmax(const float *x) {
    float a[QC_QK];
    VECTOR_LOOP
    for (int j = 0; j < QC_QK; j++) a[j] = fabsf(x[j]);
    return max_of_32(a);
}

/* The element of the block with the largest |x|, keeping the first one on ties (so a block
 * whose max equals -min takes the sign of whichever comes first), and +0 for an all-zero block:
 * the scan `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }` from amax = max = 0 in
 * quantize_row_q4_0_ref and quantize_row_q5_0_ref. Done in two passes that vectorize, without
 * branches: the largest |x|, then the first element that reaches it. */
static inline float signed_absmax(const float *x) {
    const float amax = absmax(x);
    if (amax == 0.0f) return 0.0f; /* the scan never updates max: +0, even for a block of -0 */
    float max = amax;
    VECTOR_LOOP
    for (int j = QC_QK - 1; j >= 0; j--) max = fabsf(x[j]) == amax ? x[j] : max; /* backwards: the first match wins */
    return max;
}

/* Minimum and maximum of the block, as the `if (v < min) min = v; if (v > max) max = v;` scan
 * from FLT_MAX / -FLT_MAX in quantize_row_q4_1_ref and quantize_row_q5_1_ref. That scan keeps
 * the first of equal values, and equal floats differ only in the sign of zero; so take the
 * values in any order, then, if an extreme is zero, give it the sign of the block's first zero
 * (the stored m = fp16(min) shows it). */
static inline void block_min_max(const float *x, float *min_out, float *max_out) {
    float min = min_of_32(x), max = max_of_32(x);
    if (min == 0.0f || max == 0.0f) {
        int j = 0;
        while (x[j] != 0.0f) j++; /* one exists: an extreme is zero */
        if (min == 0.0f) min = x[j];
        if (max == 0.0f) max = x[j];
    }
    *min_out = min;
    *max_out = max;
}

/* 1/d, or 0 when d is 0: the reference's `id = d ? 1.0f/d : 0.0f`. */
static inline float inverse_or_zero(float d) {
    return d != 0.0f ? 1.0f / d : 0.0f;
}

/* Pack 32 codes two per byte: byte j holds code j in its low nibble and code j+16 in its high
 * nibble, as block_q4_0.qs and friends. Codes above 15 keep only their low 4 bits: the Q5 types
 * store the fifth bit separately, and the Q4 codes are always 0..15 (see the two block
 * quantizers below), so the mask changes nothing where the Q4 references OR them in unmasked. */
static inline void pack_nibbles(const uint8_t *q, uint8_t *qs) {
    VECTOR_LOOP
    for (int j = 0; j < QC_QK / 2; j++) {
        qs[j] = (uint8_t)((q[j] & 0x0fu) | ((q[j + QC_QK / 2] & 0x0fu) << 4));
    }
}

/* The fifth bit of each of the 32 codes: bit j of a little-endian uint32 for code j, as
 * quantize_row_q5_0_ref's qh. */
static inline void pack_fifth_bits(const uint8_t *q, uint8_t *qh) {
    uint32_t bits = 0;
    for (int j = 0; j < QC_QK; j++) bits |= (uint32_t)((q[j] >> 4) & 1u) << j;
    for (int k = 0; k < 4; k++) qh[k] = (uint8_t)(bits >> (8 * k));
}

#ifndef QC_ISA_SUFFIX /* the dequantizers are built once, in the scalar build */
/* Read the 32 codes back from nibbles plus (optionally) the fifth bits. */
static inline void unpack_codes(const uint8_t *qs, const uint8_t *qh, int *q) {
    uint32_t bits = 0;
    if (qh) bits = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
    for (int j = 0; j < QC_QK / 2; j++) {
        q[j] = (int)(qs[j] & 0x0fu) | (int)(((bits >> j) & 1u) << 4);
        q[j + QC_QK / 2] = (int)(qs[j] >> 4) | (int)(((bits >> (j + QC_QK / 2)) & 1u) << 4);
    }
}
#endif

/* ---- the reference quantizers: two families ---------------------------------------------- */

/* Symmetric 4/5-bit block (Q4_0 with nmax = 8, Q5_0 with nmax = 16): d = max / -nmax for the
 * signed max-abs element, codes MIN(2·nmax-1, (int8_t)(x*id + nmax + 0.5)) — truncation of a
 * value offset by one half, not a rounding, as quantize_row_q4_0_ref / q5_0_ref. Writes the
 * fp16 d and the 32 codes. With a finite id every x*id lies within [-nmax, nmax] up to rounding,
 * so the codes are 0..2·nmax-1; with id = inf the conversion gives 0. */
static inline void quantize_sym_block(const float *x, int nmax, qc_half *d_out, uint8_t *q) {
    const float max = signed_absmax(x);
    const float d = max / (float)-nmax;
    const float id = inverse_or_zero(d);
    const float offset = (float)nmax + 0.5f;
    const int top = 2 * nmax - 1;
    *d_out = qc_fp32_to_fp16(d);
    VECTOR_LOOP
    for (int j = 0; j < QC_QK; j++) {
        const int c = low_byte_signed(trunc_i32(x[j] * id + offset));
        q[j] = (uint8_t)(c < top ? c : top);
    }
}

/* Asymmetric 4/5-bit block (Q4_1 with levels = 15, Q5_1 with levels = 31): d = (max-min)/levels,
 * m = min, codes (x-min)*id + 0.5 truncated, as quantize_row_q4_1_ref / q5_1_ref. Q4_1 clamps
 * with MIN(15, (int8_t)...), Q5_1 takes (uint8_t)... unclamped; `clamp` picks which. Writes the
 * fp16 d and m and the 32 codes. Rounding is monotonic, so 0 <= x-min <= max-min in float and,
 * with a finite id, the codes are 0..levels; with id = inf the conversion gives 0. */
static inline void quantize_asym_block(const float *x, int levels, int clamp, qc_half *d_out, qc_half *m_out, uint8_t *q) {
    float min, max;
    block_min_max(x, &min, &max);
    const float d = (max - min) / (float)levels;
    const float id = inverse_or_zero(d);
    *d_out = qc_fp32_to_fp16(d);
    *m_out = qc_fp32_to_fp16(min);
    VECTOR_LOOP
    for (int j = 0; j < QC_QK; j++) {
        const int32_t i = trunc_i32((x[j] - min) * id + 0.5f);
        if (clamp) {
            const int c = low_byte_signed(i);
            q[j] = (uint8_t)(c < levels ? c : levels);
        } else {
            q[j] = (uint8_t)((uint32_t)i & 0xffu);
        }
    }
}

/* ---- the weighted quantizers (imatrix): the same two families ------------------------------ */

/* The sigma2 of quantize_row_q4_0_impl ... q5_1_impl: the mean square of the whole row. */
static inline float row_sigma2(const float *x, int64_t n) {
    return sum_squares(n, x) / (float)n;
}

/* One block of quantize_row_q4_0_impl (nmax = 8) / q5_0_impl (nmax = 16): make_qx_quants under
 * the importance weights. Writes the fp16 scale and the codes 0..2·nmax-1 (an all-zero block
 * gets codes 0, not nmax, unlike the reference quantizer). */
static inline void quantize_sym_block_weighted(const float *x, const float *qw, float sigma2, int nmax, qc_half *d_out,
                                               uint8_t *q) {
    float w[QC_QK];
    int8_t L[QC_QK];
    importance_weights(QC_QK, x, qw, sigma2, w);
    *d_out = qc_fp32_to_fp16(fit_symmetric(QC_QK, nmax, x, w, L));
    for (int j = 0; j < QC_QK; j++) q[j] = (uint8_t)L[j];
}

/* A Q4_1 or Q5_1 block before packing: fp16 d and m, and the 32 codes. */
typedef struct {
    qc_half d, m;
    uint8_t q[QC_QK];
} asym_block;

enum { ASYM_LANES = 8 }; /* blocks fitted together in the weighted Q4_1/Q5_1 */

/* quantize_row_q4_1_impl (levels = 15) / q5_1_impl (levels = 31) for the next blocks of a row:
 * make_qkx3_quants under the importance weights, for ASYM_LANES blocks at once as lockstep lanes
 * when that many are left, else for one. Returns how many blocks it wrote to out. */
static inline int quantize_asym_blocks_weighted(int64_t blocks_left, const float *x, const float *qw, float sigma2,
                                                int levels, asym_block *out) {
    float w[ASYM_LANES * QC_QK], d[ASYM_LANES], neg_min[ASYM_LANES];
    uint8_t q[ASYM_LANES * QC_QK];
    const int lanes = blocks_left >= ASYM_LANES ? ASYM_LANES : 1;
    importance_weights(lanes * QC_QK, x, qw, sigma2, w);
    if (lanes == ASYM_LANES) fit_scale_min_groups(ASYM_LANES, QC_QK, levels, x, w, q, d, neg_min, -0.9f, 0.05f, 36, 0);
    else fit_scale_min_groups(1, QC_QK, levels, x, w, q, d, neg_min, -0.9f, 0.05f, 36, 0);
    for (int k = 0; k < lanes; k++) {
        out[k].d = qc_fp32_to_fp16(d[k]);
        out[k].m = qc_fp32_to_fp16(-neg_min[k]);
        memcpy(out[k].q, q + QC_QK * k, QC_QK);
    }
    return lanes;
}

/* The next blocks of a Q4_1 or Q5_1 row (row x, block b of nb): one by the reference algorithm,
 * or, given importance weights (and the row's sigma2), as many as the weighted fit takes at once.
 * Returns how many it wrote to out. */
static inline int quantize_asym_blocks(const float *x, int64_t b, int64_t nb, const float *importance, float sigma2,
                                       int levels, asym_block *out) {
    if (importance) return quantize_asym_blocks_weighted(nb - b, x + b * QC_QK, importance + b * QC_QK, sigma2, levels, out);
    quantize_asym_block(x + b * QC_QK, levels, levels == 15, &out->d, &out->m, out->q);
    return 1;
}

/* ---- the five types --------------------------------------------------------------------- */

void QC_ISA_FN(qc_quantize_row_q4_0)(const float *src, void *dst, int64_t n, const float *importance) {
    qc_block_q4_0 *y = (qc_block_q4_0 *)dst;
    const float sigma2 = importance ? row_sigma2(src, n) : 0.0f;
    uint8_t q[QC_QK];
    for (int64_t b = 0; b < n / QC_QK; b++) {
        if (importance) quantize_sym_block_weighted(src + b * QC_QK, importance + b * QC_QK, sigma2, 8, &y[b].d, q);
        else quantize_sym_block(src + b * QC_QK, 8, &y[b].d, q);
        pack_nibbles(q, y[b].qs);
    }
}

void QC_ISA_FN(qc_quantize_row_q5_0)(const float *src, void *dst, int64_t n, const float *importance) {
    qc_block_q5_0 *y = (qc_block_q5_0 *)dst;
    const float sigma2 = importance ? row_sigma2(src, n) : 0.0f;
    uint8_t q[QC_QK];
    for (int64_t b = 0; b < n / QC_QK; b++) {
        if (importance) quantize_sym_block_weighted(src + b * QC_QK, importance + b * QC_QK, sigma2, 16, &y[b].d, q);
        else quantize_sym_block(src + b * QC_QK, 16, &y[b].d, q);
        pack_fifth_bits(q, y[b].qh);
        pack_nibbles(q, y[b].qs);
    }
}

void QC_ISA_FN(qc_quantize_row_q4_1)(const float *src, void *dst, int64_t n, const float *importance) {
    qc_block_q4_1 *y = (qc_block_q4_1 *)dst;
    const int64_t nb = n / QC_QK;
    const float sigma2 = importance ? row_sigma2(src, n) : 0.0f;
    asym_block blk[ASYM_LANES];
    for (int64_t b = 0; b < nb;) {
        const int done = quantize_asym_blocks(src, b, nb, importance, sigma2, 15, blk);
        for (int k = 0; k < done; k++, b++) {
            y[b].d = blk[k].d;
            y[b].m = blk[k].m;
            pack_nibbles(blk[k].q, y[b].qs);
        }
    }
}

void QC_ISA_FN(qc_quantize_row_q5_1)(const float *src, void *dst, int64_t n, const float *importance) {
    qc_block_q5_1 *y = (qc_block_q5_1 *)dst;
    const int64_t nb = n / QC_QK;
    const float sigma2 = importance ? row_sigma2(src, n) : 0.0f;
    asym_block blk[ASYM_LANES];
    for (int64_t b = 0; b < nb;) {
        const int done = quantize_asym_blocks(src, b, nb, importance, sigma2, 31, blk);
        for (int k = 0; k < done; k++, b++) {
            y[b].d = blk[k].d;
            y[b].m = blk[k].m;
            pack_fifth_bits(blk[k].q, y[b].qh);
            pack_nibbles(blk[k].q, y[b].qs);
        }
    }
}

/* block_q8_0: d = amax/127, codes roundf(x*id), as quantize_row_q8_0_ref (which, unlike the
 * 4/5-bit types, rounds halves away from zero). llama.cpp's quantize_q8_0 ignores importance
 * weights, and so does this. */
void QC_ISA_FN(qc_quantize_row_q8_0)(const float *src, void *dst, int64_t n, const float *importance) {
    (void)importance;
    qc_block_q8_0 *y = (qc_block_q8_0 *)dst;
    for (int64_t b = 0; b < n / QC_QK; b++, src += QC_QK) {
        const float d = absmax(src) / 127.0f;
        const float id = inverse_or_zero(d);
        y[b].d = qc_fp32_to_fp16(d);
        VECTOR_LOOP
        for (int j = 0; j < QC_QK; j++) y[b].qs[j] = (int8_t)low_byte_signed(round_away_i32(src[j] * id));
    }
}

#ifndef QC_ISA_SUFFIX /* scalar build only: the same bytes as every path */
/* The weighted quantizer of Q4_0, Q5_0, Q4_1 or Q5_1 on n values (whole blocks) that are a part of
 * a longer row, with that row's sigma2 given: the blocks the row's quantizer would write for them,
 * for a caller that fits a row a few blocks at a time (qconvert/blockq). Returns 0, or -1 for
 * another type. */
int qc_quantize_part_weighted(int type, const float *src, void *dst, int64_t n, const float *importance, float sigma2) {
    const int64_t nb = n / QC_QK;
    uint8_t q[QC_QK];
    asym_block blk[ASYM_LANES];
    for (int64_t b = 0; b < nb;) {
        const float *x = src + b * QC_QK, *qw = importance + b * QC_QK;
        switch (type) {
        case QC_Q4_0: case QC_Q5_0: {
            const int nmax = type == QC_Q4_0 ? 8 : 16;
            qc_half d;
            quantize_sym_block_weighted(x, qw, sigma2, nmax, &d, q);
            if (type == QC_Q4_0) {
                qc_block_q4_0 *y = (qc_block_q4_0 *)dst + b;
                y->d = d;
                pack_nibbles(q, y->qs);
            } else {
                qc_block_q5_0 *y = (qc_block_q5_0 *)dst + b;
                y->d = d;
                pack_fifth_bits(q, y->qh);
                pack_nibbles(q, y->qs);
            }
            b++;
            break;
        }
        case QC_Q4_1: case QC_Q5_1: {
            const int done = quantize_asym_blocks_weighted(nb - b, x, qw, sigma2, type == QC_Q4_1 ? 15 : 31, blk);
            for (int k = 0; k < done; k++, b++) {
                if (type == QC_Q4_1) {
                    qc_block_q4_1 *y = (qc_block_q4_1 *)dst + b;
                    y->d = blk[k].d;
                    y->m = blk[k].m;
                    pack_nibbles(blk[k].q, y->qs);
                } else {
                    qc_block_q5_1 *y = (qc_block_q5_1 *)dst + b;
                    y->d = blk[k].d;
                    y->m = blk[k].m;
                    pack_fifth_bits(blk[k].q, y->qh);
                    pack_nibbles(blk[k].q, y->qs);
                }
            }
            break;
        }
        default:
            return -1;
        }
    }
    return 0;
}

/* The sigma2 that type's weighted quantizer takes from a whole row. */
float qc_row_sigma2(const float *x, int64_t n) { return row_sigma2(x, n); }
#endif

#ifndef QC_ISA_SUFFIX /* the dequantizers are built once, in the scalar build */
/* ---- dequantizers ----------------------------------------------------------------------- */

/* y = (q - offset)·d, or q·d + m when has_min: as dequantize_row_q4_0 ... q5_1, where the
 * product and the sum round separately (no FMA). */
static inline void dequantize_codes(const int *q, int offset, float d, int has_min, float m, float *y) {
    for (int j = 0; j < QC_QK; j++) {
        const float v = (float)(q[j] - offset) * d;
        y[j] = has_min ? v + m : v;
    }
}

void qc_dequantize_row_q4_0(const void *src, float *dst, int64_t n) {
    const qc_block_q4_0 *x = (const qc_block_q4_0 *)src;
    int q[QC_QK];
    for (int64_t b = 0; b < n / QC_QK; b++, dst += QC_QK) {
        unpack_codes(x[b].qs, NULL, q);
        dequantize_codes(q, 8, qc_fp16_to_fp32(x[b].d), 0, 0.0f, dst);
    }
}

void qc_dequantize_row_q4_1(const void *src, float *dst, int64_t n) {
    const qc_block_q4_1 *x = (const qc_block_q4_1 *)src;
    int q[QC_QK];
    for (int64_t b = 0; b < n / QC_QK; b++, dst += QC_QK) {
        unpack_codes(x[b].qs, NULL, q);
        dequantize_codes(q, 0, qc_fp16_to_fp32(x[b].d), 1, qc_fp16_to_fp32(x[b].m), dst);
    }
}

void qc_dequantize_row_q5_0(const void *src, float *dst, int64_t n) {
    const qc_block_q5_0 *x = (const qc_block_q5_0 *)src;
    int q[QC_QK];
    for (int64_t b = 0; b < n / QC_QK; b++, dst += QC_QK) {
        unpack_codes(x[b].qs, x[b].qh, q);
        dequantize_codes(q, 16, qc_fp16_to_fp32(x[b].d), 0, 0.0f, dst);
    }
}

void qc_dequantize_row_q5_1(const void *src, float *dst, int64_t n) {
    const qc_block_q5_1 *x = (const qc_block_q5_1 *)src;
    int q[QC_QK];
    for (int64_t b = 0; b < n / QC_QK; b++, dst += QC_QK) {
        unpack_codes(x[b].qs, x[b].qh, q);
        dequantize_codes(q, 0, qc_fp16_to_fp32(x[b].d), 1, qc_fp16_to_fp32(x[b].m), dst);
    }
}

void qc_dequantize_row_q8_0(const void *src, float *dst, int64_t n) {
    const qc_block_q8_0 *x = (const qc_block_q8_0 *)src;
    for (int64_t b = 0; b < n / QC_QK; b++, dst += QC_QK) {
        const float d = qc_fp16_to_fp32(x[b].d);
        for (int j = 0; j < QC_QK; j++) dst[j] = (float)x[b].qs[j] * d;
    }
}
#endif

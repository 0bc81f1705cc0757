/* The row loops of the AVX2 and AVX-512 reference kernels of the legacy types (Q4_0, Q4_1, Q5_0,
 * Q5_1, Q8_0), written once around a few per-ISA primitives; included by quants_avx2.c and
 * quants_avx512.c after they define those, and QC_ISA_SUFFIX (the public names' suffix).
 *
 * Each block is still quantized by exactly the reference's float operations (quantize_row_q4_0_ref
 * ... q8_0_ref; see quants_legacy.c for their semantics): the 32 values of a block sit in the lanes
 * of 32/W vectors, where only exact operations (abs, min, max, compares) reduce across lanes, and
 * every per-element expression is one vector instruction per scalar one, multiply and add apart.
 * The per-block scalars (d = max/-8, id = 1/d, their fp16) are computed for QC_SIMD_G blocks at a
 * time in the lanes of one vector: across blocks, so the divisions pipeline.
 *
 * The primitives:
 *   QC_SIMD_G                          blocks per group (the float vector width)
 *   block_extremes(x, &amax, &first, &min, &max): the block's largest |x| and the first element
 *                                      reaching it, its min and its max (either zero may come back
 *                                      for a zero extreme)
 *   group_scales(a, b, divisor, id, d_half, m_half): per lane, d = a/divisor (or (b - a)/divisor
 *                                      given b), id = d ? 1/d : 0, and the fp16 bits of d (and of
 *                                      a, the min, given b)
 *   block_codes_sym(x, id, offset, top, qs, qh), block_codes_asym(x, min, id, clamp, qs, qh),
 *   block_codes_q8(x, id, qs):         one block's codes, packed as the block stores them
 *                                      (qh NULL: no fifth bits)
 * The weighted (imatrix) kernels are the generic C ones, compiled for the same ISA under the
 * suffix QC_ISA_SUFFIX_generic.
 */
#include <string.h>

#include "blocks.h"
#include "quants.h"

#define QC_SIMD_INLINE static inline __attribute__((always_inline))

/* The first zero of a block whose min or max is zero: the reference's sequential scan keeps the
 * first of equal values, and equal floats differ only in the sign of zero. */
static inline float first_zero(const float *x) {
    int j = 0;
    while (x[j] != 0.0f) j++;
    return x[j];
}

/* Q4_0 (nmax 8) and Q5_0 (nmax 16, fifth bits in qh): d = max/-nmax for the signed max-abs element. */
QC_SIMD_INLINE void rows_sym(const float *x, uint8_t *y, int64_t nb, int nmax, size_t block_bytes, int has_qh) {
    for (int64_t b0 = 0; b0 < nb; b0 += QC_SIMD_G) {
        const int g = nb - b0 < QC_SIMD_G ? (int)(nb - b0) : QC_SIMD_G;
        float a[QC_SIMD_G] = {0}, id[QC_SIMD_G];
        uint16_t dh[QC_SIMD_G];
        for (int k = 0; k < g; k++) {
            float amax, first, mn, mx;
            block_extremes(x + QC_QK * (b0 + k), &amax, &first, &mn, &mx);
            a[k] = amax == 0.0f ? 0.0f : first; /* the scan never updates max: +0, even for a block of -0 */
        }
        group_scales(a, NULL, (float)-nmax, id, dh, NULL);
        for (int k = 0; k < g; k++) {
            uint8_t *blk = y + block_bytes * (size_t)(b0 + k);
            memcpy(blk, &dh[k], 2);
            block_codes_sym(x + QC_QK * (b0 + k), id[k], (float)nmax + 0.5f, 2 * nmax - 1, blk + (has_qh ? 6 : 2), has_qh ? blk + 2 : NULL);
        }
    }
}

/* Q4_1 (levels 15, codes clamped) and Q5_1 (levels 31, unclamped, fifth bits in qh). */
QC_SIMD_INLINE void rows_asym(const float *x, uint8_t *y, int64_t nb, int levels, size_t block_bytes, int has_qh) {
    for (int64_t b0 = 0; b0 < nb; b0 += QC_SIMD_G) {
        const int g = nb - b0 < QC_SIMD_G ? (int)(nb - b0) : QC_SIMD_G;
        float mins[QC_SIMD_G] = {0}, maxs[QC_SIMD_G] = {0}, id[QC_SIMD_G];
        uint16_t dh[QC_SIMD_G], mh[QC_SIMD_G];
        for (int k = 0; k < g; k++) {
            const float *xb = x + QC_QK * (b0 + k);
            float amax, first;
            block_extremes(xb, &amax, &first, &mins[k], &maxs[k]);
            if (mins[k] == 0.0f) mins[k] = first_zero(xb);
            if (maxs[k] == 0.0f) maxs[k] = first_zero(xb);
        }
        group_scales(mins, maxs, (float)levels, id, dh, mh);
        for (int k = 0; k < g; k++) {
            uint8_t *blk = y + block_bytes * (size_t)(b0 + k);
            memcpy(blk, &dh[k], 2);
            memcpy(blk + 2, &mh[k], 2);
            block_codes_asym(x + QC_QK * (b0 + k), mins[k], id[k], !has_qh, blk + (has_qh ? 8 : 4), has_qh ? blk + 4 : NULL);
        }
    }
}

/* Q8_0: d = amax/127, codes roundf(x·id). */
static void rows_q8(const float *x, qc_block_q8_0 *y, int64_t nb) {
    for (int64_t b0 = 0; b0 < nb; b0 += QC_SIMD_G) {
        const int g = nb - b0 < QC_SIMD_G ? (int)(nb - b0) : QC_SIMD_G;
        float a[QC_SIMD_G] = {0}, id[QC_SIMD_G];
        uint16_t dh[QC_SIMD_G];
        for (int k = 0; k < g; k++) {
            float first, mn, mx;
            block_extremes(x + QC_QK * (b0 + k), &a[k], &first, &mn, &mx);
        }
        group_scales(a, NULL, 127.0f, id, dh, NULL);
        for (int k = 0; k < g; k++) {
            y[b0 + k].d = dh[k];
            block_codes_q8(x + QC_QK * (b0 + k), id[k], (uint8_t *)y[b0 + k].qs);
        }
    }
}

#define QC_GENERIC_FN(name) QC_ISA_CAT(QC_ISA_FN(name), generic)

void QC_ISA_FN(qc_quantize_row_q4_0)(const float *src, void *dst, int64_t n, const float *importance) {
    if (importance) QC_GENERIC_FN(qc_quantize_row_q4_0)(src, dst, n, importance);
    else rows_sym(src, (uint8_t *)dst, n / QC_QK, 8, sizeof(qc_block_q4_0), 0);
}

void QC_ISA_FN(qc_quantize_row_q5_0)(const float *src, void *dst, int64_t n, const float *importance) {
    if (importance) QC_GENERIC_FN(qc_quantize_row_q5_0)(src, dst, n, importance);
    else rows_sym(src, (uint8_t *)dst, n / QC_QK, 16, sizeof(qc_block_q5_0), 1);
}

void QC_ISA_FN(qc_quantize_row_q4_1)(const float *src, void *dst, int64_t n, const float *importance) {
    if (importance) QC_GENERIC_FN(qc_quantize_row_q4_1)(src, dst, n, importance);
    else rows_asym(src, (uint8_t *)dst, n / QC_QK, 15, sizeof(qc_block_q4_1), 0);
}

void QC_ISA_FN(qc_quantize_row_q5_1)(const float *src, void *dst, int64_t n, const float *importance) {
    if (importance) QC_GENERIC_FN(qc_quantize_row_q5_1)(src, dst, n, importance);
    else rows_asym(src, (uint8_t *)dst, n / QC_QK, 31, sizeof(qc_block_q5_1), 1);
}

void QC_ISA_FN(qc_quantize_row_q8_0)(const float *src, void *dst, int64_t n, const float *importance) {
    (void)importance; /* as llama.cpp's quantize_q8_0 */
    rows_q8(src, (qc_block_q8_0 *)dst, n / QC_QK);
}

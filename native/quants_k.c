/* The k-quant block types Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (super-blocks of 256 values).
 *
 * Contract: qc_quantize_row_qN_k turns n floats (n a multiple of 256) into n/256 super-blocks laid
 * out exactly as ggml's block_qN_K (ggml-common.h), and must be byte-identical to llama.cpp's
 * reference quantizers (quantize_row_qN_K_ref in ggml-quants.c), which llama-quantize runs when no
 * imatrix is given. Every float expression below therefore keeps the reference's operation order
 * (sequential accumulation, same operand order, division where it divides) and relies on the build
 * not contracting a*b+c into FMAs. With importance weights the quantizers are instead those that
 * llama-quantize --imatrix runs (quantize_row_qN_K_impl): the weights w = qw·sqrt(sigma2 + x²)
 * (raw qw for Q6_K) replace the fixed ones of the group fits, and the sub-block scales and mins
 * are themselves fitted, weighted by each sub-block's total weight, instead of being scaled to
 * the super-block maximum. qc_dequantize_row_qN_k mirrors ggml's dequantize_row_qN_K, float
 * order included.
 *
 * Speed comes from reordering independent work, never from reassociating floats: the per-group
 * fits of a super-block run as lockstep lanes (group g in lane g), so that each lane's arithmetic is
 * the reference's, and the compiler gets independent chains to vectorize.
 */
#include <math.h>
#include <string.h>

#include "blocks.h"
#include "fits.h"
#include "fp16.h"
#include "quants.h"

/* ---- per-group fits (the shared ones are in fits.h) ---- */

/* One coordinate-descent step of make_q3_quants on one value x (weight w = x², wx = w·x) whose
 * code is *l (-4..3), in a group with sums *sumlx, *suml2: move the code to the one that the
 * least-squares scale of the other values suggests, if that raises sumlx²/suml2. Returns 1 if the
 * code moved. Written branch-free (everything computed, the verdict selects) so that the lockstep
 * loop below vectorizes; the floats are the reference's. */
static inline int q3_descent_step(float x, float w, float wx, float *l, float *sumlx, float *suml2) {
    enum { NMAX = 4 };
    const float old = *l;
    float slx = *sumlx - wx * old;
    float sl2 = *suml2 - w * old * old;
    const float nl = (float)clamp_int(qc_nearest_int(x * sl2 / slx), -NMAX, NMAX - 1);
    const int eligible = (slx > 0) & (nl != old); /* where the reference goes on */
    slx += wx * nl;
    sl2 += w * nl * nl;
    const int take = eligible & (sl2 > 0) & (slx * slx * *suml2 > *sumlx * *sumlx * sl2);
    *l = take ? nl : old;
    *sumlx = take ? slx : *sumlx;
    *suml2 = take ? sl2 : *suml2;
    return take;
}

/* Counterpart of make_q3_quants(16, 4, x, L, do_rmse=true), for the 16 groups of 16 values of a
 * super-block (lane g is group g, x + 16·g): symmetric codes -4..3 (stored +4) from
 * iscale = -4/max, refined by up to 5 coordinate-descent passes on the x²-weighted least-squares
 * scale, a group stopping after a pass that changed nothing. Writes the codes to L and the scales
 * (sumlx/suml2) to scale[g]; a group whose largest |x| is below GROUP_MAX_EPS gets codes 0 (not 4)
 * and scale 0, as in the reference.
 *
 * The setup and the first pass run all groups in lockstep (each lane doing the reference's float
 * operations in its order); most groups stop there, and the few that changed something go on one
 * by one. */
static void fit_q3_groups(const float *x, int8_t *L, float *scale) {
    enum { G = 16, N = 16, NMAX = 4 };
    float xt[N][G], w[N][G], wx[N][G], lt[N][G];
    float max[G], amax[G], sumlx[G], suml2[G], iscale[G];
    int moved[G];
    for (int g = 0; g < G; g++) {
        max[g] = amax[g] = sumlx[g] = suml2[g] = 0;
        moved[g] = 0;
        for (int i = 0; i < N; i++) xt[i][g] = x[N * g + i];
    }
    for (int i = 0; i < N; i++) {
        for (int g = 0; g < G; g++) {
            const float ax = fabsf(xt[i][g]);
            const int larger = ax > amax[g];
            max[g] = larger ? xt[i][g] : max[g];
            amax[g] = larger ? ax : amax[g];
        }
    }
    for (int g = 0; g < G; g++) iscale[g] = (float)-NMAX / max[g];
    for (int i = 0; i < N; i++) {
        for (int g = 0; g < G; g++) {
            const float l = (float)clamp_int(qc_nearest_int(iscale[g] * xt[i][g]), -NMAX, NMAX - 1);
            lt[i][g] = l;
            w[i][g] = xt[i][g] * xt[i][g];
            wx[i][g] = w[i][g] * xt[i][g];
            sumlx[g] += wx[i][g] * l;
            suml2[g] += w[i][g] * l * l;
        }
    }
    for (int i = 0; i < N; i++)
        for (int g = 0; g < G; g++) moved[g] |= q3_descent_step(xt[i][g], w[i][g], wx[i][g], &lt[i][g], &sumlx[g], &suml2[g]);
    for (int g = 0; g < G; g++) {
        for (int pass = 1; pass < 5 && moved[g]; pass++) {
            moved[g] = 0;
            for (int i = 0; i < N; i++) moved[g] |= q3_descent_step(xt[i][g], w[i][g], wx[i][g], &lt[i][g], &sumlx[g], &suml2[g]);
        }
    }
    for (int g = 0; g < G; g++) {
        const int zero = amax[g] < QC_GROUP_EPS;
        for (int i = 0; i < N; i++) L[N * g + i] = zero ? 0 : (int8_t)(lt[i][g] + NMAX);
        scale[g] = zero ? 0.f : (suml2[g] > 0.0f ? sumlx[g] / suml2[g] : 0.0f);
    }
}

/* Counterpart of make_qp_quants(n, nmax, x, L, w): codes 0..nmax for the n sub-block scales (or
 * mins) x of a super-block, as q·scale with one scale, weighted by each sub-block's total weight.
 * The best of 9 grids nmax/max, (nmax + 0.1·is)/max (is = ±1..±4) by weighted squared error, then
 * up to 5 coordinate-descent passes on the weighted least-squares scale. Returns the scale; codes
 * 0 and scale 0 when max < GROUP_MAX_EPS.
 *
 * The codes live in uint8_t as in the reference, and a negative x (which makes a negative code)
 * wraps there; the wrapped value is what the error and descent sums then read, so keep it. */
static float fit_positive(const int n, const int nmax, const float *x, const float *w, uint8_t *L) {
    float max = 0;
    for (int i = 0; i < n; i++) max = max > x[i] ? max : x[i]; /* MAX(max, x[i]) */
    if (max < QC_GROUP_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)nmax / max;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)qc_nearest_int(iscale * x[i]);
    const float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; i++) {
        const float diff = x[i] - scale * (float)L[i];
        best_mse += w[i] * diff * diff;
    }
    for (int is = -4; is <= 4; is++) {
        if (is == 0) continue;
        const float iscale_is = (0.1f * (float)is + (float)nmax) / max;
        const float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; i++) {
            const int l = qc_nearest_int(iscale_is * x[i]);
            const float diff = x[i] - scale_is * (float)(l < nmax ? l : nmax);
            mse += w[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = qc_nearest_int(iscale * x[i]);
        l = l < nmax ? l : nmax;
        L[i] = (uint8_t)l;
        sumlx += w[i] * x[i] * (float)l; /* the unwrapped l, as the reference's int */
        suml2 += w[i] * (float)l * (float)l;
    }
    for (int pass = 0; pass < 5; pass++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            const int old = L[i];
            float slx = sumlx - w[i] * x[i] * (float)old;
            float sl2 = suml2 - w[i] * (float)old * (float)old;
            if (!(slx > 0 && sl2 > 0)) continue;
            int nl = qc_nearest_int(x[i] * sl2 / slx);
            nl = nl < nmax ? nl : nmax;
            if (nl == old) continue;
            slx += w[i] * x[i] * (float)nl;
            sl2 += w[i] * (float)nl * (float)nl;
            if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (uint8_t)nl;
                sumlx = slx;
                suml2 = sl2;
                changed = 1;
            }
        }
        if (!changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* ---- packing helpers ---- */

/* 2-bit codes of 128 values into 32 bytes: byte l holds codes l, l+32, l+64, l+96 at bits 0, 2, 4,
 * 6 (the qs layout of both block_q2_K and block_q3_K). */
static inline void pack_2bit_128(const uint8_t *L, uint8_t *qs) {
    for (int l = 0; l < 32; l++) qs[l] = (uint8_t)(L[l] | (L[l + 32] << 2) | (L[l + 64] << 4) | (L[l + 96] << 6));
}

/* The 12-byte scale block of Q4_K/Q5_K: 8 6-bit scales ls and 8 6-bit mins lm. Bytes 0-3 hold
 * ls[0..3], bytes 4-7 lm[0..3]; for j ≥ 4 byte j+4 holds the low nibbles of ls[j] and lm[j], and
 * their top two bits sit in bits 6-7 of bytes j-4 and j. */
static inline void pack_scales_k4(const uint8_t *ls, const uint8_t *lm, uint8_t *q) {
    for (int j = 0; j < 4; j++) {
        q[j] = (uint8_t)(ls[j] | ((ls[j + 4] >> 4) << 6));
        q[j + 4] = (uint8_t)(lm[j] | ((lm[j + 4] >> 4) << 6));
        q[j + 8] = (uint8_t)((ls[j + 4] & 0xF) | ((lm[j + 4] & 0xF) << 4));
    }
}

/* Inverse of pack_scales_k4 for sub-block j: get_scale_min_k4 in ggml-quants.c. */
static inline void unpack_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q3_K's 16 6-bit scales (values 0..63, i.e. scale+32) in 12 bytes: low nibbles in bytes 0-7 (j<8
 * low half, j≥8 high half of byte j-8); top two bits in byte 8 + j%4 at bit 2·(j/4). */
static inline void pack_scales_q3(const uint8_t *s, uint8_t *q) {
    memset(q, 0, 12);
    for (int j = 0; j < 16; j++) {
        if (j < 8) q[j] = s[j] & 0xF;
        else q[j - 8] |= (uint8_t)((s[j] & 0xF) << 4);
        q[8 + j % 4] |= (uint8_t)((s[j] >> 4) << (2 * (j / 4)));
    }
}

#ifndef QC_ISA_SUFFIX /* the dequantizers are built once, in the scalar build */
static inline void unpack_scales_q3(const uint8_t *q, int8_t *s) {
    for (int j = 0; j < 16; j++) {
        const int lo = j < 8 ? (q[j] & 0xF) : (q[j - 8] >> 4);
        const int hi = (q[8 + j % 4] >> (2 * (j / 4))) & 3;
        s[j] = (int8_t)((lo | (hi << 4)) - 32);
    }
}
#endif

/* ---- Q2_K: 16 groups of 16, x ≈ d·sc·q - dmin·m with 4-bit sc, m and 2-bit q ---- */

/* The second pass of both Q2_K quantizers: the codes again from the stored (rounded) scales; a
 * group whose scale rounds to 0 keeps its first codes. Then the packing. */
static void finish_block_q2_k(const float *x, uint8_t *L, qc_block_q2_k *y) {
    const float d_all = qc_fp16_to_fp32(y->d), dmin_all = qc_fp16_to_fp32(y->dmin);
    for (int j = 0; j < 16; j++) {
        const float d = d_all * (float)(y->scales[j] & 0xF);
        if (!d) continue;
        const float dm = dmin_all * (float)(y->scales[j] >> 4);
        for (int i = 0; i < 16; i++) L[16 * j + i] = (uint8_t)clamp_int(qc_nearest_int((x[16 * j + i] + dm) / d), 0, 3);
    }
    pack_2bit_128(L, y->qs);
    pack_2bit_128(L + 128, y->qs + 32);
}

/* quantize_row_q2_K_ref: group fits weighted by |x| on the mean absolute error, scales and mins
 * scaled to the super-block maxima. */
static void quantize_block_q2_k(const float *x, qc_block_q2_k *y) {
    uint8_t L[QC_QK_K];
    float scales[16], mins[16], w[QC_QK_K];
    float max_scale = 0, max_min = 0; /* scales are ≥ 0 since the min is taken off */
    for (int i = 0; i < QC_QK_K; i++) w[i] = fabsf(x[i]);
    fit_scale_min_groups(16, 16, 3, x, w, L, scales, mins, -0.5f, 0.1f, 15, 1);
    for (int j = 0; j < 16; j++) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
        const float iscale = 15.f / max_scale;
        for (int j = 0; j < 16; j++) y->scales[j] = (uint8_t)qc_nearest_int(iscale * scales[j]);
        y->d = qc_fp32_to_fp16(max_scale / 15.f);
    } else {
        memset(y->scales, 0, sizeof y->scales);
        y->d = qc_fp32_to_fp16(0.f);
    }
    if (max_min > 0) {
        const float iscale = 15.f / max_min;
        for (int j = 0; j < 16; j++) y->scales[j] |= (uint8_t)((unsigned)qc_nearest_int(iscale * mins[j]) << 4);
        y->dmin = qc_fp32_to_fp16(max_min / 15.f);
    } else {
        y->dmin = qc_fp32_to_fp16(0.f);
    }
    finish_block_q2_k(x, L, y);
}

/* quantize_row_q2_K_impl: group fits under the importance weights (sigma2 the super-block's mean
 * square) on the squared error, with a wider search than the reference's (make_qkx3_quants'
 * -0.9 + 0.05·is, 37 grids); then scales and mins each fitted by make_qp_quants. */
static void quantize_block_q2_k_weighted(const float *x, const float *qw, qc_block_q2_k *y) {
    uint8_t L[QC_QK_K], ls[16], lm[16];
    float w[QC_QK_K], sw[16], scales[16], mins[16];
    importance_weights(QC_QK_K, x, qw, sum_squares(QC_QK_K, x) / QC_QK_K, w);
    group_sums(16, 16, w, sw);
    fit_scale_min_groups(16, 16, 3, x, w, L, scales, mins, -0.9f, 0.05f, 36, 0);
    y->d = qc_fp32_to_fp16(fit_positive(16, 15, scales, sw, ls));
    y->dmin = qc_fp32_to_fp16(fit_positive(16, 15, mins, sw, lm));
    for (int j = 0; j < 16; j++) y->scales[j] = (uint8_t)(ls[j] | (lm[j] << 4));
    finish_block_q2_k(x, L, y);
}

void QC_ISA_FN(qc_quantize_row_q2_k)(const float *src, void *dst, int64_t n, const float *importance) {
    qc_block_q2_k *y = (qc_block_q2_k *)dst;
    for (int64_t b = 0; b < n / QC_QK_K; b++) {
        if (importance) quantize_block_q2_k_weighted(src + b * QC_QK_K, importance + b * QC_QK_K, y + b);
        else quantize_block_q2_k(src + b * QC_QK_K, y + b);
    }
}

#ifndef QC_ISA_SUFFIX /* the dequantizers are built once, in the scalar build */
/* dequantize_row_q2_K: value = (d·sc)·q - (dmin·m). */
void qc_dequantize_row_q2_k(const void *src, float *dst, int64_t n) {
    const qc_block_q2_k *x = (const qc_block_q2_k *)src;
    for (int64_t b = 0; b < n / QC_QK_K; b++, dst += QC_QK_K) {
        const float d = qc_fp16_to_fp32(x[b].d), dmin = qc_fp16_to_fp32(x[b].dmin);
        for (int j = 0; j < 16; j++) {
            const float dl = d * (float)(x[b].scales[j] & 0xF), ml = dmin * (float)(x[b].scales[j] >> 4);
            /* group j: 16 values from bytes (j/8)·32 + (j%2)·16 .., at bits 2·((j/2)%4) */
            const uint8_t *q = x[b].qs + (j / 8) * 32 + (j % 2) * 16;
            const int shift = 2 * ((j / 2) % 4);
            for (int l = 0; l < 16; l++) dst[16 * j + l] = dl * (float)((q[l] >> shift) & 3) - ml;
        }
    }
}
#endif

/* ---- Q3_K: 16 groups of 16, x ≈ d·(sc-32)·(q-4) with 6-bit sc and 3-bit q ---- */

/* The second pass of both Q3_K quantizers: the codes again from the stored scales (packed[] is
 * what the 12 scale bytes read back to, scale + 32); a group whose scale rounds to 0 keeps its first
 * codes. Then the packing: the third bit of code j goes to bit j/32 of hmask[j%32], the low two
 * bits are packed like Q2_K's. */
static void finish_block_q3_k(const float *x, const uint8_t *packed, int8_t *L, qc_block_q3_k *y) {
    const float d_all = qc_fp16_to_fp32(y->d);
    for (int j = 0; j < 16; j++) {
        const float d = d_all * (float)(packed[j] - 32);
        if (!d) continue;
        for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(clamp_int(qc_nearest_int(x[16 * j + i] / d), -4, 3) + 4);
    }
    uint8_t low[QC_QK_K];
    memset(y->hmask, 0, sizeof y->hmask);
    for (int b = 0; b < 8; b++) {
        for (int m = 0; m < 32; m++) {
            const int l = L[32 * b + m]; /* 0..7 */
            y->hmask[m] |= (uint8_t)((l >> 2) << b);
            low[32 * b + m] = (uint8_t)(l & 3);
        }
    }
    pack_2bit_128(low, y->qs);
    pack_2bit_128(low + 128, y->qs + 32);
}

/* quantize_row_q3_K_ref: make_q3_quants group fits, scales scaled to the largest |scale|. */
static void quantize_block_q3_k(const float *x, qc_block_q3_k *y) {
    int8_t L[QC_QK_K];
    float scales[16];
    float max_scale = 0, amax = 0;
    fit_q3_groups(x, L, scales);
    for (int j = 0; j < 16; j++) {
        const float a = fabsf(scales[j]);
        if (a > amax) {
            amax = a;
            max_scale = scales[j];
        }
    }
    uint8_t packed[16] = {0}; /* all 0 when max_scale is 0 */
    if (max_scale != 0) {
        const float iscale = -32.f / max_scale;
        for (int j = 0; j < 16; j++) {
            const int8_t l = (int8_t)qc_nearest_int(iscale * scales[j]);
            packed[j] = (uint8_t)(clamp_int(l, -32, 31) + 32);
        }
        pack_scales_q3(packed, y->scales);
        y->d = qc_fp32_to_fp16(1 / iscale);
    } else {
        memset(y->scales, 0, sizeof y->scales);
        y->d = qc_fp32_to_fp16(0.f);
    }
    finish_block_q3_k(x, packed, L, y);
}

/* quantize_row_q3_K_impl: make_qx_quants group fits (codes -4..3) under the importance weights
 * (sigma2 twice the super-block's mean square), then the 16 scales themselves fitted by
 * make_qx_quants (codes -32..31) weighted by each group's total weight. */
static void quantize_block_q3_k_weighted(const float *x, const float *qw, qc_block_q3_k *y) {
    int8_t L[QC_QK_K], ls[16];
    float w[QC_QK_K], sw[16], scales[16];
    importance_weights(QC_QK_K, x, qw, 2 * sum_squares(QC_QK_K, x) / QC_QK_K, w);
    group_sums(16, 16, w, sw);
    for (int j = 0; j < 16; j++) scales[j] = fit_symmetric(16, 4, x + 16 * j, w + 16 * j, L + 16 * j);
    const float d = fit_symmetric(16, 32, scales, sw, ls);
    uint8_t packed[16];
    for (int j = 0; j < 16; j++) packed[j] = (uint8_t)ls[j]; /* 0..63 */
    pack_scales_q3(packed, y->scales);
    y->d = qc_fp32_to_fp16(d);
    finish_block_q3_k(x, packed, L, y);
}

void QC_ISA_FN(qc_quantize_row_q3_k)(const float *src, void *dst, int64_t n, const float *importance) {
    qc_block_q3_k *y = (qc_block_q3_k *)dst;
    for (int64_t b = 0; b < n / QC_QK_K; b++) {
        if (importance) quantize_block_q3_k_weighted(src + b * QC_QK_K, importance + b * QC_QK_K, y + b);
        else quantize_block_q3_k(src + b * QC_QK_K, y + b);
    }
}

#ifndef QC_ISA_SUFFIX /* the dequantizers are built once, in the scalar build */
/* dequantize_row_q3_K: value = (d·(sc-32))·(q - (hbit ? 0 : 4)). */
void qc_dequantize_row_q3_k(const void *src, float *dst, int64_t n) {
    const qc_block_q3_k *x = (const qc_block_q3_k *)src;
    for (int64_t b = 0; b < n / QC_QK_K; b++, dst += QC_QK_K) {
        const float d_all = qc_fp16_to_fp32(x[b].d);
        int8_t sc[16];
        unpack_scales_q3(x[b].scales, sc);
        for (int j = 0; j < 16; j++) {
            const float dl = d_all * (float)sc[j];
            const uint8_t *q = x[b].qs + (j / 8) * 32 + (j % 2) * 16;
            const uint8_t *hm = x[b].hmask + (j % 2) * 16;
            const int shift = 2 * ((j / 2) % 4);
            const uint8_t hbit = (uint8_t)(1u << (j / 2));
            for (int l = 0; l < 16; l++) dst[16 * j + l] = dl * (float)(((q[l] >> shift) & 3) - ((hm[l] & hbit) ? 0 : 4));
        }
    }
}
#endif

/* ---- Q4_K and Q5_K: 8 groups of 32, x ≈ d·sc·q - dmin·m with 6-bit sc, m ---- */

/* The d, dmin and 12 scale bytes that open both block_q4_K and block_q5_K. */
typedef struct {
    qc_half d, dmin;
    uint8_t scales[12];
} k4_head;

/* The second pass of the Q4_K and Q5_K quantizers: the codes (0..nmax) again from the scales and
 * mins as the 12 bytes store them; a group whose scale is 0 keeps its first codes. */
static inline void requantize_k4(const float *x, int nmax, const k4_head *head, uint8_t *L) {
    const float d_all = qc_fp16_to_fp32(head->d), dmin_all = qc_fp16_to_fp32(head->dmin);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        unpack_scale_min_k4(j, head->scales, &sc, &m);
        const float d = d_all * (float)sc;
        if (!d) continue;
        const float dm = dmin_all * (float)m;
        for (int i = 0; i < 32; i++) L[32 * j + i] = (uint8_t)clamp_int(qc_nearest_int((x[32 * j + i] + dm) / d), 0, nmax);
    }
}

/* Second half of quantize_row_q4_K_ref / quantize_row_q5_K_ref for one super-block, given its 8
 * group fits: 6-bit scales and mins against the super-block maxima, then the codes recomputed. */
QC_SPECIALIZE void finish_superblock_k4(const float *x, int nmax, const float *scales, const float *mins, uint8_t *L,
                                        k4_head *head) {
    float max_scale = 0, max_min = 0; /* scales are ≥ 0 since the min is taken off */
    for (int j = 0; j < 8; j++) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        /* the reference stores into uint8_t before the MIN, so keep that wrap-around */
        const uint8_t s = (uint8_t)qc_nearest_int(inv_scale * scales[j]);
        const uint8_t m = (uint8_t)qc_nearest_int(inv_min * mins[j]);
        ls[j] = s < 63 ? s : 63;
        lm[j] = m < 63 ? m : 63;
    }
    pack_scales_k4(ls, lm, head->scales);
    head->d = qc_fp32_to_fp16(max_scale / 63.f);
    head->dmin = qc_fp32_to_fp16(max_min / 63.f);
    requantize_k4(x, nmax, head, L);
}

/* quantize_row_q4_K_ref / quantize_row_q5_K_ref up to the code packing, for nsb (1 or 2)
 * consecutive super-blocks: the group fits (weights av_x + |x|, av_x the group's RMS) of both run
 * as 16 lockstep lanes, which the compiler vectorizes better than 8. Codes go to L[256·s ..]. */
QC_SPECIALIZE void quantize_superblocks_k4(const float *x, int nsb, int nmax, float rmin, int nstep, uint8_t *L,
                                           k4_head *head) {
    float scales[16], mins[16], w[2 * QC_QK_K];
    for (int j = 0; j < 8 * nsb; j++) {
        const float *xg = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += xg[l] * xg[l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) w[32 * j + l] = av_x + fabsf(xg[l]);
    }
    if (nsb == 2) fit_scale_min_groups(16, 32, nmax, x, w, L, scales, mins, rmin, 0.1f, nstep, 0);
    else fit_scale_min_groups(8, 32, nmax, x, w, L, scales, mins, rmin, 0.1f, nstep, 0);
    for (int s = 0; s < nsb; s++) finish_superblock_k4(x + QC_QK_K * s, nmax, scales + 8 * s, mins + 8 * s, L + QC_QK_K * s, head + s);
}

/* quantize_row_q4_K_impl / quantize_row_q5_K_impl up to the code packing, for one super-block:
 * group fits under the importance weights (sigma2 twice the super-block's mean square) with
 * make_qkx3_quants' search, then the scales and the mins each fitted by make_qp_quants weighted by
 * each group's total weight. Q5_K clamps the codes of the scales to 63 (clamp_63); Q4_K stores
 * them as they come, which only differs for a negative scale, whose code wraps. */
QC_SPECIALIZE void quantize_superblock_k4_weighted(const float *x, const float *qw, int nmax, int clamp_63, uint8_t *L,
                                                   k4_head *head) {
    float w[QC_QK_K], sw[8], scales[8], mins[8];
    uint8_t ls[8], lm[8];
    importance_weights(QC_QK_K, x, qw, 2 * sum_squares(QC_QK_K, x) / QC_QK_K, w);
    group_sums(8, 32, w, sw);
    fit_scale_min_groups(8, 32, nmax, x, w, L, scales, mins, -0.9f, 0.05f, 36, 0);
    const float d = fit_positive(8, 63, scales, sw, ls);
    const float dmin = fit_positive(8, 63, mins, sw, lm);
    for (int j = 0; clamp_63 && j < 8; j++) {
        ls[j] = ls[j] < 63 ? ls[j] : 63;
        lm[j] = lm[j] < 63 ? lm[j] : 63;
    }
    pack_scales_k4(ls, lm, head->scales);
    head->d = qc_fp32_to_fp16(d);
    head->dmin = qc_fp32_to_fp16(dmin);
    requantize_k4(x, nmax, head, L);
}

/* block_q4_K from a head and 256 codes 0..15: in each 64 values, byte l holds code l (low
 * nibble) and code l+32 (high nibble). */
static inline void store_q4_k(const k4_head *head, const uint8_t *L, qc_block_q4_k *y) {
    y->d = head->d;
    y->dmin = head->dmin;
    memcpy(y->scales, head->scales, sizeof y->scales);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) y->qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + l + 32] << 4));
}

/* block_q5_K from a head and 256 codes 0..31: low nibbles as Q4_K; the fifth bit of chunk c's
 * code l goes to qh[l] bit 2c, of code l+32 to bit 2c+1. */
static inline void store_q5_k(const k4_head *head, const uint8_t *L, qc_block_q5_k *y) {
    y->d = head->d;
    y->dmin = head->dmin;
    memcpy(y->scales, head->scales, sizeof y->scales);
    memset(y->qh, 0, sizeof y->qh);
    for (int c = 0; c < 4; c++) {
        for (int l = 0; l < 32; l++) {
            const int lo = L[64 * c + l], hi = L[64 * c + l + 32];
            y->qh[l] |= (uint8_t)(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
            y->qs[32 * c + l] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
        }
    }
}

/* The row loops, one per type and algorithm. The reference fits go two super-blocks at a time
 * (see quantize_superblocks_k4). */

static void quantize_row_q4_k_ref(const float *src, qc_block_q4_k *y, int64_t nb) {
    uint8_t L[2 * QC_QK_K];
    k4_head head[2];
    for (int64_t b = 0; b < nb; b += 2) {
        const int nsb = nb - b >= 2 ? 2 : 1;
        quantize_superblocks_k4(src + b * QC_QK_K, nsb, 15, -1.f, 20, L, head);
        for (int s = 0; s < nsb; s++) store_q4_k(&head[s], L + QC_QK_K * s, y + b + s);
    }
}

static void quantize_row_q4_k_weighted(const float *src, qc_block_q4_k *y, int64_t nb, const float *qw) {
    uint8_t L[QC_QK_K];
    k4_head head;
    for (int64_t b = 0; b < nb; b++) {
        quantize_superblock_k4_weighted(src + b * QC_QK_K, qw + b * QC_QK_K, 15, 0, L, &head);
        store_q4_k(&head, L, y + b);
    }
}

static void quantize_row_q5_k_ref(const float *src, qc_block_q5_k *y, int64_t nb) {
    uint8_t L[2 * QC_QK_K];
    k4_head head[2];
    for (int64_t b = 0; b < nb; b += 2) {
        const int nsb = nb - b >= 2 ? 2 : 1;
        quantize_superblocks_k4(src + b * QC_QK_K, nsb, 31, -0.5f, 15, L, head);
        for (int s = 0; s < nsb; s++) store_q5_k(&head[s], L + QC_QK_K * s, y + b + s);
    }
}

static void quantize_row_q5_k_weighted(const float *src, qc_block_q5_k *y, int64_t nb, const float *qw) {
    uint8_t L[QC_QK_K];
    k4_head head;
    for (int64_t b = 0; b < nb; b++) {
        quantize_superblock_k4_weighted(src + b * QC_QK_K, qw + b * QC_QK_K, 31, 1, L, &head);
        store_q5_k(&head, L, y + b);
    }
}

void QC_ISA_FN(qc_quantize_row_q4_k)(const float *src, void *dst, int64_t n, const float *importance) {
    if (importance) quantize_row_q4_k_weighted(src, (qc_block_q4_k *)dst, n / QC_QK_K, importance);
    else quantize_row_q4_k_ref(src, (qc_block_q4_k *)dst, n / QC_QK_K);
}

void QC_ISA_FN(qc_quantize_row_q5_k)(const float *src, void *dst, int64_t n, const float *importance) {
    if (importance) quantize_row_q5_k_weighted(src, (qc_block_q5_k *)dst, n / QC_QK_K, importance);
    else quantize_row_q5_k_ref(src, (qc_block_q5_k *)dst, n / QC_QK_K);
}

#ifndef QC_ISA_SUFFIX /* the dequantizers are built once, in the scalar build */
/* dequantize_row_q4_K / dequantize_row_q5_K: value = (d·sc)·q - (dmin·m). */
static void dequantize_k4(const qc_half *dp, const qc_half *dminp, const uint8_t *scale_bytes, const uint8_t *qs,
                          const uint8_t *qh, float *y) {
    const float d = qc_fp16_to_fp32(*dp), dmin = qc_fp16_to_fp32(*dminp);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        unpack_scale_min_k4(j, scale_bytes, &sc, &m);
        const float dl = d * (float)sc, ml = dmin * (float)m;
        const uint8_t *q = qs + 32 * (j / 2);
        const int shift = 4 * (j % 2);
        for (int l = 0; l < 32; l++) {
            const int hi = qh ? ((qh[l] >> j) & 1) << 4 : 0;
            y[32 * j + l] = dl * (float)(((q[l] >> shift) & 0xF) + hi) - ml;
        }
    }
}

void qc_dequantize_row_q4_k(const void *src, float *dst, int64_t n) {
    const qc_block_q4_k *x = (const qc_block_q4_k *)src;
    for (int64_t b = 0; b < n / QC_QK_K; b++) dequantize_k4(&x[b].d, &x[b].dmin, x[b].scales, x[b].qs, NULL, dst + b * QC_QK_K);
}

void qc_dequantize_row_q5_k(const void *src, float *dst, int64_t n) {
    const qc_block_q5_k *x = (const qc_block_q5_k *)src;
    for (int64_t b = 0; b < n / QC_QK_K; b++) dequantize_k4(&x[b].d, &x[b].dmin, x[b].scales, x[b].qs, x[b].qh, dst + b * QC_QK_K);
}
#endif

/* ---- Q6_K: 16 groups of 16, x ≈ d·sc·(q-32) with int8 sc and 6-bit q ---- */

/* quantize_row_q6_K_ref, or quantize_row_q6_K_impl when qw is given: the two differ only in the
 * weights of the group fits, x² or the raw importance (Q6_K alone does not scale it by sigma2). */
static void quantize_block_q6_k(const float *x, const float *qw, qc_block_q6_k *y) {
    int8_t L[QC_QK_K];
    float scales[16];
    float max_scale = 0, max_abs = 0;
    for (int j = 0; j < 16; j++) {
        /* two calls, so that the unweighted one is specialized for the constant NULL */
        scales[j] = qw ? fit_symmetric(16, 32, x + 16 * j, qw + 16 * j, L + 16 * j) : fit_symmetric(16, 32, x + 16 * j, NULL, L + 16 * j);
        const float a = fabsf(scales[j]);
        if (a > max_abs) {
            max_abs = a;
            max_scale = scales[j];
        }
    }
    if (max_abs < QC_GROUP_EPS) { /* whole super-block ~0: all bytes zero, d = +0 */
        memset(y, 0, sizeof *y);
        return;
    }
    const float iscale = -128.f / max_scale;
    y->d = qc_fp32_to_fp16(1 / iscale);
    for (int j = 0; j < 16; j++) {
        const int l = qc_nearest_int(iscale * scales[j]);
        y->scales[j] = (int8_t)(l < 127 ? l : 127);
    }
    const float d_all = qc_fp16_to_fp32(y->d);
    for (int j = 0; j < 16; j++) {
        const float d = d_all * (float)y->scales[j];
        if (!d) continue;
        for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(clamp_int(qc_nearest_int(x[16 * j + i] / d), -32, 31) + 32);
    }
    /* per 128 values: ql[l] = code l | code l+64 << 4, ql[l+32] = code l+32 | code l+96 << 4;
     * qh[l] holds the top two bits of codes l, l+32, l+64, l+96 at bits 0, 2, 4, 6 */
    for (int h = 0; h < 2; h++) {
        const uint8_t *c = (const uint8_t *)L + 128 * h;
        uint8_t *ql = y->ql + 64 * h, *qh = y->qh + 32 * h;
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((c[l] & 0xF) | ((c[l + 64] & 0xF) << 4));
            ql[l + 32] = (uint8_t)((c[l + 32] & 0xF) | ((c[l + 96] & 0xF) << 4));
            qh[l] = (uint8_t)((c[l] >> 4) | ((c[l + 32] >> 4) << 2) | ((c[l + 64] >> 4) << 4) | ((c[l + 96] >> 4) << 6));
        }
    }
}

void QC_ISA_FN(qc_quantize_row_q6_k)(const float *src, void *dst, int64_t n, const float *importance) {
    qc_block_q6_k *y = (qc_block_q6_k *)dst;
    for (int64_t b = 0; b < n / QC_QK_K; b++) quantize_block_q6_k(src + b * QC_QK_K, importance ? importance + b * QC_QK_K : NULL, y + b);
}

#ifndef QC_ISA_SUFFIX /* the dequantizers are built once, in the scalar build */
/* dequantize_row_q6_K: value = (d·sc)·(q-32). */
void qc_dequantize_row_q6_k(const void *src, float *dst, int64_t n) {
    const qc_block_q6_k *x = (const qc_block_q6_k *)src;
    for (int64_t b = 0; b < n / QC_QK_K; b++, dst += QC_QK_K) {
        const float d = qc_fp16_to_fp32(x[b].d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[b].ql + 64 * h, *qh = x[b].qh + 32 * h;
            const int8_t *sc = x[b].scales + 8 * h;
            float *y = dst + 128 * h;
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}
#endif

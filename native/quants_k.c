/* The k-quant block types Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (super-blocks of 256 values).
 *
 * Contract: qc_quantize_row_qN_k turns n floats (n a multiple of 256) into n/256 super-blocks laid
 * out exactly as ggml's block_qN_K (ggml-common.h), and must be byte-identical to llama.cpp's
 * reference quantizers (quantize_row_qN_K_ref in ggml-quants.c), which llama-quantize runs when no
 * imatrix is given. Every float expression below therefore keeps the reference's operation order
 * (sequential accumulation, same operand order, division where it divides) and relies on the build
 * not contracting a*b+c into FMAs. Importance weights (the imatrix algorithms) are not implemented
 * yet: a non-NULL importance makes the quantizer return -1 and write nothing.
 * qc_dequantize_row_qN_k mirrors ggml's dequantize_row_qN_K, float order included.
 *
 * Speed comes from reordering independent work, never from reassociating floats: the per-group
 * fits of a super-block run as lockstep lanes (group g in lane g), so that each lane's arithmetic is
 * the reference's, and the compiler gets independent chains to vectorize.
 */
#include <math.h>
#include <string.h>

#include "fp16.h"
#include "quants.h"

/* ggml-quants.c's GROUP_MAX_EPS: a group whose largest |x| is below this counts as all zero. */
#define QC_GROUP_EPS 1e-15f

/* ---- block layouts (ggml-common.h); every field is bytes or a 2-byte half, so no padding ---- */

typedef struct {
    uint8_t scales[QC_QK_K / 16]; /* low nibble: sub-block scale, high nibble: sub-block min */
    uint8_t qs[QC_QK_K / 4];      /* 2-bit codes */
    qc_half d, dmin;
} q2_k_block;

typedef struct {
    uint8_t hmask[QC_QK_K / 8]; /* third bit of each code */
    uint8_t qs[QC_QK_K / 4];    /* low 2 bits of each code */
    uint8_t scales[12];         /* 16 signed 6-bit scales, offset by 32 */
    qc_half d;
} q3_k_block;

typedef struct {
    qc_half d, dmin;
    uint8_t scales[12]; /* 8 6-bit scales and 8 6-bit mins */
    uint8_t qs[QC_QK_K / 2];
} q4_k_block;

typedef struct {
    qc_half d, dmin;
    uint8_t scales[12];
    uint8_t qh[QC_QK_K / 8]; /* fifth bit of each code */
    uint8_t qs[QC_QK_K / 2];
} q5_k_block;

typedef struct {
    uint8_t ql[QC_QK_K / 2]; /* low 4 bits of each code */
    uint8_t qh[QC_QK_K / 4]; /* high 2 bits of each code */
    int8_t scales[QC_QK_K / 16];
    qc_half d;
} q6_k_block;

_Static_assert(sizeof(q2_k_block) == 84, "Q2_K block is 84 bytes");
_Static_assert(sizeof(q3_k_block) == 110, "Q3_K block is 110 bytes");
_Static_assert(sizeof(q4_k_block) == 144, "Q4_K block is 144 bytes");
_Static_assert(sizeof(q5_k_block) == 176, "Q5_K block is 176 bytes");
_Static_assert(sizeof(q6_k_block) == 210, "Q6_K block is 210 bytes");

static inline int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* ---- per-group fits ---- */

/* Counterpart of make_qkx2_quants, run for G independent groups of n values at once (lane g is
 * group g: x, w and L hold group g at [n·g, n·g + n)). Per group it fits x ≈ scale·L + min
 * (min ≤ 0, L in 0..nmax) under weights w: a first grid from iscale = nmax/(max - min), then
 * nstep+1 stretched grids (rmin + rdelta·is + nmax)/(max - min), each refitted by weighted least
 * squares and kept if its weighted error (|diff| if use_mad, else diff²) is strictly smaller.
 * As in the reference, once a candidate is kept its fitted min also becomes the origin of the
 * grid for the later candidates. Writes the codes to L, the scale to scale[g] and -min (≥ 0) to
 * neg_min[g]; a group with max == min gets codes 0 and scale 0.
 *
 * Every group runs the same candidate sequence, so the groups advance in lockstep: each lane does
 * exactly the reference's float operations in the reference's order (sums accumulate over the
 * elements in order), a candidate's verdict is a per-lane select, and the lanes only give the
 * compiler independent work to vectorize and overlap. Inline so that G, n and use_mad are
 * constants at each call. */
enum { FIT_MAX_G = 16, FIT_MAX_N = 32 };
static inline void fit_scale_min_groups(const int G, const int n, const int nmax, const float *x, const float *w,
                                        uint8_t *L, float *scale, float *neg_min, const float rmin, const float rdelta,
                                        const int nstep, const int use_mad) {
    float xt[FIT_MAX_N][FIT_MAX_G], wt[FIT_MAX_N][FIT_MAX_G]; /* element-major copies */
    float sh[FIT_MAX_N][FIT_MAX_G];                           /* x - min for the lane's current min */
    float best_l[FIT_MAX_N][FIT_MAX_G], cand_l[FIT_MAX_N][FIT_MAX_G];
    float min[FIT_MAX_G], max[FIT_MAX_G], sum_w[FIT_MAX_G], sum_x[FIT_MAX_G], range[FIT_MAX_G];
    float sc[FIT_MAX_G], best_err[FIT_MAX_G], first_min[FIT_MAX_G];
    for (int g = 0; g < G; g++) {
        for (int i = 0; i < n; i++) {
            xt[i][g] = x[n * g + i];
            wt[i][g] = w[n * g + i];
        }
    }
    for (int g = 0; g < G; g++) {
        min[g] = max[g] = xt[0][g];
        sum_w[g] = wt[0][g];
        sum_x[g] = sum_w[g] * xt[0][g];
    }
    for (int i = 1; i < n; i++) {
        for (int g = 0; g < G; g++) {
            min[g] = xt[i][g] < min[g] ? xt[i][g] : min[g];
            max[g] = xt[i][g] > max[g] ? xt[i][g] : max[g];
            sum_w[g] += wt[i][g];
            sum_x[g] += wt[i][g] * xt[i][g];
        }
    }
    float iscale[FIT_MAX_G];
    for (int g = 0; g < G; g++) {
        min[g] = min[g] > 0 ? 0.f : min[g];
        first_min[g] = min[g];
        range[g] = max[g] - min[g];
        iscale[g] = (float)nmax / range[g];
        sc[g] = 1 / iscale[g];
        best_err[g] = 0;
    }
    for (int i = 0; i < n; i++) {
        for (int g = 0; g < G; g++) {
            sh[i][g] = xt[i][g] - min[g];
            const float l = (float)clamp_int(qc_nearest_int(iscale[g] * sh[i][g]), 0, nmax);
            best_l[i][g] = l;
            float diff = sc[g] * l + min[g] - xt[i][g];
            diff = use_mad ? fabsf(diff) : diff * diff;
            best_err[g] += wt[i][g] * diff;
        }
    }
    for (int is = 0; is <= nstep; is++) {
        const float num = rmin + rdelta * (float)is + (float)nmax;
        float sum_l[FIT_MAX_G], sum_l2[FIT_MAX_G], sum_xl[FIT_MAX_G];
        for (int g = 0; g < G; g++) {
            iscale[g] = num / range[g];
            sum_l[g] = sum_l2[g] = sum_xl[g] = 0;
        }
        for (int i = 0; i < n; i++) {
            for (int g = 0; g < G; g++) {
                const float l = (float)clamp_int(qc_nearest_int(iscale[g] * sh[i][g]), 0, nmax);
                cand_l[i][g] = l;
                const float wl = wt[i][g] * l;
                sum_l[g] += wl;
                sum_l2[g] += wl * l;
                sum_xl[g] += wl * xt[i][g];
            }
        }
        float D[FIT_MAX_G], this_scale[FIT_MAX_G], this_min[FIT_MAX_G], err[FIT_MAX_G];
        for (int g = 0; g < G; g++) {
            D[g] = sum_w[g] * sum_l2[g] - sum_l[g] * sum_l[g];
            /* computed for every lane; lanes with D ≤ 0 are not eligible below */
            const float s = (sum_w[g] * sum_xl[g] - sum_x[g] * sum_l[g]) / D[g];
            const float m = (sum_l2[g] * sum_x[g] - sum_l[g] * sum_xl[g]) / D[g];
            this_min[g] = m > 0 ? 0.f : m;
            this_scale[g] = m > 0 ? sum_xl[g] / sum_l2[g] : s;
            err[g] = 0;
        }
        for (int i = 0; i < n; i++) {
            for (int g = 0; g < G; g++) {
                float diff = this_scale[g] * cand_l[i][g] + this_min[g] - xt[i][g];
                diff = use_mad ? fabsf(diff) : diff * diff;
                err[g] += wt[i][g] * diff;
            }
        }
        int any = 0, keep[FIT_MAX_G];
        for (int g = 0; g < G; g++) {
            keep[g] = D[g] > 0 && err[g] < best_err[g];
            any |= keep[g];
        }
        if (!any) continue;
        for (int g = 0; g < G; g++) {
            if (!keep[g]) continue;
            best_err[g] = err[g];
            sc[g] = this_scale[g];
            min[g] = this_min[g];
            range[g] = max[g] - min[g];
        }
        /* The grid moves with the min. Lanes that kept their min recompute the same floats, and a
         * zero of the other sign (x - ±0) only ever meets nearest_int as ±0 or NaN, both code 0. */
        for (int i = 0; i < n; i++) {
            for (int g = 0; g < G; g++) {
                best_l[i][g] = keep[g] ? cand_l[i][g] : best_l[i][g];
                sh[i][g] = xt[i][g] - min[g];
            }
        }
    }
    for (int g = 0; g < G; g++) {
        const int flat = max[g] == first_min[g];
        for (int i = 0; i < n; i++) L[n * g + i] = flat ? 0 : (uint8_t)best_l[i][g];
        scale[g] = flat ? 0.f : sc[g];
        neg_min[g] = flat ? -first_min[g] : -min[g];
    }
}

/* Largest-magnitude value of x (the signed value), and that magnitude in *amax. */
static inline float signed_absmax(int n, const float *x, float *amax) {
    float max = 0, a = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        const int larger = ax > a; /* selects, not a branch: the winner is unpredictable */
        max = larger ? x[i] : max;
        a = larger ? ax : a;
    }
    *amax = a;
    return max;
}

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

/* Counterpart of make_qx_quants(16, 32, x, L, rmse_type=1, NULL): symmetric codes -32..31 (stored
 * +32) for 16 values; the x²-weighted least-squares scale over 19 grid stretches (the first from
 * iscale = -32/max, then -(32 + 0.1·is)/max for is = -9..9, is ≠ 0). Returns the scale.
 *
 * A candidate's codes and sums do not depend on the verdicts before it, so all 19 are computed
 * together (candidate-major inner loop: each candidate's sums still accumulate in element order,
 * so every float is the reference's), and then judged in the reference's order. */
static float fit_q6_group(const float *x, int8_t *L) {
    enum { N = 16, NMAX = 32, NC = 20 /* 19 candidates and a dummy: a whole number of vectors */ };
    float amax;
    const float max = signed_absmax(N, x, &amax);
    if (amax < QC_GROUP_EPS) {
        memset(L, 0, N);
        return 0.f;
    }
    float iscale[NC];
    iscale[0] = (float)-NMAX / max;
    for (int c = 1; c < 19; c++) {
        const int is = c <= 9 ? c - 10 : c - 9;
        iscale[c] = -((float)NMAX + 0.1f * (float)is) / max;
    }
    iscale[NC - 1] = iscale[0];
    float sumlx[NC], suml2[NC];
    for (int c = 0; c < NC; c++) sumlx[c] = suml2[c] = 0;
    for (int i = 0; i < N; i++) {
        const float w = x[i] * x[i], wx = w * x[i];
        for (int c = 0; c < NC; c++) {
            const float l = (float)clamp_int(qc_nearest_int(iscale[c] * x[i]), -NMAX, NMAX - 1);
            sumlx[c] += wx * l;
            suml2[c] += w * l * l;
        }
    }
    float scale = suml2[0] ? sumlx[0] / suml2[0] : 0.0f;
    float best = scale * sumlx[0];
    int pick = 0;
    for (int c = 1; c < 19; c++) {
        if (suml2[c] > 0 && sumlx[c] * sumlx[c] > best * suml2[c]) {
            pick = c;
            scale = sumlx[c] / suml2[c];
            best = scale * sumlx[c];
        }
    }
    for (int i = 0; i < N; i++) L[i] = (int8_t)(clamp_int(qc_nearest_int(iscale[pick] * x[i]), -NMAX, NMAX - 1) + NMAX);
    return scale;
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

static inline void unpack_scales_q3(const uint8_t *q, int8_t *s) {
    for (int j = 0; j < 16; j++) {
        const int lo = j < 8 ? (q[j] & 0xF) : (q[j - 8] >> 4);
        const int hi = (q[8 + j % 4] >> (2 * (j / 4))) & 3;
        s[j] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

/* ---- Q2_K: 16 groups of 16, x ≈ d·sc·q - dmin·m with 4-bit sc, m and 2-bit q ---- */

/* quantize_row_q2_K_ref. */
static void quantize_block_q2_k(const float *x, q2_k_block *y) {
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
    /* Second pass with the rounded scales; a group whose scale rounds to 0 keeps its first codes. */
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

int qc_quantize_row_q2_k(const float *src, void *dst, int64_t n, const float *importance) {
    if (importance) return -1;
    q2_k_block *y = (q2_k_block *)dst;
    for (int64_t b = 0; b < n / QC_QK_K; b++) quantize_block_q2_k(src + b * QC_QK_K, y + b);
    return 0;
}

/* dequantize_row_q2_K: value = (d·sc)·q - (dmin·m). */
void qc_dequantize_row_q2_k(const void *src, float *dst, int64_t n) {
    const q2_k_block *x = (const q2_k_block *)src;
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

/* ---- Q3_K: 16 groups of 16, x ≈ d·(sc-32)·(q-4) with 6-bit sc and 3-bit q ---- */

/* quantize_row_q3_K_ref. */
static void quantize_block_q3_k(const float *x, q3_k_block *y) {
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
    uint8_t packed[16] = {0};
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
    /* Second pass; packed[] is what the 12 bytes read back to (all 0 when max_scale is 0). */
    const float d_all = qc_fp16_to_fp32(y->d);
    for (int j = 0; j < 16; j++) {
        const float d = d_all * (float)(packed[j] - 32);
        if (!d) continue;
        for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(clamp_int(qc_nearest_int(x[16 * j + i] / d), -4, 3) + 4);
    }
    /* Third bit of code j → bit j/32 of hmask[j%32]; the low two bits are packed like Q2_K. */
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

int qc_quantize_row_q3_k(const float *src, void *dst, int64_t n, const float *importance) {
    if (importance) return -1;
    q3_k_block *y = (q3_k_block *)dst;
    for (int64_t b = 0; b < n / QC_QK_K; b++) quantize_block_q3_k(src + b * QC_QK_K, y + b);
    return 0;
}

/* dequantize_row_q3_K: value = (d·(sc-32))·(q - (hbit ? 0 : 4)). */
void qc_dequantize_row_q3_k(const void *src, float *dst, int64_t n) {
    const q3_k_block *x = (const q3_k_block *)src;
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

/* ---- Q4_K and Q5_K: 8 groups of 32, x ≈ d·sc·q - dmin·m with 6-bit sc, m ---- */

/* The d, dmin and 12 scale bytes that open both block_q4_K and block_q5_K. */
typedef struct {
    qc_half d, dmin;
    uint8_t scales[12];
} k4_head;

/* Second half of quantize_row_q4_K_ref / quantize_row_q5_K_ref for one super-block, given its 8
 * group fits: 6-bit scales and mins against the super-block maxima, then the codes (0..nmax)
 * recomputed from the rounded scales into L. */
static inline void finish_superblock_k4(const float *x, int nmax, const float *scales, const float *mins, uint8_t *L,
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

    const float d_all = qc_fp16_to_fp32(head->d), dmin_all = qc_fp16_to_fp32(head->dmin);
    for (int j = 0; j < 8; j++) {
        const float d = d_all * (float)ls[j];
        if (!d) continue; /* keeps the first-pass codes, as the reference does */
        const float dm = dmin_all * (float)lm[j];
        for (int i = 0; i < 32; i++) L[32 * j + i] = (uint8_t)clamp_int(qc_nearest_int((x[32 * j + i] + dm) / d), 0, nmax);
    }
}

/* quantize_row_q4_K_ref / quantize_row_q5_K_ref up to the code packing, for nsb (1 or 2)
 * consecutive super-blocks: the group fits (weights av_x + |x|, av_x the group's RMS) of both run
 * as 16 lockstep lanes, which the compiler vectorizes better than 8. Codes go to L[256·s ..]. */
static inline void quantize_superblocks_k4(const float *x, int nsb, int nmax, float rmin, int nstep, uint8_t *L,
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

int qc_quantize_row_q4_k(const float *src, void *dst, int64_t n, const float *importance) {
    if (importance) return -1;
    q4_k_block *y = (q4_k_block *)dst;
    const int64_t nb = n / QC_QK_K;
    uint8_t L[2 * QC_QK_K];
    k4_head head[2];
    for (int64_t b = 0; b < nb; b += 2) {
        const int nsb = nb - b >= 2 ? 2 : 1;
        quantize_superblocks_k4(src + b * QC_QK_K, nsb, 15, -1.f, 20, L, head);
        for (int s = 0; s < nsb; s++) {
            q4_k_block *yb = y + b + s;
            const uint8_t *Ls = L + QC_QK_K * s;
            yb->d = head[s].d;
            yb->dmin = head[s].dmin;
            memcpy(yb->scales, head[s].scales, sizeof yb->scales);
            /* each 64 values: byte l holds code l (low nibble) and code l+32 (high nibble) */
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++) yb->qs[32 * c + l] = (uint8_t)(Ls[64 * c + l] | (Ls[64 * c + l + 32] << 4));
        }
    }
    return 0;
}

int qc_quantize_row_q5_k(const float *src, void *dst, int64_t n, const float *importance) {
    if (importance) return -1;
    q5_k_block *y = (q5_k_block *)dst;
    const int64_t nb = n / QC_QK_K;
    uint8_t L[2 * QC_QK_K];
    k4_head head[2];
    for (int64_t b = 0; b < nb; b += 2) {
        const int nsb = nb - b >= 2 ? 2 : 1;
        quantize_superblocks_k4(src + b * QC_QK_K, nsb, 31, -0.5f, 15, L, head);
        for (int s = 0; s < nsb; s++) {
            q5_k_block *yb = y + b + s;
            const uint8_t *Ls = L + QC_QK_K * s;
            yb->d = head[s].d;
            yb->dmin = head[s].dmin;
            memcpy(yb->scales, head[s].scales, sizeof yb->scales);
            /* low nibbles as Q4_K; the fifth bit of chunk c's code l goes to qh[l] bit 2c, of l+32 to bit 2c+1 */
            memset(yb->qh, 0, sizeof yb->qh);
            for (int c = 0; c < 4; c++) {
                for (int l = 0; l < 32; l++) {
                    const int lo = Ls[64 * c + l], hi = Ls[64 * c + l + 32];
                    yb->qh[l] |= (uint8_t)(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
                    yb->qs[32 * c + l] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
                }
            }
        }
    }
    return 0;
}

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
    const q4_k_block *x = (const q4_k_block *)src;
    for (int64_t b = 0; b < n / QC_QK_K; b++) dequantize_k4(&x[b].d, &x[b].dmin, x[b].scales, x[b].qs, NULL, dst + b * QC_QK_K);
}

void qc_dequantize_row_q5_k(const void *src, float *dst, int64_t n) {
    const q5_k_block *x = (const q5_k_block *)src;
    for (int64_t b = 0; b < n / QC_QK_K; b++) dequantize_k4(&x[b].d, &x[b].dmin, x[b].scales, x[b].qs, x[b].qh, dst + b * QC_QK_K);
}

/* ---- Q6_K: 16 groups of 16, x ≈ d·sc·(q-32) with int8 sc and 6-bit q ---- */

/* quantize_row_q6_K_ref. */
static void quantize_block_q6_k(const float *x, q6_k_block *y) {
    int8_t L[QC_QK_K];
    float scales[16];
    float max_scale = 0, max_abs = 0;
    for (int j = 0; j < 16; j++) {
        scales[j] = fit_q6_group(x + 16 * j, L + 16 * j);
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

int qc_quantize_row_q6_k(const float *src, void *dst, int64_t n, const float *importance) {
    if (importance) return -1;
    q6_k_block *y = (q6_k_block *)dst;
    for (int64_t b = 0; b < n / QC_QK_K; b++) quantize_block_q6_k(src + b * QC_QK_K, y + b);
    return 0;
}

/* dequantize_row_q6_K: value = (d·sc)·(q-32). */
void qc_dequantize_row_q6_k(const void *src, float *dst, int64_t n) {
    const q6_k_block *x = (const q6_k_block *)src;
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

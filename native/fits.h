/* The per-group fits of ggml-quants.c that both the legacy and the k-quant kernels use:
 * make_qkx2_quants / make_qkx3_quants (scale and min) and make_qx_quants (symmetric scale).
 *
 * Inlined into every caller, so that its constant group count, group length and code range
 * specialize them. Like the kernels, they keep the reference's float operations and order (see
 * quants_k.c) and rely on the build not contracting a*b+c into FMAs.
 */
#ifndef QCONVERT_FITS_H
#define QCONVERT_FITS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fp16.h"

/* For the fits and the helpers that call them with constant sizes: inline even past GCC's
 * unit-growth limits, which otherwise leave a shared out-of-line copy that knows none of the
 * sizes and runs at half speed. */
#if defined(__GNUC__)
#define QC_SPECIALIZE static inline __attribute__((always_inline))
#else
#define QC_SPECIALIZE static inline
#endif

/* ggml-quants.c's GROUP_MAX_EPS: a group whose largest |x| is below this counts as all zero. */
#define QC_GROUP_EPS 1e-15f

static inline int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* Σ x², accumulated in element order as the reference's `sum_x2 += x[j]*x[j]` loops. */
static inline float sum_squares(int64_t n, const float *x) {
    float sum = 0;
    for (int64_t i = 0; i < n; i++) sum += x[i] * x[i];
    return sum;
}

/* The weights every weighted (_impl) quantizer but Q6_K fits with: the importance qw of a column
 * times sqrt(sigma2 + x²), sigma2 being the mean square of the row (legacy types) or of the
 * super-block (k-quants; twice that for Q3_K, Q4_K and Q5_K): important columns count more, and
 * large values a little more than small ones. */
static inline void importance_weights(int n, const float *x, const float *qw, float sigma2, float *w) {
    for (int i = 0; i < n; i++) w[i] = qw[i] * sqrtf(sigma2 + x[i] * x[i]);
}

/* Σ w over each of the n_groups consecutive groups of len weights, in element order from 0: the
 * reference's sw[j], the weight of a sub-block when its scale and min are quantized. */
static inline void group_sums(int n_groups, int len, const float *w, float *sums) {
    for (int g = 0; g < n_groups; g++) {
        float s = 0;
        for (int i = 0; i < len; i++) s += w[len * g + i];
        sums[g] = s;
    }
}

/* Largest-magnitude value of x (the signed value, the first on ties), and that magnitude in *amax:
 * the scan that opens make_qx_quants and make_q3_quants. */
static inline float group_absmax(int n, const float *x, float *amax) {
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

/* Counterpart of make_qkx2_quants, and of make_qkx3_quants given weights (it then computes the
 * same), run for G independent groups of n values at once (lane g is group g: x, w and L hold
 * group g at [n·g, n·g + n)). Per group it fits x ≈ scale·L + min
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
 * compiler independent work to vectorize and overlap. */
enum { FIT_MAX_G = 16, FIT_MAX_N = 32 };
QC_SPECIALIZE void fit_scale_min_groups(const int G, const int n, const int nmax, const float *x, const float *w,
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

/* Counterpart of make_qx_quants(n, nmax, x, L, rmse_type = 1, w): symmetric codes -nmax..nmax-1
 * (stored +nmax) for n ≤ 32 values; the w-weighted least-squares scale over 19 grid stretches
 * (the first from iscale = -nmax/max, then -(nmax + 0.1·is)/max for is = -9..9, is ≠ 0), a
 * stretch kept if it raises sumlx²/suml2. w NULL means the reference's default weights x².
 * Returns the scale; a group whose largest |x| is below GROUP_MAX_EPS gets codes 0 (not nmax)
 * and scale 0.
 *
 * A candidate's codes and sums do not depend on the verdicts before it, so all 19 are computed
 * together (candidate-major inner loop: each candidate's sums still accumulate in element order,
 * so every float is the reference's), and then judged in the reference's order. */
QC_SPECIALIZE float fit_symmetric(const int n, const int nmax, const float *x, const float *w, int8_t *L) {
    enum { NC = 20 /* 19 candidates and a dummy: a whole number of vectors */ };
    float amax;
    const float max = group_absmax(n, x, &amax);
    if (amax < QC_GROUP_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale[NC];
    iscale[0] = (float)-nmax / max;
    for (int c = 1; c < 19; c++) {
        const int is = c <= 9 ? c - 10 : c - 9;
        iscale[c] = -((float)nmax + 0.1f * (float)is) / max;
    }
    iscale[NC - 1] = iscale[0];
    float sumlx[NC], suml2[NC];
    for (int c = 0; c < NC; c++) sumlx[c] = suml2[c] = 0;
    for (int i = 0; i < n; i++) {
        const float wi = w ? w[i] : x[i] * x[i], wx = wi * x[i]; /* the reference's w*x[i]*l is (w·x)·l */
        for (int c = 0; c < NC; c++) {
            const float l = (float)clamp_int(qc_nearest_int(iscale[c] * x[i]), -nmax, nmax - 1);
            sumlx[c] += wx * l;
            suml2[c] += wi * l * l;
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
    for (int i = 0; i < n; i++) L[i] = (int8_t)(clamp_int(qc_nearest_int(iscale[pick] * x[i]), -nmax, nmax - 1) + nmax);
    return scale;
}

#endif

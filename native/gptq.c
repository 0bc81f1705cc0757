#include "gptq.h"

#include <math.h>

/* Column i's scaled error onto the later columns r > i of the sub-block: w[r] −= hinv[i·m + r]·err. */
static void push_error(float *w, const float *err, const float *hinv, int64_t i, int64_t m, int64_t n_out) {
    for (int64_t r = i + 1; r < m; r++) {
        const float h = hinv[i * m + r];
        float *wr = w + r * n_out;
        for (int64_t o = 0; o < n_out; o++) wr[o] -= h * err[o];
    }
}

void qc_gptq_columns(float *w, float *err, const float *hinv, const float *inv_diag, const float *scales, const float *zeros,
                     const int32_t *grid_row, int64_t m, int64_t n_out, float maxq) {
    for (int64_t i = 0; i < m; i++) {
        float *wi = w + i * n_out;
        float *ei = err + i * n_out;
        const float *s = scales + (int64_t)grid_row[i] * n_out;
        const float *z = zeros + (int64_t)grid_row[i] * n_out;
        const float d = inv_diag[i];
        for (int64_t o = 0; o < n_out; o++) {
            float level = nearbyintf(wi[o] / s[o]) + z[o]; /* round half to even, as torch.round */
            level = level < 0.0f ? 0.0f : (level > maxq ? maxq : level);
            const float q = s[o] * (level - z[o]);
            ei[o] = (wi[o] - q) * d;
            wi[o] = q;
        }
        push_error(w, ei, hinv, i, m, n_out);
    }
}

void qc_gptq_block_columns(float *w, float *err, const float *hinv, const float *inv_diag, const float *s, const float *o, const float *fit_w,
                           uint8_t *codes, int64_t m, int64_t n_out, int zero, int max_code) {
    for (int64_t i = 0; i < m; i++) {
        float *wi = w + i * n_out, *ei = err + i * n_out;
        const float *si = s + i * n_out, *oi = o + i * n_out, *fi = fit_w + i * n_out;
        uint8_t *ci = codes + i * n_out;
        const float d = inv_diag[i];
        for (int64_t r = 0; r < n_out; r++) {
            int c = ci[r];
            /* a weight the block was fitted on keeps the fit's code; a moved one takes the nearest level */
            if (wi[r] != fi[r] && si[r] != 0.0f) {
                const float l = nearbyintf((wi[r] - oi[r]) / si[r]) + (float)zero;
                c = !(l >= 0.0f) ? 0 : (l > (float)max_code ? max_code : (int)l); /* NaN (a non-finite input) → 0 */
                ci[r] = (uint8_t)c;
            }
            const float q = si[r] * (float)(c - zero) + oi[r];
            ei[r] = (wi[r] - q) * d;
            wi[r] = q;
        }
        push_error(w, ei, hinv, i, m, n_out);
    }
}

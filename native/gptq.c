#include "gptq.h"

#include <math.h>

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
        for (int64_t r = i + 1; r < m; r++) {
            const float h = hinv[i * m + r];
            float *wr = w + r * n_out;
            for (int64_t o = 0; o < n_out; o++) wr[o] -= h * ei[o];
        }
    }
}

/* GPTQ's inner column loop (qconvert/gptq/solve.py), plain C: the per-column Python loop costs
 * more than its arithmetic. */
#ifndef QC_GPTQ_H
#define QC_GPTQ_H

#include <stdint.h>

/* Quantizes the m columns of one sub-block in order. w and err are (m, n_out) row-major: row i is
 * weight column i (the solve works on Wᵀ). Column i is rounded on grid row grid_row[i] of scales
 * and zeros ((k, n_out) each), to levels clamp(round(w/s) + z, 0, maxq); it becomes its dequantized
 * value s·(level − z), its scaled error (w − dequantized)·inv_diag[i] goes to err row i, and the
 * later columns r > i of the sub-block get w[r] −= hinv[i·m + r]·err[i] (hinv: the sub-block's
 * (m, m) upper Cholesky factor of the inverse Hessian). */
void qc_gptq_columns(float *w, float *err, const float *hinv, const float *inv_diag, const float *scales, const float *zeros,
                     const int32_t *grid_row, int64_t m, int64_t n_out, float maxq);

#endif

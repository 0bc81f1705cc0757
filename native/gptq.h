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

/* The same loop on the grids of GGUF blocks (codes.h): column i, row r is rounded to a code c of
 * value s·(c − zero) + o with the s and o of its block ((m, n_out) each, like w). codes holds
 * the codes the block fit chose and fit_w the weights it was fitted on: a weight still equal to
 * its fit_w keeps its code (the block quantizer's own choice, which llama.cpp's rounding rules
 * make), any other takes the nearest code in 0..max_code. codes ends up holding every code. */
void qc_gptq_block_columns(float *w, float *err, const float *hinv, const float *inv_diag, const float *s, const float *o, const float *fit_w,
                           uint8_t *codes, int64_t m, int64_t n_out, int zero, int max_code);

#endif

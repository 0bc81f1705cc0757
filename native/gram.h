/* The Gram matrix XᵀX of bfloat16 activations, the Hessian that GPTQ accumulates: exact products
 * and float32 sums (AVX-512 BF16's dot products), on the upper triangle only. torch on a CPU has
 * no bfloat16 matmul with a float32 result, and its bfloat16 results made real Hessians indefinite;
 * widening to float32 first runs sgemm at about half the bfloat16 dot products' rate. */
#ifndef QC_GRAM_H
#define QC_GRAM_H

#include <stdint.h>

/* Whether this CPU (and OS) runs qc_gram_bf16_upper. */
int qc_gram_bf16_supported(void);

/* h[i·d + j] += Σ_t x[t·d + i]·x[t·d + j] for every j ≥ i (the diagonal included); h's strictly
 * lower triangle is left as it is. x: n rows of d bfloat16 values (raw bits), h: (d, d) float32.
 * The work is split over `threads` threads. Returns 0; -1 if the CPU cannot run it or memory for
 * the packed rows cannot be had (h is then unchanged only in the first case). */
int qc_gram_bf16_upper(const uint16_t *x, int64_t n, int64_t d, float *h, int threads);

#endif

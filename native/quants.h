/* qconvert's GGUF block quantizers: the shared interface.
 *
 * Every type quantizes and dequantizes whole rows; a row of n_per_row floats becomes
 * n_per_row / block_elems blocks of block_bytes each, laid out exactly as llama.cpp's ggml
 * blocks (ggml-common.h). The reference (non-imatrix) algorithms must give byte-identical
 * output to llama-quantize. Plain C11, no torch.
 */
#ifndef QCONVERT_QUANTS_H
#define QCONVERT_QUANTS_H

#include <stddef.h>
#include <stdint.h>

/* ggml type ids (ggml.h), the numbers stored in GGUF tensor infos. */
enum qc_type {
    QC_Q4_0 = 2,
    QC_Q4_1 = 3,
    QC_Q5_0 = 6,
    QC_Q5_1 = 7,
    QC_Q8_0 = 8,
    QC_Q2_K = 10,
    QC_Q3_K = 11,
    QC_Q4_K = 12,
    QC_Q5_K = 13,
    QC_Q6_K = 14,
};

#define QC_QK 32   /* elements per block of the legacy types */
#define QC_QK_K 256 /* elements per super-block of the k-quants */

/* Quantize one row of n floats (n a multiple of the block size) into dst.
 * importance: NULL, or n per-column weights (an imatrix row) for the weighted algorithms.
 * Returns 0, or -1 if the type does not support the given importance weights. */
typedef int (*qc_quantize_row_fn)(const float *src, void *dst, int64_t n, const float *importance);
/* Dequantize n values (whole blocks) from src into dst. */
typedef void (*qc_dequantize_row_fn)(const void *src, float *dst, int64_t n);

typedef struct {
    int type;
    const char *name;
    int block_elems;
    int block_bytes;
    qc_quantize_row_fn quantize_row;
    qc_dequantize_row_fn dequantize_row;
} qc_type_traits;

/* Traits of a type id, or NULL for a type this library does not handle. */
const qc_type_traits *qc_traits(int type);

/* Per-type kernels, defined in quants_legacy.c and quants_k.c. */
int qc_quantize_row_q4_0(const float *src, void *dst, int64_t n, const float *importance);
int qc_quantize_row_q4_1(const float *src, void *dst, int64_t n, const float *importance);
int qc_quantize_row_q5_0(const float *src, void *dst, int64_t n, const float *importance);
int qc_quantize_row_q5_1(const float *src, void *dst, int64_t n, const float *importance);
int qc_quantize_row_q8_0(const float *src, void *dst, int64_t n, const float *importance);
int qc_quantize_row_q2_k(const float *src, void *dst, int64_t n, const float *importance);
int qc_quantize_row_q3_k(const float *src, void *dst, int64_t n, const float *importance);
int qc_quantize_row_q4_k(const float *src, void *dst, int64_t n, const float *importance);
int qc_quantize_row_q5_k(const float *src, void *dst, int64_t n, const float *importance);
int qc_quantize_row_q6_k(const float *src, void *dst, int64_t n, const float *importance);

void qc_dequantize_row_q4_0(const void *src, float *dst, int64_t n);
void qc_dequantize_row_q4_1(const void *src, float *dst, int64_t n);
void qc_dequantize_row_q5_0(const void *src, float *dst, int64_t n);
void qc_dequantize_row_q5_1(const void *src, float *dst, int64_t n);
void qc_dequantize_row_q8_0(const void *src, float *dst, int64_t n);
void qc_dequantize_row_q2_k(const void *src, float *dst, int64_t n);
void qc_dequantize_row_q3_k(const void *src, float *dst, int64_t n);
void qc_dequantize_row_q4_k(const void *src, float *dst, int64_t n);
void qc_dequantize_row_q5_k(const void *src, float *dst, int64_t n);
void qc_dequantize_row_q6_k(const void *src, float *dst, int64_t n);

#endif

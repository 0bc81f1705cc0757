/* qconvert's GGUF block quantizers: the shared interface.
 *
 * Every type quantizes and dequantizes whole rows; a row of n_per_row floats becomes
 * n_per_row / block_elems blocks of block_bytes each, laid out exactly as llama.cpp's ggml
 * blocks (blocks.h). Both algorithms of each type, the reference one and the imatrix-weighted
 * one, must give byte-identical output to llama-quantize (without and with --imatrix). Plain
 * C11, no torch.
 */
#ifndef QCONVERT_QUANTS_H
#define QCONVERT_QUANTS_H

#include <stddef.h>
#include <stdint.h>

#include "blocks.h"

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

/* Quantize one row of n finite floats (n a multiple of the block size) into dst, which must be
 * aligned for the type's block struct. importance: NULL for the reference algorithm, or the n
 * per-column weights that llama-quantize hands the quantizer for this row (the imatrix entry of
 * the tensor: its sums divided by its call count) for the weighted one, as ggml's
 * quantize_qN(..., quant_weights) does; Q8_0 ignores them, as llama.cpp does. */
typedef void (*qc_quantize_row_fn)(const float *src, void *dst, int64_t n, const float *importance);
/* Dequantize n values (whole blocks) from src into dst. */
typedef void (*qc_dequantize_row_fn)(const void *src, float *dst, int64_t n);

typedef struct {
    int type;
    const char *name;
    int block_elems;
    int block_bytes;  /* sizeof the block struct */
    int block_align;  /* _Alignof the block struct: what a destination buffer must be aligned to */
    qc_quantize_row_fn quantize_row;
    qc_dequantize_row_fn dequantize_row;
} qc_type_traits;

/* Traits of a type id, or NULL for a type this library does not handle. */
const qc_type_traits *qc_traits(int type);
/* The i-th entry of the type table (0 <= i < qc_type_count()), for listing every type. */
const qc_type_traits *qc_traits_at(size_t i);
size_t qc_type_count(void);

/* Per-type kernels, defined in quants_legacy.c and quants_k.c. */
void qc_quantize_row_q4_0(const float *src, void *dst, int64_t n, const float *importance);
void qc_quantize_row_q4_1(const float *src, void *dst, int64_t n, const float *importance);
void qc_quantize_row_q5_0(const float *src, void *dst, int64_t n, const float *importance);
void qc_quantize_row_q5_1(const float *src, void *dst, int64_t n, const float *importance);
void qc_quantize_row_q8_0(const float *src, void *dst, int64_t n, const float *importance);
void qc_quantize_row_q2_k(const float *src, void *dst, int64_t n, const float *importance);
void qc_quantize_row_q3_k(const float *src, void *dst, int64_t n, const float *importance);
void qc_quantize_row_q4_k(const float *src, void *dst, int64_t n, const float *importance);
void qc_quantize_row_q5_k(const float *src, void *dst, int64_t n, const float *importance);
void qc_quantize_row_q6_k(const float *src, void *dst, int64_t n, const float *importance);

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

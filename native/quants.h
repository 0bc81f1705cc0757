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
#include "isa.h"

/* The public name of a kernel: plain in the scalar build, name_SUFFIX where a SIMD file compiles
 * the generic kernels again for its ISA (quants_avx2.c, quants_avx512.c define QC_ISA_SUFFIX). */
#define QC_ISA_CAT2(a, b) a##_##b
#define QC_ISA_CAT(a, b) QC_ISA_CAT2(a, b)
#ifdef QC_ISA_SUFFIX
#define QC_ISA_FN(name) QC_ISA_CAT(name, QC_ISA_SUFFIX)
#else
#define QC_ISA_FN(name) name
#endif

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
    qc_quantize_row_fn quantize_row[QC_ISA_COUNT]; /* the same bytes on every path (isa.h) */
    qc_dequantize_row_fn dequantize_row;
} qc_type_traits;

/* The type's quantizer on the active path. */
static inline qc_quantize_row_fn qc_quantizer(const qc_type_traits *t) { return t->quantize_row[qc_isa_active()]; }

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

/* n fp16 values → float, exactly (F16C where the active path has it). */
void qc_widen_f16(const qc_half *src, float *dst, int64_t n);

/* The same kernels on AVX2 and AVX-512 (the names for the reference algorithm of the legacy types
 * are hand-written; the rest are the generic C compiled for that ISA). */
#define QC_DECLARE_KERNELS(suffix)                                                                                          \
    void qc_quantize_row_q4_0_##suffix(const float *src, void *dst, int64_t n, const float *importance);                     \
    void qc_quantize_row_q4_1_##suffix(const float *src, void *dst, int64_t n, const float *importance);                     \
    void qc_quantize_row_q5_0_##suffix(const float *src, void *dst, int64_t n, const float *importance);                     \
    void qc_quantize_row_q5_1_##suffix(const float *src, void *dst, int64_t n, const float *importance);                     \
    void qc_quantize_row_q8_0_##suffix(const float *src, void *dst, int64_t n, const float *importance);                     \
    void qc_quantize_row_q2_k_##suffix##_generic(const float *src, void *dst, int64_t n, const float *importance);           \
    void qc_quantize_row_q3_k_##suffix##_generic(const float *src, void *dst, int64_t n, const float *importance);           \
    void qc_quantize_row_q4_k_##suffix##_generic(const float *src, void *dst, int64_t n, const float *importance);           \
    void qc_quantize_row_q5_k_##suffix##_generic(const float *src, void *dst, int64_t n, const float *importance);           \
    void qc_quantize_row_q6_k_##suffix##_generic(const float *src, void *dst, int64_t n, const float *importance);           \
    void qc_widen_f16_##suffix(const uint16_t *src, float *dst, int64_t n);
#if QC_HAVE_X86_SIMD
QC_DECLARE_KERNELS(avx2)
QC_DECLARE_KERNELS(avx512)
#endif

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

/* Weighted Q4_0/Q5_0/Q4_1/Q5_1 on part of a row, given the whole row's sigma2 (qc_row_sigma2):
 * what the row's quantizer writes for those blocks. Returns -1 for another type. */
int qc_quantize_part_weighted(int type, const float *src, void *dst, int64_t n, const float *importance, float sigma2);
float qc_row_sigma2(const float *x, int64_t n);

#endif

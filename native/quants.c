/* The table of block types: one row per type, its geometry taken from the block structs of
 * blocks.h, everything else derived from it. */
#include "quants.h"

#if QC_HAVE_X86_SIMD
#define ON_EVERY_ISA(scalar, avx2, avx512) {scalar, avx2, avx512}
#else
#define ON_EVERY_ISA(scalar, avx2, avx512) {scalar, scalar, scalar}
#endif
#define LEGACY(name) ON_EVERY_ISA(qc_quantize_row_##name, qc_quantize_row_##name##_avx2, qc_quantize_row_##name##_avx512)
#define K_QUANT(name) ON_EVERY_ISA(qc_quantize_row_##name, qc_quantize_row_##name##_avx2_generic, qc_quantize_row_##name##_avx512_generic)

#define TYPE(id, name, block, elems, quantize, dequantize) \
    {id, name, elems, (int)sizeof(block), (int)_Alignof(block), quantize, dequantize}

static const qc_type_traits TRAITS[] = {
    TYPE(QC_Q4_0, "Q4_0", qc_block_q4_0, QC_QK, LEGACY(q4_0), qc_dequantize_row_q4_0),
    TYPE(QC_Q4_1, "Q4_1", qc_block_q4_1, QC_QK, LEGACY(q4_1), qc_dequantize_row_q4_1),
    TYPE(QC_Q5_0, "Q5_0", qc_block_q5_0, QC_QK, LEGACY(q5_0), qc_dequantize_row_q5_0),
    TYPE(QC_Q5_1, "Q5_1", qc_block_q5_1, QC_QK, LEGACY(q5_1), qc_dequantize_row_q5_1),
    TYPE(QC_Q8_0, "Q8_0", qc_block_q8_0, QC_QK, LEGACY(q8_0), qc_dequantize_row_q8_0),
    TYPE(QC_Q2_K, "Q2_K", qc_block_q2_k, QC_QK_K, K_QUANT(q2_k), qc_dequantize_row_q2_k),
    TYPE(QC_Q3_K, "Q3_K", qc_block_q3_k, QC_QK_K, K_QUANT(q3_k), qc_dequantize_row_q3_k),
    TYPE(QC_Q4_K, "Q4_K", qc_block_q4_k, QC_QK_K, K_QUANT(q4_k), qc_dequantize_row_q4_k),
    TYPE(QC_Q5_K, "Q5_K", qc_block_q5_k, QC_QK_K, K_QUANT(q5_k), qc_dequantize_row_q5_k),
    TYPE(QC_Q6_K, "Q6_K", qc_block_q6_k, QC_QK_K, K_QUANT(q6_k), qc_dequantize_row_q6_k),
};

#define N_TYPES (sizeof(TRAITS) / sizeof(TRAITS[0]))

const qc_type_traits *qc_traits(int type) {
    for (size_t i = 0; i < N_TYPES; i++) {
        if (TRAITS[i].type == type) return &TRAITS[i];
    }
    return NULL;
}

const qc_type_traits *qc_traits_at(size_t i) { return i < N_TYPES ? &TRAITS[i] : NULL; }

size_t qc_type_count(void) { return N_TYPES; }

void qc_widen_f16(const qc_half *src, float *dst, int64_t n) {
#if QC_HAVE_X86_SIMD
    if (qc_isa_active() == QC_ISA_AVX512) return qc_widen_f16_avx512(src, dst, n);
    if (qc_isa_active() == QC_ISA_AVX2) return qc_widen_f16_avx2(src, dst, n);
#endif
    for (int64_t i = 0; i < n; i++) dst[i] = qc_fp16_to_fp32(src[i]);
}

/* The table of block types: one row per type, everything else derived from it. */
#include "quants.h"

static const qc_type_traits TRAITS[] = {
    /* type     name    elems    bytes                                   quantize              dequantize */
    {QC_Q4_0, "Q4_0", QC_QK,   2 + QC_QK / 2,                          qc_quantize_row_q4_0, qc_dequantize_row_q4_0},
    {QC_Q4_1, "Q4_1", QC_QK,   2 * 2 + QC_QK / 2,                      qc_quantize_row_q4_1, qc_dequantize_row_q4_1},
    {QC_Q5_0, "Q5_0", QC_QK,   2 + 4 + QC_QK / 2,                      qc_quantize_row_q5_0, qc_dequantize_row_q5_0},
    {QC_Q5_1, "Q5_1", QC_QK,   2 * 2 + 4 + QC_QK / 2,                  qc_quantize_row_q5_1, qc_dequantize_row_q5_1},
    {QC_Q8_0, "Q8_0", QC_QK,   2 + QC_QK,                              qc_quantize_row_q8_0, qc_dequantize_row_q8_0},
    {QC_Q2_K, "Q2_K", QC_QK_K, QC_QK_K / 16 + QC_QK_K / 4 + 2 * 2,     qc_quantize_row_q2_k, qc_dequantize_row_q2_k},
    {QC_Q3_K, "Q3_K", QC_QK_K, QC_QK_K / 8 + QC_QK_K / 4 + 12 + 2,     qc_quantize_row_q3_k, qc_dequantize_row_q3_k},
    {QC_Q4_K, "Q4_K", QC_QK_K, 2 * 2 + 12 + QC_QK_K / 2,               qc_quantize_row_q4_k, qc_dequantize_row_q4_k},
    {QC_Q5_K, "Q5_K", QC_QK_K, 2 * 2 + 12 + QC_QK_K / 8 + QC_QK_K / 2, qc_quantize_row_q5_k, qc_dequantize_row_q5_k},
    {QC_Q6_K, "Q6_K", QC_QK_K, QC_QK_K / 2 + QC_QK_K / 4 + QC_QK_K / 16 + 2, qc_quantize_row_q6_k, qc_dequantize_row_q6_k},
};

const qc_type_traits *qc_traits(int type) {
    for (size_t i = 0; i < sizeof(TRAITS) / sizeof(TRAITS[0]); i++) {
        if (TRAITS[i].type == type) return &TRAITS[i];
    }
    return NULL;
}

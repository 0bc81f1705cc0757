/* ggml's block layouts (ggml-common.h), the one source of truth for block geometry: the type table
 * in quants.c takes each type's elements and bytes from these structs, and qconvert.quant.kernels
 * checks that table against gguf's GGML_QUANT_SIZES at import.
 *
 * Every field is bytes or a 2-byte half, so there is no padding; the assertions pin the sizes
 * ggml-common.h asserts for block_q4_0 ... block_q6_K. Halves are stored in host order, as ggml
 * does (GGUF files are little-endian, and so is every host qconvert builds for).
 */
#ifndef QCONVERT_BLOCKS_H
#define QCONVERT_BLOCKS_H

#include <stdint.h>

#include "fp16.h"

#define QC_QK 32    /* elements per block of the legacy types */
#define QC_QK_K 256 /* elements per super-block of the k-quants */

/* ---- legacy blocks: 32 values each ---- */

typedef struct {
    qc_half d;               /* scale: x ≈ d·(q - 8) */
    uint8_t qs[QC_QK / 2];   /* code j in the low nibble of byte j, code j+16 in the high one */
} qc_block_q4_0;

typedef struct {
    qc_half d, m;            /* x ≈ d·q + m */
    uint8_t qs[QC_QK / 2];
} qc_block_q4_1;

typedef struct {
    qc_half d;               /* x ≈ d·(q - 16) */
    uint8_t qh[4];           /* fifth bit of code j: bit j of this little-endian uint32 */
    uint8_t qs[QC_QK / 2];
} qc_block_q5_0;

typedef struct {
    qc_half d, m;            /* x ≈ d·q + m */
    uint8_t qh[4];
    uint8_t qs[QC_QK / 2];
} qc_block_q5_1;

typedef struct {
    qc_half d;               /* x ≈ d·q */
    int8_t qs[QC_QK];
} qc_block_q8_0;

/* ---- k-quant super-blocks: 256 values each ---- */

typedef struct {
    uint8_t scales[QC_QK_K / 16]; /* low nibble: sub-block scale, high nibble: sub-block min */
    uint8_t qs[QC_QK_K / 4];      /* 2-bit codes */
    qc_half d, dmin;
} qc_block_q2_k;

typedef struct {
    uint8_t hmask[QC_QK_K / 8]; /* third bit of each code */
    uint8_t qs[QC_QK_K / 4];    /* low 2 bits of each code */
    uint8_t scales[12];         /* 16 signed 6-bit scales, offset by 32 */
    qc_half d;
} qc_block_q3_k;

typedef struct {
    qc_half d, dmin;
    uint8_t scales[12]; /* 8 6-bit scales and 8 6-bit mins */
    uint8_t qs[QC_QK_K / 2];
} qc_block_q4_k;

typedef struct {
    qc_half d, dmin;
    uint8_t scales[12];
    uint8_t qh[QC_QK_K / 8]; /* fifth bit of each code */
    uint8_t qs[QC_QK_K / 2];
} qc_block_q5_k;

typedef struct {
    uint8_t ql[QC_QK_K / 2]; /* low 4 bits of each code */
    uint8_t qh[QC_QK_K / 4]; /* high 2 bits of each code */
    int8_t scales[QC_QK_K / 16];
    qc_half d;
} qc_block_q6_k;

_Static_assert(sizeof(qc_block_q4_0) == 18, "block_q4_0 is 18 bytes");
_Static_assert(sizeof(qc_block_q4_1) == 20, "block_q4_1 is 20 bytes");
_Static_assert(sizeof(qc_block_q5_0) == 22, "block_q5_0 is 22 bytes");
_Static_assert(sizeof(qc_block_q5_1) == 24, "block_q5_1 is 24 bytes");
_Static_assert(sizeof(qc_block_q8_0) == 34, "block_q8_0 is 34 bytes");
_Static_assert(sizeof(qc_block_q2_k) == 84, "block_q2_K is 84 bytes");
_Static_assert(sizeof(qc_block_q3_k) == 110, "block_q3_K is 110 bytes");
_Static_assert(sizeof(qc_block_q4_k) == 144, "block_q4_K is 144 bytes");
_Static_assert(sizeof(qc_block_q5_k) == 176, "block_q5_K is 176 bytes");
_Static_assert(sizeof(qc_block_q6_k) == 210, "block_q6_K is 210 bytes");

#endif

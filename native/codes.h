/* The codes inside GGUF blocks and the affine map each block gives them, for rounding weights on
 * a block's grid one column at a time (GPTQ inside the block formats, qconvert/blockq).
 *
 * Every block type dequantizes element i of a row as value = s_i·(code_i − zero) + o_i: code_i the
 * element's unsigned code (0 .. 2^bits−1), zero a per-type constant, s_i and o_i the scale and
 * offset of its (sub-)block, from the block's fp16 scales and its 4-, 6- or 8-bit sub-block
 * scales and mins. This file reads those three out of blocks and writes new codes into blocks
 * without touching their scales. Plain C11.
 */
#ifndef QC_CODES_H
#define QC_CODES_H

#include <stdint.h>

typedef struct {
    int type;
    int bits; /* codes are 0 .. 2^bits − 1 */
    int zero; /* value = s·(code − zero) + o */
} qc_code_info;

/* The code layout of a block type, or NULL for a type without one here. */
const qc_code_info *qc_code_info_of(int type);

/* For the n elements (whole blocks) of `blocks`: each one's code, and its s and o such that
 * s·(float)(code − zero) + o is exactly what the type's dequantizer gives. */
void qc_block_codes(int type, const void *blocks, int64_t n, uint8_t *codes, float *s, float *o);

/* Store n codes (each below 2^bits) into `blocks` in place; the scales stay as they are. */
void qc_block_set_codes(int type, void *blocks, int64_t n, const uint8_t *codes);

#endif

/* Codes in and out of GGUF blocks (codes.h). Where each element's code bits sit is written once
 * per type (code_bits); the scales are read as the dequantizers in quants_legacy.c and
 * quants_k.c read them, so s·(code − zero) + o repeats their float operations. */
#include "codes.h"

#include <string.h>

#include "blocks.h"
#include "fp16.h"
#include "quants.h"

static const qc_code_info INFO[] = {
    {QC_Q4_0, 4, 8}, {QC_Q4_1, 4, 0}, {QC_Q5_0, 5, 16}, {QC_Q5_1, 5, 0}, {QC_Q8_0, 8, 128},
    {QC_Q2_K, 2, 0}, {QC_Q3_K, 3, 4}, {QC_Q4_K, 4, 0},  {QC_Q5_K, 5, 0}, {QC_Q6_K, 6, 32},
};

const qc_code_info *qc_code_info_of(int type) {
    for (size_t i = 0; i < sizeof INFO / sizeof INFO[0]; i++)
        if (INFO[i].type == type) return &INFO[i];
    return NULL;
}

/* A run of a code's bits inside its block: `width` bits at bit `shift` of byte `byte`. */
typedef struct {
    int byte, shift, width;
} bit_run;

/* Where the code of element e of a block lies: its low bits in *lo, its high bits (if the type
 * splits them off) in *hi (width 0 if not). */
static void code_bits(int type, int e, bit_run *lo, bit_run *hi) {
    *lo = *hi = (bit_run){0, 0, 0}; /* every type below sets lo: callers check the type first */
    switch (type) {
    case QC_Q4_0: case QC_Q4_1: case QC_Q5_0: case QC_Q5_1: {
        /* nibbles: byte j holds elements j (low) and j+16 (high); Q5's fifth bits in a uint32 */
        const int qs = type == QC_Q4_0 ? 2 : type == QC_Q4_1 ? 4 : type == QC_Q5_0 ? 6 : 8;
        *lo = (bit_run){qs + e % 16, 4 * (e / 16), 4};
        if (type == QC_Q5_0 || type == QC_Q5_1) *hi = (bit_run){qs - 4 + e / 8, e % 8, 1};
        return;
    }
    case QC_Q8_0:
        *lo = (bit_run){2 + e, 0, 8};
        return;
    case QC_Q2_K: case QC_Q3_K: {
        /* 2 low bits: per 128 elements, byte r%32 at bit 2·(r/32); Q3_K's third bit in hmask[e%32] bit e/32 */
        const int qs = type == QC_Q2_K ? 16 : 32, r = e % 128;
        *lo = (bit_run){qs + 32 * (e / 128) + r % 32, 2 * (r / 32), 2};
        if (type == QC_Q3_K) *hi = (bit_run){e % 32, e / 32, 1};
        return;
    }
    case QC_Q4_K: case QC_Q5_K: {
        /* nibbles: per 64 elements, byte r%32 (low nibble r < 32, high nibble r ≥ 32); Q5_K's fifth bit in qh[r%32] bit 2c + r/32 */
        const int qs = type == QC_Q4_K ? 16 : 48, c = e / 64, r = e % 64;
        *lo = (bit_run){qs + 32 * c + r % 32, 4 * (r / 32), 4};
        if (type == QC_Q5_K) *hi = (bit_run){16 + r % 32, 2 * c + r / 32, 1};
        return;
    }
    case QC_Q6_K: {
        /* per 128 elements, quarter s = r/32, l = r%32: low nibble in ql[l + 32·(s%2)] at bit 4·(s/2), top two bits in qh[l] at bit 2s */
        const int h = e / 128, r = e % 128, s = r / 32, l = r % 32;
        *lo = (bit_run){64 * h + l + 32 * (s % 2), 4 * (s / 2), 4};
        *hi = (bit_run){128 + 32 * h + l, 2 * s, 2};
        return;
    }
    }
}

static inline int get_bits(const uint8_t *b, bit_run r) { return (b[r.byte] >> r.shift) & ((1 << r.width) - 1); }

static inline void put_bits(uint8_t *b, bit_run r, int v) {
    const int mask = ((1 << r.width) - 1) << r.shift;
    b[r.byte] = (uint8_t)((b[r.byte] & ~mask) | ((v << r.shift) & mask));
}

/* Q8_0 stores the signed code − 128: flipping the top bit converts between the two. */
static inline int stored_to_code(int type, int v) { return type == QC_Q8_0 ? v ^ 0x80 : v; }

static void k4_scale_min(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static int q3_scale(int j, const uint8_t *q) {
    const int lo = j < 8 ? (q[j] & 0xF) : (q[j - 8] >> 4);
    const int hi = (q[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* s and o of the elements of one block, as its dequantizer computes them. */
static void block_affine(int type, const uint8_t *b, int elems, float *s, float *o) {
    for (int e = 0; e < elems; e++) o[e] = 0.0f;
    switch (type) {
    case QC_Q4_0: case QC_Q5_0: case QC_Q8_0: case QC_Q4_1: case QC_Q5_1: {
        qc_half d, m;
        memcpy(&d, b, 2);
        for (int e = 0; e < elems; e++) s[e] = qc_fp16_to_fp32(d);
        if (type == QC_Q4_1 || type == QC_Q5_1) {
            memcpy(&m, b + 2, 2);
            for (int e = 0; e < elems; e++) o[e] = qc_fp16_to_fp32(m);
        }
        return;
    }
    case QC_Q2_K: {
        const qc_block_q2_k *x = (const qc_block_q2_k *)b;
        const float d = qc_fp16_to_fp32(x->d), dmin = qc_fp16_to_fp32(x->dmin);
        for (int e = 0; e < elems; e++) {
            s[e] = d * (float)(x->scales[e / 16] & 0xF);
            o[e] = -(dmin * (float)(x->scales[e / 16] >> 4));
        }
        return;
    }
    case QC_Q3_K: {
        const qc_block_q3_k *x = (const qc_block_q3_k *)b;
        const float d = qc_fp16_to_fp32(x->d);
        for (int e = 0; e < elems; e++) s[e] = d * (float)q3_scale(e / 16, x->scales);
        return;
    }
    case QC_Q4_K: case QC_Q5_K: {
        qc_half dh, dminh;
        memcpy(&dh, b, 2);
        memcpy(&dminh, b + 2, 2);
        const float d = qc_fp16_to_fp32(dh), dmin = qc_fp16_to_fp32(dminh);
        for (int e = 0; e < elems; e++) {
            int sc, m;
            k4_scale_min(e / 32, b + 4, &sc, &m);
            s[e] = d * (float)sc;
            o[e] = -(dmin * (float)m);
        }
        return;
    }
    case QC_Q6_K: {
        const qc_block_q6_k *x = (const qc_block_q6_k *)b;
        const float d = qc_fp16_to_fp32(x->d);
        /* element e = 128h + 32s + l belongs to the scale 8h + 2s + l/16 */
        for (int e = 0; e < elems; e++) s[e] = d * (float)x->scales[8 * (e / 128) + 2 * ((e % 128) / 32) + (e % 32) / 16];
        return;
    }
    }
}

void qc_block_codes(int type, const void *blocks, int64_t n, uint8_t *codes, float *s, float *o) {
    const qc_type_traits *t = qc_traits(type);
    const uint8_t *b = (const uint8_t *)blocks;
    for (int64_t i0 = 0; i0 < n; i0 += t->block_elems, b += t->block_bytes) {
        block_affine(type, b, t->block_elems, s + i0, o + i0);
        for (int e = 0; e < t->block_elems; e++) {
            bit_run lo, hi;
            code_bits(type, e, &lo, &hi);
            int v = get_bits(b, lo);
            if (hi.width) v |= get_bits(b, hi) << lo.width;
            codes[i0 + e] = (uint8_t)stored_to_code(type, v);
        }
    }
}

void qc_block_set_codes(int type, void *blocks, int64_t n, const uint8_t *codes) {
    const qc_type_traits *t = qc_traits(type);
    uint8_t *b = (uint8_t *)blocks;
    for (int64_t i0 = 0; i0 < n; i0 += t->block_elems, b += t->block_bytes) {
        for (int e = 0; e < t->block_elems; e++) {
            bit_run lo, hi;
            code_bits(type, e, &lo, &hi);
            const int v = stored_to_code(type, codes[i0 + e]);
            put_bits(b, lo, v);
            if (hi.width) put_bits(b, hi, v >> lo.width);
        }
    }
}

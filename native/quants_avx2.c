/* The quantizers on AVX2 (with FMA and F16C available, but no fused multiply-add is ever used:
 * the build's -ffp-contract=off keeps a*b+c two roundings, as the reference).
 *
 * Three parts, all byte-identical to the scalar path (isa.h):
 * - the generic C kernels (quants_legacy.c, quants_k.c) compiled again for AVX2: their lockstep
 *   lanes (groups of a super-block, candidates of a fit) vectorize 8 wide instead of 4;
 * - hand-written reference kernels of the legacy types (legacy_simd.h, primitives below);
 * - f16 → f32 widening (F16C), for the file engine.
 * Compiled for AVX2 by the pragma, so the extension builds anywhere and runs these only on a CPU
 * that has them (qc_isa_supported).
 */
#include "isa.h"
#if QC_HAVE_X86_SIMD
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,popcnt")
#include <immintrin.h>

#define QC_ISA_SUFFIX avx2_generic
#include "quants_legacy.c"
#include "quants_k.c"
#undef QC_ISA_SUFFIX
#define QC_ISA_SUFFIX avx2

enum { QC_SIMD_G = 8 };

static inline __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline float hmin8(__m256 v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* All exact: max/min of finite values do not depend on the order taken. */
static inline __attribute__((always_inline)) void block_extremes(const float *x, float *amax, float *first, float *min, float *max) {
    const __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8), v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    const __m256 a0 = abs8(v0), a1 = abs8(v1), a2 = abs8(v2), a3 = abs8(v3);
    const float am = hmax8(_mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(a2, a3)));
    const __m256 m = _mm256_set1_ps(am);
    const uint32_t hits = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a0, m, _CMP_EQ_OQ)) |
                          (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a1, m, _CMP_EQ_OQ)) << 8 |
                          (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a2, m, _CMP_EQ_OQ)) << 16 |
                          (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a3, m, _CMP_EQ_OQ)) << 24;
    *amax = am;
    *first = x[__builtin_ctz(hits)]; /* hits has a bit: am is one of the |x| */
    *min = hmin8(_mm256_min_ps(_mm256_min_ps(v0, v1), _mm256_min_ps(v2, v3)));
    *max = hmax8(_mm256_max_ps(_mm256_max_ps(v0, v1), _mm256_max_ps(v2, v3)));
}

/* d, id = d ? 1/d : 0 and fp16(d) (and fp16(a), the min) for 8 blocks; the F16C conversion rounds
 * to nearest even, as qc_fp32_to_fp16. */
static inline __attribute__((always_inline)) void group_scales(const float *a, const float *b, float divisor, float *id,
                                                                uint16_t *d_half, uint16_t *m_half) {
    const __m256 va = _mm256_loadu_ps(a);
    const __m256 d = _mm256_div_ps(b ? _mm256_sub_ps(_mm256_loadu_ps(b), va) : va, _mm256_set1_ps(divisor));
    const __m256 nonzero = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_NEQ_OQ);
    _mm256_storeu_ps(id, _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), d), nonzero));
    _mm_storeu_si128((__m128i *)d_half, _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    if (b) _mm_storeu_si128((__m128i *)m_half, _mm256_cvtps_ph(va, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* cvttps2dq: truncation, and INT32_MIN for NaN and out-of-range values, as the reference's casts. */
static inline __m256i trunc8(__m256 v) { return _mm256_cvttps_epi32(v); }

/* The low byte of each int32 as a signed char (the reference's (int8_t) cast). */
static inline __m256i low_byte_signed8(__m256i i) { return _mm256_srai_epi32(_mm256_slli_epi32(i, 24), 24); }

/* 16 int32 in 0..255 (a: values 0-7, b: 8-15) → 16 bytes in order. */
static inline __m128i pack_bytes16(__m256i a, __m256i b) {
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
    return _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

/* Bit 4 of each of the 32 codes, code j at bit j: the Q5 types' qh. */
static inline uint32_t fifth_bits(const __m256i c[4]) {
    uint32_t bits = 0;
    for (int k = 0; k < 4; k++) bits |= (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(c[k], 27))) << (8 * k);
    return bits;
}

/* Nibbles of codes j and j+16 into byte j, and the fifth bits if qh. */
static inline void store_codes(const __m256i c[4], uint8_t *qs, uint8_t *qh) {
    const __m256i lo = _mm256_set1_epi32(0x0f);
    const __m256i r0 = _mm256_or_si256(_mm256_and_si256(c[0], lo), _mm256_slli_epi32(_mm256_and_si256(c[2], lo), 4));
    const __m256i r1 = _mm256_or_si256(_mm256_and_si256(c[1], lo), _mm256_slli_epi32(_mm256_and_si256(c[3], lo), 4));
    _mm_storeu_si128((__m128i *)qs, pack_bytes16(r0, r1));
    if (qh) {
        const uint32_t bits = fifth_bits(c);
        memcpy(qh, &bits, 4);
    }
}

/* MIN(top, (int8_t)(x*id + offset)) */
static inline __attribute__((always_inline)) void block_codes_sym(const float *x, float id, float offset, int top, uint8_t *qs, uint8_t *qh) {
    const __m256 vid = _mm256_set1_ps(id), voff = _mm256_set1_ps(offset);
    __m256i c[4];
    for (int k = 0; k < 4; k++) {
        const __m256 t = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid), voff);
        c[k] = _mm256_min_epi32(low_byte_signed8(trunc8(t)), _mm256_set1_epi32(top));
    }
    store_codes(c, qs, qh);
}

/* (x - min)*id + 0.5 truncated: MIN(15, (int8_t)...) for Q4_1 (clamp), (uint8_t)... for Q5_1. */
static inline __attribute__((always_inline)) void block_codes_asym(const float *x, float min, float id, int clamp, uint8_t *qs, uint8_t *qh) {
    const __m256 vid = _mm256_set1_ps(id), vmin = _mm256_set1_ps(min), half = _mm256_set1_ps(0.5f);
    __m256i c[4];
    for (int k = 0; k < 4; k++) {
        const __m256i i = trunc8(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + 8 * k), vmin), vid), half));
        c[k] = clamp ? _mm256_min_epi32(low_byte_signed8(i), _mm256_set1_epi32(15)) : i;
    }
    store_codes(c, qs, qh);
}

/* roundf(x*id) (halves away from zero) as an int8: from the truncation w, the exact fraction
 * t - w decides; for |t| ≥ 2^23 the fraction is 0, and inf/NaN stay so and convert to INT32_MIN,
 * whose low byte 0 the reference stores too. */
static inline void block_codes_q8(const float *x, float id, uint8_t *qs) {
    const __m256 vid = _mm256_set1_ps(id), one = _mm256_set1_ps(1.0f);
    __m256i c[4];
    for (int k = 0; k < 4; k++) {
        const __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid);
        const __m256 w = _mm256_round_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m256 frac = _mm256_sub_ps(t, w);
        __m256 r = _mm256_add_ps(w, _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), one));
        r = _mm256_sub_ps(r, _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(-0.5f), _CMP_LE_OQ), one));
        c[k] = _mm256_and_si256(trunc8(r), _mm256_set1_epi32(0xff));
    }
    _mm_storeu_si128((__m128i *)qs, pack_bytes16(c[0], c[1]));
    _mm_storeu_si128((__m128i *)(qs + 16), pack_bytes16(c[2], c[3]));
}

#include "legacy_simd.h"

/* ---- f16 → f32 for the file engine (exact) ---- */

void qc_widen_f16_avx2(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = qc_fp16_to_fp32(src[i]);
}

#endif

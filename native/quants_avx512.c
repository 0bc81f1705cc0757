/* The quantizers on AVX-512 (F, BW, VL, DQ): the same three parts as quants_avx2.c, 16 lanes wide,
 * byte-identical to the scalar path. No fused multiply-add (-ffp-contract=off, explicit mul, add).
 * The generic kernels get 512-bit vectors: a super-block's 16 group fits are one vector.
 */
#include "isa.h"
#if QC_HAVE_X86_SIMD
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")
#include <immintrin.h>

#define QC_ISA_SUFFIX avx512_generic
#include "quants_legacy.c"
#include "quants_k.c"
#undef QC_ISA_SUFFIX
#define QC_ISA_SUFFIX avx512

enum { QC_SIMD_G = 16 };

#define ROUND_NEAREST (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

static inline __attribute__((always_inline)) void block_extremes(const float *x, float *amax, float *first, float *min, float *max) {
    const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    const __m512 a0 = _mm512_abs_ps(v0), a1 = _mm512_abs_ps(v1);
    const float am = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
    const __m512 m = _mm512_set1_ps(am);
    const uint32_t hits = (uint32_t)_mm512_cmp_ps_mask(a0, m, _CMP_EQ_OQ) | (uint32_t)_mm512_cmp_ps_mask(a1, m, _CMP_EQ_OQ) << 16;
    *amax = am;
    *first = x[__builtin_ctz(hits)]; /* hits has a bit: am is one of the |x| */
    *min = _mm512_reduce_min_ps(_mm512_min_ps(v0, v1));
    *max = _mm512_reduce_max_ps(_mm512_max_ps(v0, v1));
}

static inline __attribute__((always_inline)) void group_scales(const float *a, const float *b, float divisor, float *id,
                                                                uint16_t *d_half, uint16_t *m_half) {
    const __m512 va = _mm512_loadu_ps(a);
    const __m512 d = _mm512_div_ps(b ? _mm512_sub_ps(_mm512_loadu_ps(b), va) : va, _mm512_set1_ps(divisor));
    const __mmask16 nonzero = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_OQ);
    _mm512_storeu_ps(id, _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(1.0f), d));
    _mm256_storeu_si256((__m256i *)d_half, _mm512_cvtps_ph(d, ROUND_NEAREST));
    if (b) _mm256_storeu_si256((__m256i *)m_half, _mm512_cvtps_ph(va, ROUND_NEAREST));
}

static inline __m512i low_byte_signed16(__m512i i) { return _mm512_srai_epi32(_mm512_slli_epi32(i, 24), 24); }

/* Nibbles of codes j and j+16 into byte j (vpmovdb keeps the low byte), and the fifth bits if qh. */
static inline void store_codes(__m512i c0, __m512i c1, uint8_t *qs, uint8_t *qh) {
    const __m512i lo = _mm512_set1_epi32(0x0f);
    const __m512i r = _mm512_or_si512(_mm512_and_si512(c0, lo), _mm512_slli_epi32(_mm512_and_si512(c1, lo), 4));
    _mm_storeu_si128((__m128i *)qs, _mm512_cvtepi32_epi8(r));
    if (qh) {
        const __m512i bit4 = _mm512_set1_epi32(0x10);
        const uint32_t bits = (uint32_t)_mm512_test_epi32_mask(c0, bit4) | (uint32_t)_mm512_test_epi32_mask(c1, bit4) << 16;
        memcpy(qh, &bits, 4);
    }
}

static inline __attribute__((always_inline)) void block_codes_sym(const float *x, float id, float offset, int top, uint8_t *qs, uint8_t *qh) {
    const __m512 vid = _mm512_set1_ps(id), voff = _mm512_set1_ps(offset);
    const __m512i vtop = _mm512_set1_epi32(top);
    const __m512 t0 = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(x), vid), voff);
    const __m512 t1 = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(x + 16), vid), voff);
    store_codes(_mm512_min_epi32(low_byte_signed16(_mm512_cvttps_epi32(t0)), vtop),
                _mm512_min_epi32(low_byte_signed16(_mm512_cvttps_epi32(t1)), vtop), qs, qh);
}

static inline __attribute__((always_inline)) void block_codes_asym(const float *x, float min, float id, int clamp, uint8_t *qs, uint8_t *qh) {
    const __m512 vid = _mm512_set1_ps(id), vmin = _mm512_set1_ps(min), half = _mm512_set1_ps(0.5f);
    __m512i c[2];
    for (int k = 0; k < 2; k++) {
        const __m512i i = _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + 16 * k), vmin), vid), half));
        c[k] = clamp ? _mm512_min_epi32(low_byte_signed16(i), _mm512_set1_epi32(15)) : i;
    }
    store_codes(c[0], c[1], qs, qh);
}

/* roundf(x*id) as in quants_avx2.c's block_codes_q8. */
static inline void block_codes_q8(const float *x, float id, uint8_t *qs) {
    const __m512 vid = _mm512_set1_ps(id), one = _mm512_set1_ps(1.0f);
    for (int k = 0; k < 2; k++) {
        const __m512 t = _mm512_mul_ps(_mm512_loadu_ps(x + 16 * k), vid);
        const __m512 w = _mm512_roundscale_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m512 frac = _mm512_sub_ps(t, w);
        __m512 r = _mm512_mask_add_ps(w, _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ), w, one);
        r = _mm512_mask_sub_ps(r, _mm512_cmp_ps_mask(frac, _mm512_set1_ps(-0.5f), _CMP_LE_OQ), r, one);
        _mm_storeu_si128((__m128i *)(qs + 16 * k), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(r)));
    }
}

#include "legacy_simd.h"

void qc_widen_f16_avx512(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    for (; i < n; i++) dst[i] = qc_fp16_to_fp32(src[i]);
}
#endif

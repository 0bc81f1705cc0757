/* IEEE half precision and the rounding helpers every quantizer shares. */
#ifndef QCONVERT_FP16_H
#define QCONVERT_FP16_H

#include <stdint.h>
#include <string.h>

typedef uint16_t qc_half;

/* fp32 → fp16, round to nearest even, as ggml's software and F16C paths do. */
static inline qc_half qc_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t abs = x & 0x7fffffffu;
    if (abs > 0x7f800000u) return (qc_half)(sign | 0x7e00u); /* NaN */
    if (abs >= 0x47800000u) return (qc_half)(sign | 0x7c00u); /* overflow → inf (rounding handled below for < 65520) */
    if (abs < 0x38800000u) {                                  /* subnormal or zero in fp16 */
        if (abs < 0x33000000u) return (qc_half)sign;          /* below half the smallest subnormal → ±0 */
        const uint32_t mant = (abs & 0x007fffffu) | 0x00800000u;
        const int shift = 126 - (int)(abs >> 23);             /* value = mant·2^(E-150); units of 2^-24 */
        uint32_t h = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1u);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) h++;
        return (qc_half)(sign | h);
    }
    uint32_t h = ((abs - 0x38000000u) >> 13);                  /* rebias exponent 127 → 15 */
    const uint32_t rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;   /* may carry into the exponent: correct */
    return (qc_half)(sign | h);
}

/* fp16 → fp32, exact. */
static inline float qc_fp16_to_fp32(qc_half h) {
    const uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t exp = ((uint32_t)h >> 10) & 0x1fu;
    uint32_t mant = (uint32_t)h & 0x3ffu;
    uint32_t x;
    if (exp == 0x1fu) {
        x = sign | 0x7f800000u | (mant << 13);
    } else if (exp == 0) {
        if (mant == 0) {
            x = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { e++; mant <<= 1; } while (!(mant & 0x400u));
            x = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else {
        x = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* Round to nearest, ties to even, by the 1.5·2^23 trick (valid for |x| ≤ 4194303), as
 * ggml-quants.c's nearest_int does; the addition must happen in float. */
static inline int qc_nearest_int(float fval) {
    float val = fval + 12582912.f;
    int32_t i;
    memcpy(&i, &val, 4);
    return (i & 0x007fffff) - 0x00400000;
}

#endif

/* XᵀX of bfloat16 rows on AVX-512 BF16 (gram.h).
 *
 * VDPBF16PS multiplies pairs of bfloat16 exactly and adds both products to a float32 lane, so the
 * reduction runs over pairs of rows: rows 2p and 2p+1 are packed into one row of 32-bit lanes (the
 * lower half row 2p's value), a block of KC packed rows at a time, per thread. A tile of MR rows of
 * h by up to NV·16 columns keeps its sums in registers over the block, then adds them to h. Each
 * thread owns every `threads`-th tile row (in a zigzag, so that the triangle's long and short rows
 * even out) and packs the blocks it reads itself: no barrier, and packing costs 1/MR of the dot
 * products per thread at worst.
 */
#include "gram.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "isa.h"

enum { MR = 8, NV = 3, LANES = 16, MAX_THREADS = 64 };

int qc_gram_bf16_supported(void) {
#if QC_HAVE_X86_SIMD
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

#if QC_HAVE_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512bf16")
#include <immintrin.h>

typedef struct {
    const uint16_t *x;
    int64_t n, d, dp, kc; /* dp: d rounded up to whole vectors; kc: packed rows per block */
    float *h;
    int thread, threads, failed;
    pthread_t tid;
} gram_job;

/* The lanes of columns c0..c0+15 that lie in [lo, hi). */
static inline __mmask16 lanes_between(int64_t c0, int64_t lo, int64_t hi) {
    const int64_t a = lo > c0 ? lo - c0 : 0, b = hi - c0 < LANES ? hi - c0 : LANES;
    if (a >= b) return 0;
    return (__mmask16)(((1u << b) - 1u) & ~((1u << a) - 1u));
}

/* h rows i0..i0+MR-1, columns j0..j0+nv·16-1 (those in the upper triangle and inside d) += the
 * block's dot products. p: rows packed row pairs of dp lanes each. */
static inline __attribute__((always_inline)) void tile(const uint32_t *p, int64_t rows, int64_t dp, int64_t i0, int64_t j0, int nv, float *h,
                                                       int64_t d) {
    __m512 acc[MR][NV];
    for (int m = 0; m < MR; m++)
        for (int v = 0; v < nv; v++) acc[m][v] = _mm512_setzero_ps();
    for (int64_t r = 0; r < rows; r++) {
        const uint32_t *row = p + r * dp;
        __m512i b[NV];
        for (int v = 0; v < nv; v++) b[v] = _mm512_loadu_si512((const void *)(row + j0 + v * LANES));
        for (int m = 0; m < MR; m++) {
            const __m512i a = _mm512_set1_epi32((int)row[i0 + m]);
            for (int v = 0; v < nv; v++) acc[m][v] = _mm512_dpbf16_ps(acc[m][v], (__m512bh)a, (__m512bh)b[v]);
        }
    }
    for (int m = 0; m < MR && i0 + m < d; m++) {
        float *hrow = h + (i0 + m) * d;
        for (int v = 0; v < nv; v++) {
            const int64_t c0 = j0 + v * LANES;
            const __mmask16 k = lanes_between(c0, i0 + m, d);
            if (!k) continue;
            _mm512_mask_storeu_ps(hrow + c0, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, hrow + c0), acc[m][v]));
        }
    }
}

/* Rows 2·first .. 2·(first+rows)-1 of x as `rows` packed rows of dp lanes (a missing odd row and
 * the lanes past d are zero). */
static void pack_pairs(const gram_job *g, int64_t first, int64_t rows, uint32_t *out) {
    for (int64_t r = 0; r < rows; r++) {
        const int64_t t = 2 * (first + r);
        const uint16_t *lo = g->x + t * g->d, *hi = t + 1 < g->n ? lo + g->d : NULL;
        uint32_t *dst = out + r * g->dp;
        if (hi)
            for (int64_t i = 0; i < g->d; i++) dst[i] = (uint32_t)lo[i] | (uint32_t)hi[i] << 16;
        else
            for (int64_t i = 0; i < g->d; i++) dst[i] = lo[i];
        memset(dst + g->d, 0, (size_t)(g->dp - g->d) * sizeof *dst);
    }
}

/* Whether tile row `it` belongs to thread t of `threads` (zigzag over rounds of `threads` rows). */
static int owns(int64_t it, int t, int threads) {
    const int64_t round = it / threads, pos = it % threads;
    return (round % 2 == 0 ? pos : threads - 1 - pos) == t;
}

static void *gram_work(void *arg) {
    gram_job *g = arg;
    uint32_t *packed = malloc((size_t)(g->kc * g->dp) * sizeof *packed);
    if (!packed) {
        g->failed = 1;
        return NULL;
    }
    const int64_t pairs = (g->n + 1) / 2, tile_rows = (g->d + MR - 1) / MR;
    for (int64_t first = 0; first < pairs; first += g->kc) {
        const int64_t rows = pairs - first < g->kc ? pairs - first : g->kc;
        pack_pairs(g, first, rows, packed);
        for (int64_t it = 0; it < tile_rows; it++) {
            if (!owns(it, g->thread, g->threads)) continue;
            const int64_t i0 = it * MR;
            for (int64_t j0 = i0 / LANES * LANES; j0 < g->d; j0 += NV * LANES) {
                const int64_t left = (g->dp - j0) / LANES;
                if (left >= 3)
                    tile(packed, rows, g->dp, i0, j0, 3, g->h, g->d);
                else if (left == 2)
                    tile(packed, rows, g->dp, i0, j0, 2, g->h, g->d);
                else
                    tile(packed, rows, g->dp, i0, j0, 1, g->h, g->d);
            }
        }
    }
    free(packed);
    return NULL;
}

static int gram_run(const uint16_t *x, int64_t n, int64_t d, float *h, int threads) {
    gram_job jobs[MAX_THREADS];
    const int64_t dp = (d + LANES - 1) / LANES * LANES;
    int64_t kc = 131072 / dp; /* about 512 KiB of packed rows: the block stays in L2 across tiles */
    kc = kc < 32 ? 32 : (kc > 512 ? 512 : kc);
    const int64_t tile_rows = (d + MR - 1) / MR;
    if (threads > tile_rows) threads = (int)tile_rows;
    threads = threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
    int joined[MAX_THREADS] = {0};
    for (int t = 0; t < threads; t++) jobs[t] = (gram_job){x, n, d, dp, kc, h, t, threads, 0, 0};
    for (int t = 1; t < threads; t++) joined[t] = pthread_create(&jobs[t].tid, NULL, gram_work, &jobs[t]) == 0;
    int failed = 0;
    for (int t = 0; t < threads; t++) {
        if (joined[t])
            pthread_join(jobs[t].tid, NULL);
        else
            gram_work(&jobs[t]); /* this thread's own rows, and those of a thread that did not start */
        failed |= jobs[t].failed;
    }
    return failed ? -1 : 0;
}
#pragma GCC pop_options
#endif

int qc_gram_bf16_upper(const uint16_t *x, int64_t n, int64_t d, float *h, int threads) {
#if QC_HAVE_X86_SIMD
    if (!qc_gram_bf16_supported()) return -1;
    if (n <= 0 || d <= 0) return 0;
    return gram_run(x, n, d, h, threads);
#else
    return -1;
#endif
}

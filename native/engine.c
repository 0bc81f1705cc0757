/* The file engine (engine.h): chunks of rows read, quantized and written by a pool of threads. */
#define _GNU_SOURCE /* pread, pwrite */
#include "engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fp16.h"
#include "quants.h"

#define CHUNK_VALUES (1 << 18) /* values per chunk: 1 MiB of float, a few ms of work */
#define MAX_THREADS 256

typedef struct {
    int job;
    int64_t row_begin, row_end;
} chunk;

typedef struct {
    qc_engine *e;
    pthread_t tid;
    qc_engine_phases phases;
    qc_engine_result result; /* this worker's first error */
    int64_t result_chunk;    /* and its chunk, INT64_MAX if none */
} worker;

struct qc_engine {
    int in_fd, out_fd;
    const qc_tensor_job *jobs;
    chunk *chunks;
    int64_t n_chunks;
    int64_t next_chunk;   /* atomic: the next chunk to take */
    int64_t stop_before;  /* atomic: no chunk from here on is taken (first failing chunk, or 0 when cancelled) */
    int64_t values_done;  /* atomic */
    size_t max_values;    /* the largest chunk, in values */
    int n_workers, running;
    int cancelled;
    pthread_mutex_t lock;
    pthread_cond_t all_done;
    worker workers[MAX_THREADS];
};

static size_t float_type_size(int type) { return type == QC_F32 ? 4 : 2; }

static size_t row_bytes(const qc_tensor_job *j) {
    const qc_type_traits *t = qc_traits(j->dst_type);
    return t ? (size_t)(j->n_per_row / t->block_elems) * (size_t)t->block_bytes : (size_t)j->n_per_row * float_type_size(j->dst_type);
}

/* ---- I/O: whole ranges, retried on short transfers and EINTR ---- */

static enum qc_engine_status read_all(int fd, void *buf, size_t n, int64_t offset, int *err) {
    uint8_t *p = buf;
    while (n > 0) {
        const ssize_t got = pread(fd, p, n, (off_t)offset);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            *err = errno;
            return QC_ENGINE_READ_ERROR;
        }
        if (got == 0) return QC_ENGINE_TRUNCATED;
        p += got;
        n -= (size_t)got;
        offset += got;
    }
    return QC_ENGINE_OK;
}

static enum qc_engine_status write_all(int fd, const void *buf, size_t n, int64_t offset, int *err) {
    const uint8_t *p = buf;
    while (n > 0) {
        const ssize_t put = pwrite(fd, p, n, (off_t)offset);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) {
            *err = put < 0 ? errno : ENOSPC; /* a write that makes no progress: the disk is full */
            return QC_ENGINE_WRITE_ERROR;
        }
        p += put;
        n -= (size_t)put;
        offset += put;
    }
    return QC_ENGINE_OK;
}

/* ---- conversions ---- */

static void to_float(int src_type, const void *src, float *dst, size_t n) {
    if (src_type == QC_F16) {
        qc_widen_f16(src, dst, (int64_t)n);
    } else if (src_type == QC_BF16) {
        const uint16_t *h = src;
        for (size_t i = 0; i < n; i++) {
            const uint32_t bits = (uint32_t)h[i] << 16;
            memcpy(&dst[i], &bits, 4);
        }
    } else {
        memcpy(dst, src, n * 4);
    }
}

/* f32 → the float output type: fp16 rounded to nearest even (numpy's cast, as the converter's), or
 * bf16 as ggml_compute_fp32_to_bf16 (NaN quieted, then nearest even). */
static void from_float(int dst_type, const float *src, void *dst, size_t n) {
    if (dst_type == QC_F32) {
        memcpy(dst, src, n * 4);
    } else if (dst_type == QC_F16) {
        uint16_t *h = dst;
        for (size_t i = 0; i < n; i++) h[i] = qc_fp32_to_fp16(src[i]);
    } else {
        uint16_t *h = dst;
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &src[i], 4);
            if ((u & 0x7fffffffu) > 0x7f800000u) u = (u & 0xffff0000u) | (64u << 16);
            h[i] = (uint16_t)(((uint64_t)u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
        }
    }
}

/* Index of the first NaN or Inf among n floats, or -1. The flag loop has no branch, so it vectorizes. */
static int64_t first_nonfinite(const float *x, size_t n) {
    const uint32_t *bits = (const uint32_t *)x;
    uint32_t any = 0;
    for (size_t i = 0; i < n; i++) any |= (bits[i] & 0x7f800000u) == 0x7f800000u;
    if (!any) return -1;
    for (size_t i = 0;; i++)
        if ((bits[i] & 0x7f800000u) == 0x7f800000u) return (int64_t)i;
}

/* ---- one chunk ---- */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Adds the seconds since *t to *phase and restarts *t. */
static void lap(double *phase, double *t) {
    const double t1 = now();
    *phase += t1 - *t;
    *t = t1;
}

typedef struct {
    uint8_t *src;  /* the chunk as read */
    float *values; /* as float */
    uint8_t *dst;  /* as written */
} buffers;

/* One chunk read, converted and written; its time added to *ph. */
static qc_engine_result do_chunk(const qc_engine *e, const chunk *c, buffers *b, qc_engine_phases *ph) {
    const qc_tensor_job *j = &e->jobs[c->job];
    qc_engine_result r = {.status = QC_ENGINE_OK, .tensor = c->job};
    double mark = now();
    const size_t n_rows = (size_t)(c->row_end - c->row_begin), n = n_rows * (size_t)j->n_per_row;
    const size_t src_size = float_type_size(j->src_type), out_row = row_bytes(j);
    r.status = read_all(e->in_fd, b->src, n * src_size, j->src_offset + c->row_begin * j->n_per_row * (int64_t)src_size, &r.err);
    lap(&ph->read, &mark);
    if (r.status != QC_ENGINE_OK) return r;
    const uint8_t *out = b->dst;
    const qc_type_traits *t = qc_traits(j->dst_type);
    if (t) {
        const float *x = j->src_type == QC_F32 ? (const float *)b->src : b->values;
        if (x != (const float *)b->src) to_float(j->src_type, b->src, b->values, n);
        const int64_t bad = first_nonfinite(x, n);
        lap(&ph->widen, &mark);
        if (bad >= 0) {
            r.status = QC_ENGINE_NONFINITE;
            r.row = c->row_begin + bad / j->n_per_row;
            r.column = bad % j->n_per_row;
            return r;
        }
        const qc_quantize_row_fn quantize = qc_quantizer(t);
        const int64_t rows_per_mat = j->n_rows / (j->n_mat > 0 ? j->n_mat : 1);
        for (size_t i = 0; i < n_rows; i++) {
            const int64_t row = c->row_begin + (int64_t)i;
            const float *w = j->importance ? j->importance + (row / rows_per_mat) * j->n_per_row : NULL;
            quantize(x + i * (size_t)j->n_per_row, b->dst + i * out_row, j->n_per_row, w);
        }
        if (j->importance && j->dst_type != QC_Q8_0) {
            /* The weighted fits can push a block's fp16 scale past its range on extreme weights;
             * llama-quantize validates its output and stops there, and so does this. */
            for (size_t i = 0; i < n_rows; i++) {
                t->dequantize_row(b->dst + i * out_row, b->values, j->n_per_row);
                if (first_nonfinite(b->values, (size_t)j->n_per_row) >= 0) {
                    r.status = QC_ENGINE_SCALE_OVERFLOW;
                    r.row = c->row_begin + (int64_t)i;
                    return r;
                }
            }
        }
    } else if (j->dst_type == j->src_type) {
        out = b->src; /* kept as it is */
    } else {
        to_float(j->src_type, b->src, b->values, n);
        from_float(j->dst_type, b->values, b->dst, n);
    }
    lap(&ph->quantize, &mark);
    r.status = write_all(e->out_fd, out, n_rows * out_row, j->dst_offset + c->row_begin * (int64_t)out_row, &r.err);
    lap(&ph->write, &mark);
    return r;
}

/* ---- the workers ---- */

static void *work(void *arg) {
    worker *w = arg;
    qc_engine *e = w->e;
    /* 64-byte aligned: the block structs need 2, the vector loads like more */
    buffers b = {aligned_alloc(64, (e->max_values * 4 + 63) & ~(size_t)63), aligned_alloc(64, (e->max_values * 4 + 63) & ~(size_t)63),
                 aligned_alloc(64, (e->max_values * 4 + 63) & ~(size_t)63)};
    if (!b.src || !b.values || !b.dst) {
        w->result.status = QC_ENGINE_NO_MEMORY;
        w->result_chunk = 0;
        __atomic_store_n(&e->stop_before, 0, __ATOMIC_SEQ_CST);
    }
    for (;;) {
        if (w->result.status != QC_ENGINE_OK) break;
        const int64_t k = __atomic_fetch_add(&e->next_chunk, 1, __ATOMIC_SEQ_CST);
        if (k >= e->n_chunks || k >= __atomic_load_n(&e->stop_before, __ATOMIC_SEQ_CST)) break;
        const chunk *c = &e->chunks[k];
        const qc_engine_result r = do_chunk(e, c, &b, &w->phases);
        if (r.status != QC_ENGINE_OK) {
            w->result = r;
            w->result_chunk = k;
            /* later chunks are not taken; earlier ones still run, so the first error in file order is found */
            int64_t cur = __atomic_load_n(&e->stop_before, __ATOMIC_SEQ_CST);
            while (k < cur && !__atomic_compare_exchange_n(&e->stop_before, &cur, k, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            }
            break;
        }
        __atomic_fetch_add(&e->values_done, (c->row_end - c->row_begin) * e->jobs[c->job].n_per_row, __ATOMIC_SEQ_CST);
    }
    free(b.src);
    free(b.values);
    free(b.dst);
    pthread_mutex_lock(&e->lock);
    if (--e->running == 0) pthread_cond_broadcast(&e->all_done);
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

/* The chunks of all jobs in file order; NULL if out of memory. */
static chunk *make_chunks(const qc_tensor_job *jobs, int n_jobs, int64_t *n_chunks, size_t *max_values) {
    int64_t count = 0;
    for (int i = 0; i < n_jobs; i++) {
        const int64_t rows = jobs[i].n_per_row >= CHUNK_VALUES ? 1 : CHUNK_VALUES / jobs[i].n_per_row;
        count += (jobs[i].n_rows + rows - 1) / rows;
    }
    chunk *chunks = malloc((size_t)(count > 0 ? count : 1) * sizeof *chunks);
    if (!chunks) return NULL;
    int64_t k = 0;
    *max_values = 1;
    for (int i = 0; i < n_jobs; i++) {
        const int64_t rows = jobs[i].n_per_row >= CHUNK_VALUES ? 1 : CHUNK_VALUES / jobs[i].n_per_row;
        for (int64_t r = 0; r < jobs[i].n_rows; r += rows) {
            chunks[k] = (chunk){i, r, r + rows < jobs[i].n_rows ? r + rows : jobs[i].n_rows};
            const size_t values = (size_t)(chunks[k].row_end - r) * (size_t)jobs[i].n_per_row;
            if (values > *max_values) *max_values = values;
            k++;
        }
    }
    *n_chunks = count;
    return chunks;
}

qc_engine *qc_engine_start(int in_fd, int out_fd, const qc_tensor_job *jobs, int n_jobs, int threads) {
    qc_engine *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->chunks = make_chunks(jobs, n_jobs, &e->n_chunks, &e->max_values);
    if (!e->chunks) {
        free(e);
        return NULL;
    }
    e->in_fd = in_fd;
    e->out_fd = out_fd;
    e->jobs = jobs;
    e->stop_before = INT64_MAX;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->all_done, NULL);
    threads = threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
    if (threads > e->n_chunks) threads = e->n_chunks > 0 ? (int)e->n_chunks : 1;
    pthread_mutex_lock(&e->lock);
    for (int i = 0; i < threads; i++) {
        worker *w = &e->workers[e->n_workers];
        *w = (worker){.e = e, .result = {.status = QC_ENGINE_OK}, .result_chunk = INT64_MAX};
        if (pthread_create(&w->tid, NULL, work, w) != 0) break;
        e->n_workers++;
        e->running++;
    }
    pthread_mutex_unlock(&e->lock);
    if (e->n_workers == 0) {
        pthread_mutex_destroy(&e->lock);
        pthread_cond_destroy(&e->all_done);
        free(e->chunks);
        free(e);
        return NULL;
    }
    return e;
}

int qc_engine_wait(qc_engine *e, int timeout_ms, int64_t *values_done) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&e->lock);
    while (e->running > 0 && pthread_cond_timedwait(&e->all_done, &e->lock, &until) == 0) {
    }
    const int done = e->running == 0;
    pthread_mutex_unlock(&e->lock);
    *values_done = __atomic_load_n(&e->values_done, __ATOMIC_SEQ_CST);
    return done;
}

void qc_engine_cancel(qc_engine *e) {
    __atomic_store_n(&e->stop_before, 0, __ATOMIC_SEQ_CST);
    e->cancelled = 1;
}

qc_engine_result qc_engine_finish(qc_engine *e) {
    qc_engine_result result = {.status = QC_ENGINE_OK};
    qc_engine_phases phases = {0, 0, 0, 0};
    int64_t first = INT64_MAX;
    for (int i = 0; i < e->n_workers; i++) {
        pthread_join(e->workers[i].tid, NULL);
        const qc_engine_phases *p = &e->workers[i].phases;
        phases = (qc_engine_phases){phases.read + p->read, phases.widen + p->widen, phases.quantize + p->quantize, phases.write + p->write};
        if (e->workers[i].result.status != QC_ENGINE_OK && e->workers[i].result_chunk < first) {
            first = e->workers[i].result_chunk;
            result = e->workers[i].result;
        }
    }
    if (result.status == QC_ENGINE_OK && e->cancelled) result.status = QC_ENGINE_CANCELLED;
    result.phases = phases;
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->all_done);
    free(e->chunks);
    free(e);
    return result;
}

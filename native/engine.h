/* The file engine: quantizes the tensors of a GGUF file straight from the input file into their
 * final place in the output file, on a pool of threads, with no Python in the loop.
 *
 * The caller (qconvert.quant.engine) has parsed and checked the input, written the output's header
 * and sized the output file; the engine fills in every tensor's data. Work is cut into chunks of
 * rows (about CHUNK_VALUES values, whole rows, never across tensors); each worker takes the next
 * chunk, reads it with pread, widens it to float, checks it, quantizes it and writes it with
 * pwrite at its offset, so reading, quantizing and writing of different chunks overlap and memory
 * is a few chunk buffers per thread. Rows are independent, so the bytes do not depend on the
 * thread count or the order chunks finish in.
 */
#ifndef QCONVERT_ENGINE_H
#define QCONVERT_ENGINE_H

#include <stdint.h>

/* ggml type ids of the float types (ggml.h); the block types are enum qc_type. */
enum { QC_F32 = 0, QC_F16 = 1, QC_BF16 = 30 };

typedef struct {
    int64_t src_offset; /* absolute byte offset of the tensor's data in the input file */
    int src_type;       /* QC_F32, QC_F16 or QC_BF16 */
    int dst_type;       /* a block type (quants.h), or QC_F32, QC_F16, QC_BF16 */
    int64_t n_rows, n_per_row;
    int64_t dst_offset; /* absolute byte offset of its data in the output file */
    /* NULL, or n_mat × n_per_row weights for the imatrix-weighted quantizers: the rows of matrix
     * (expert) i, rows [i·n_rows/n_mat, (i+1)·n_rows/n_mat), take the i-th n_per_row of them */
    const float *importance;
    int64_t n_mat;
} qc_tensor_job;

enum qc_engine_status {
    QC_ENGINE_OK,
    QC_ENGINE_NONFINITE,      /* a NaN or Inf in the input: tensor, row, column */
    QC_ENGINE_SCALE_OVERFLOW, /* a weighted fit's fp16 scale overflowed: tensor, row */
    QC_ENGINE_TRUNCATED,      /* the input ended inside a tensor: tensor */
    QC_ENGINE_READ_ERROR,     /* errno */
    QC_ENGINE_WRITE_ERROR,    /* errno */
    QC_ENGINE_NO_MEMORY,
    QC_ENGINE_CANCELLED,
};

/* Where the workers' time went, summed over them (thread-seconds). */
typedef struct {
    double read, widen, quantize, write;
} qc_engine_phases;

typedef struct {
    enum qc_engine_status status;
    int tensor;
    int64_t row, column;
    int err; /* errno */
    qc_engine_phases phases;
} qc_engine_result;

typedef struct qc_engine qc_engine;

/* Start `threads` workers on the jobs (which must stay valid until qc_engine_finish). NULL if out of
 * memory or no thread could start. */
qc_engine *qc_engine_start(int in_fd, int out_fd, const qc_tensor_job *jobs, int n_jobs, int threads);
/* Wait up to timeout_ms for the workers; 1 once they are all done (or stopped), else 0. *values_done:
 * the source values quantized so far. */
int qc_engine_wait(qc_engine *e, int timeout_ms, int64_t *values_done);
/* Ask the workers to stop after their current chunk. */
void qc_engine_cancel(qc_engine *e);
/* Join the workers, free the engine, and say how it went (the first error in file order). */
qc_engine_result qc_engine_finish(qc_engine *e);

#endif

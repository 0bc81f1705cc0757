/* qconvert._native: Python bindings for the block quantizers in quants.h.
 *
 * Works on buffers (numpy arrays from the Python side), releases the GIL, and splits rows over
 * POSIX threads. Rows are independent, so the output does not depend on the thread count.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "fp16.h"
#include "quants.h"

#define QC_MAX_THREADS 256

/* fp16 → fp32 for every bit pattern: an fp16 source is widened row by row through this table. */
static float f16_to_f32_table[1 << 16];

typedef struct {
    const qc_type_traits *traits;
    const void *src;
    int src_f16; /* src holds fp16 bit patterns instead of float32 */
    uint8_t *dst;
    const float *importance;
    int64_t n_per_row;
    int64_t row_begin, row_end;
    size_t row_bytes;
    int64_t bad_index; /* first non-finite element (flat index), or -1 */
    int status;        /* 0 ok; -1 kernel refused */
} job_t;

static void *quantize_rows(void *arg) {
    job_t *job = (job_t *)arg;
    float *widened = NULL;
    if (job->src_f16 && job->row_begin < job->row_end) {
        widened = malloc((size_t)job->n_per_row * sizeof(float));
        if (!widened) {
            job->status = -2;
            return NULL;
        }
    }
    for (int64_t r = job->row_begin; r < job->row_end; r++) {
        const float *row;
        if (widened) {
            const qc_half *h = (const qc_half *)job->src + r * job->n_per_row;
            for (int64_t i = 0; i < job->n_per_row; i++) widened[i] = f16_to_f32_table[h[i]];
            row = widened;
        } else {
            row = (const float *)job->src + r * job->n_per_row;
        }
        for (int64_t i = 0; i < job->n_per_row; i++) {
            if (!isfinite(row[i])) {
                job->bad_index = r * job->n_per_row + i;
                goto out;
            }
        }
        if (job->traits->quantize_row(row, job->dst + (size_t)r * job->row_bytes, job->n_per_row, job->importance) != 0) {
            job->status = -1;
            goto out;
        }
    }
out:
    free(widened);
    return NULL;
}

static const qc_type_traits *traits_or_error(int type) {
    const qc_type_traits *t = qc_traits(type);
    if (!t) PyErr_Format(PyExc_ValueError, "unsupported block type id %d", type);
    return t;
}

static int check_buffer(Py_buffer *b, Py_ssize_t need, const char *what) {
    if (b->len != need) {
        PyErr_Format(PyExc_ValueError, "%s buffer has %zd bytes, expected %zd", what, b->len, need);
        return -1;
    }
    return 0;
}

/* quantize_into(type, src, n_rows, n_per_row, dst, threads, importance=None, src_f16=False) */
static PyObject *quantize_into(PyObject *self, PyObject *args) {
    int type, threads, src_f16 = 0;
    long long n_rows, n_per_row;
    Py_buffer src = {0}, dst = {0}, imp = {0};
    PyObject *imp_obj = Py_None;
    (void)self;
    if (!PyArg_ParseTuple(args, "iy*LLw*i|Op", &type, &src, &n_rows, &n_per_row, &dst, &threads, &imp_obj, &src_f16)) return NULL;
    PyObject *result = NULL;
    const qc_type_traits *t = traits_or_error(type);
    if (!t) goto done;
    if (n_rows < 0 || n_per_row <= 0 || n_per_row % t->block_elems != 0) {
        PyErr_Format(PyExc_ValueError, "row length %lld is not a multiple of %s's block of %d", n_per_row, t->name, t->block_elems);
        goto done;
    }
    const size_t row_bytes = (size_t)(n_per_row / t->block_elems) * (size_t)t->block_bytes;
    if (check_buffer(&src, (Py_ssize_t)(n_rows * n_per_row * (src_f16 ? 2 : 4)), "source") || check_buffer(&dst, (Py_ssize_t)(n_rows * row_bytes), "destination")) goto done;
    if (imp_obj != Py_None) {
        if (PyObject_GetBuffer(imp_obj, &imp, PyBUF_SIMPLE) != 0) goto done;
        if (check_buffer(&imp, (Py_ssize_t)(n_per_row * 4), "importance")) goto done;
    }
    if (threads < 1) threads = 1;
    if (threads > QC_MAX_THREADS) threads = QC_MAX_THREADS;
    if (threads > n_rows) threads = n_rows > 0 ? (int)n_rows : 1;

    job_t jobs[QC_MAX_THREADS];
    pthread_t tids[QC_MAX_THREADS];
    int started[QC_MAX_THREADS] = {0};
    for (int i = 0; i < threads; i++) {
        jobs[i] = (job_t){t, src.buf, src_f16, (uint8_t *)dst.buf, imp.buf ? (const float *)imp.buf : NULL, n_per_row,
                          n_rows * i / threads, n_rows * (i + 1) / threads, row_bytes, -1, 0};
    }
    Py_BEGIN_ALLOW_THREADS
    for (int i = 1; i < threads; i++) started[i] = pthread_create(&tids[i], NULL, quantize_rows, &jobs[i]) == 0;
    quantize_rows(&jobs[0]);
    for (int i = 1; i < threads; i++) {
        if (started[i]) pthread_join(tids[i], NULL);
        else quantize_rows(&jobs[i]); /* could not start a thread: do its share here */
    }
    Py_END_ALLOW_THREADS

    for (int i = 0; i < threads; i++) {
        if (jobs[i].bad_index >= 0) {
            PyErr_Format(PyExc_FloatingPointError, "non-finite value at row %lld, column %lld",
                         (long long)(jobs[i].bad_index / n_per_row), (long long)(jobs[i].bad_index % n_per_row));
            goto done;
        }
        if (jobs[i].status == -2) {
            PyErr_NoMemory();
            goto done;
        }
        if (jobs[i].status != 0) {
            PyErr_Format(PyExc_NotImplementedError, "%s does not take importance weights yet", t->name);
            goto done;
        }
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    if (imp.obj) PyBuffer_Release(&imp);
    return result;
}

/* dequantize_into(type, src, n_values, dst) */
static PyObject *dequantize_into(PyObject *self, PyObject *args) {
    int type;
    long long n;
    Py_buffer src = {0}, dst = {0};
    (void)self;
    if (!PyArg_ParseTuple(args, "iy*Lw*", &type, &src, &n, &dst)) return NULL;
    PyObject *result = NULL;
    const qc_type_traits *t = traits_or_error(type);
    if (!t) goto done;
    if (n < 0 || n % t->block_elems != 0) {
        PyErr_Format(PyExc_ValueError, "%lld values are not whole %s blocks of %d", n, t->name, t->block_elems);
        goto done;
    }
    if (check_buffer(&src, (Py_ssize_t)(n / t->block_elems * t->block_bytes), "source") || check_buffer(&dst, (Py_ssize_t)(n * 4), "destination")) goto done;
    Py_BEGIN_ALLOW_THREADS
    t->dequantize_row(src.buf, (float *)dst.buf, n);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

/* block_info(type) -> (name, block_elems, block_bytes) */
static PyObject *block_info(PyObject *self, PyObject *args) {
    int type;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &type)) return NULL;
    const qc_type_traits *t = traits_or_error(type);
    return t ? Py_BuildValue("(sii)", t->name, t->block_elems, t->block_bytes) : NULL;
}

/* fp32_to_fp16_into(src, dst): the rounding every quantizer uses, exposed for tests. */
static PyObject *fp32_to_fp16_into(PyObject *self, PyObject *args) {
    Py_buffer src = {0}, dst = {0};
    (void)self;
    if (!PyArg_ParseTuple(args, "y*w*", &src, &dst)) return NULL;
    PyObject *result = NULL;
    if (check_buffer(&dst, src.len / 2, "destination") == 0) {
        const float *s = (const float *)src.buf;
        qc_half *d = (qc_half *)dst.buf;
        for (Py_ssize_t i = 0; i < src.len / 4; i++) d[i] = qc_fp32_to_fp16(s[i]);
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

static PyObject *abi_version(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyLong_FromLong(2);
}

static PyMethodDef methods[] = {
    {"quantize_into", quantize_into, METH_VARARGS, "quantize_into(type, src, n_rows, n_per_row, dst, threads, importance=None, src_f16=False)"},
    {"dequantize_into", dequantize_into, METH_VARARGS, "dequantize_into(type, src, n_values, dst)"},
    {"block_info", block_info, METH_VARARGS, "block_info(type) -> (name, block_elems, block_bytes)"},
    {"fp32_to_fp16_into", fp32_to_fp16_into, METH_VARARGS, "fp32_to_fp16_into(src, dst)"},
    {"abi_version", abi_version, METH_NOARGS, "ABI version of the native extension."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "qconvert._native", "qconvert's GGUF block quantizers.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    for (uint32_t h = 0; h < (1u << 16); h++) f16_to_f32_table[h] = qc_fp16_to_fp32((qc_half)h);
    return PyModule_Create(&module);
}

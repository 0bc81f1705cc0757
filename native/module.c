/* qconvert._native: Python bindings for the block quantizers in quants.h.
 *
 * Works on buffers (numpy arrays from the Python side), releases the GIL, and splits rows over
 * POSIX threads. Rows are independent, so the output does not depend on the thread count.
 *
 * The functions are public, so nothing the caller says is trusted: every size is computed with
 * overflow checks before any buffer length is compared with it, and every buffer's element
 * format, contiguity, alignment and length are checked here, each failure with its own message.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "codes.h"
#include "fp16.h"
#include "engine.h"
#include "gptq.h"
#include "gram.h"
#include "isa.h"
#include "quants.h"

#define QC_MAX_THREADS 256

/* ---- argument checks ------------------------------------------------------------------------ */

/* a·b for a, b ≥ 0, or -1 when the product does not fit in a Py_ssize_t. */
static Py_ssize_t checked_mul(Py_ssize_t a, Py_ssize_t b) {
    if (b != 0 && a > PY_SSIZE_T_MAX / b) return -1;
    return a * b;
}

/* A long long argument as a Py_ssize_t, or -1 with OverflowError (a negative one is the caller's
 * to reject, with its own message). */
static Py_ssize_t as_ssize(long long v, const char *what) {
    if (v > (long long)PY_SSIZE_T_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s %lld does not fit in a Py_ssize_t", what, v);
        return -1;
    }
    return (Py_ssize_t)v;
}

/* The element type a buffer must hold: struct-module code, item size and numpy's name for it. */
typedef struct {
    char code;
    Py_ssize_t itemsize;
    const char *dtype;
} elem_format;

static const elem_format FMT_F32 = {'f', 4, "float32"};
static const elem_format FMT_F16 = {'e', 2, "float16"};
static const elem_format FMT_U8 = {'B', 1, "uint8"};
static const elem_format FMT_U16 = {'H', 2, "uint16"};
static const elem_format FMT_I32 = {'i', 4, "int32"};

/* Whether a buffer's format string denotes `code` in native byte order and size: "f", "@f", "=f",
 * or "<f" on a little-endian host. NULL means unsigned bytes ("B"). */
static int format_is(const char *fmt, char code) {
    if (!fmt) return code == 'B';
    if (fmt[0] == '@' || fmt[0] == '=') fmt++;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    else if (fmt[0] == '<') fmt++;
#endif
    return fmt[0] == code && fmt[1] == '\0';
}

/* Get obj's buffer into view (writable if asked) and check that it is a C-contiguous run of
 * n_items elements of format f (any number if n_items < 0), aligned to `align` bytes. On failure
 * the view is released, the error names `what` and the problem, and -1 comes back. */
static int get_buffer(PyObject *obj, Py_buffer *view, int writable, elem_format f, Py_ssize_t n_items, Py_ssize_t align,
                      const char *what) {
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a buffer of %s (a numpy array), not %.100s", what, f.dtype, Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_RECORDS_RO) != 0) {
        view->obj = NULL;
        return -1;
    }
    if (writable && view->readonly) {
        PyErr_Format(PyExc_ValueError, "%s buffer is read-only", what);
    } else if (!format_is(view->format, f.code) || view->itemsize != f.itemsize) {
        PyErr_Format(PyExc_TypeError, "%s buffer holds items of format '%s' and size %zd, expected %s ('%c', size %zd)", what,
                     view->format ? view->format : "B", view->itemsize, f.dtype, f.code, f.itemsize);
    } else if (!PyBuffer_IsContiguous(view, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s buffer is not C-contiguous", what);
    } else if ((uintptr_t)view->buf % (uintptr_t)align != 0) {
        PyErr_Format(PyExc_ValueError, "%s buffer is not aligned to %zd bytes", what, align);
    } else if (n_items >= 0 && view->len / f.itemsize != n_items) {
        PyErr_Format(PyExc_ValueError, "%s buffer has %zd %s items, expected %zd", what, view->len / f.itemsize, f.dtype, n_items);
    } else {
        return 0;
    }
    PyBuffer_Release(view);
    view->obj = NULL;
    return -1;
}

static const qc_type_traits *traits_or_error(int type) {
    const qc_type_traits *t = qc_traits(type);
    if (!t) PyErr_Format(PyExc_ValueError, "unsupported block type id %d", type);
    return t;
}

/* ---- quantize_into ---------------------------------------------------------------------------- */

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
    int out_of_memory;
} job_t;

static void *quantize_rows(void *arg) {
    job_t *job = (job_t *)arg;
    float *widened = NULL;
    if (job->src_f16 && job->row_begin < job->row_end) {
        widened = malloc((size_t)job->n_per_row * sizeof(float));
        if (!widened) {
            job->out_of_memory = 1;
            return NULL;
        }
    }
    for (int64_t r = job->row_begin; r < job->row_end; r++) {
        const float *row;
        if (widened) {
            qc_widen_f16((const qc_half *)job->src + r * job->n_per_row, widened, job->n_per_row);
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
        qc_quantizer(job->traits)(row, job->dst + (size_t)r * job->row_bytes, job->n_per_row, job->importance);
    }
out:
    free(widened);
    return NULL;
}

/* Run the rows over `threads` threads; 0, or -1 with the error of the first failing job. */
static int run_jobs(const qc_type_traits *t, const void *src, int src_f16, uint8_t *dst, const float *importance,
                    Py_ssize_t n_rows, Py_ssize_t n_per_row, size_t row_bytes, int threads) {
    if (threads < 1) threads = 1;
    if (threads > QC_MAX_THREADS) threads = QC_MAX_THREADS;
    if (threads > n_rows) threads = n_rows > 0 ? (int)n_rows : 1;

    job_t jobs[QC_MAX_THREADS];
    pthread_t tids[QC_MAX_THREADS];
    int started[QC_MAX_THREADS] = {0};
    for (int i = 0; i < threads; i++) {
        jobs[i] = (job_t){t, src, src_f16, dst, importance, n_per_row, n_rows * i / threads, n_rows * (i + 1) / threads, row_bytes, -1, 0};
    }
    Py_BEGIN_ALLOW_THREADS
    for (int i = 1; i < threads; i++) started[i] = pthread_create(&tids[i], NULL, quantize_rows, &jobs[i]) == 0;
    quantize_rows(&jobs[0]);
    for (int i = 1; i < threads; i++) {
        if (started[i]) pthread_join(tids[i], NULL);
        else quantize_rows(&jobs[i]); /* could not start a thread: do its share here */
    }
    Py_END_ALLOW_THREADS

    for (int i = 0; i < threads; i++) { /* jobs in row order: the first bad row is reported */
        if (jobs[i].bad_index >= 0) {
            PyErr_Format(PyExc_FloatingPointError, "non-finite value at row %lld, column %lld",
                         (long long)(jobs[i].bad_index / n_per_row), (long long)(jobs[i].bad_index % n_per_row));
            return -1;
        }
        if (jobs[i].out_of_memory) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

/* quantize_into(type, src, n_rows, n_per_row, dst, threads, importance=None, src_f16=False):
 * src holds n_rows × n_per_row float32 values (float16 with src_f16), dst receives n_rows rows
 * of n_per_row / block_elems blocks (uint8), importance is None or n_per_row float32 weights. */
static PyObject *quantize_into(PyObject *self, PyObject *args) {
    int type, threads, src_f16 = 0;
    long long n_rows_arg, n_per_row_arg;
    PyObject *src_obj, *dst_obj, *imp_obj = Py_None;
    Py_buffer src = {0}, dst = {0}, imp = {0};
    (void)self;
    if (!PyArg_ParseTuple(args, "iOLLOi|Op", &type, &src_obj, &n_rows_arg, &n_per_row_arg, &dst_obj, &threads, &imp_obj, &src_f16)) return NULL;
    PyObject *result = NULL;
    const qc_type_traits *t = traits_or_error(type);
    if (!t) return NULL;
    if (n_rows_arg < 0) return PyErr_Format(PyExc_ValueError, "n_rows must not be negative, got %lld", n_rows_arg);
    if (n_per_row_arg <= 0) return PyErr_Format(PyExc_ValueError, "n_per_row must be positive, got %lld", n_per_row_arg);
    if (n_per_row_arg % t->block_elems != 0)
        return PyErr_Format(PyExc_ValueError, "row length %lld is not a multiple of %s's block of %d", n_per_row_arg, t->name, t->block_elems);
    const Py_ssize_t n_rows = as_ssize(n_rows_arg, "n_rows"), n_per_row = as_ssize(n_per_row_arg, "n_per_row");
    if (n_rows < 0 || n_per_row < 0) return NULL;
    const Py_ssize_t n_values = checked_mul(n_rows, n_per_row);
    const Py_ssize_t row_bytes = checked_mul(n_per_row / t->block_elems, t->block_bytes);
    const Py_ssize_t dst_bytes = row_bytes < 0 ? -1 : checked_mul(n_rows, row_bytes);
    if (n_values < 0 || dst_bytes < 0)
        return PyErr_Format(PyExc_OverflowError, "%lld rows of %lld values are more than a buffer can hold", n_rows_arg, n_per_row_arg);

    const elem_format src_fmt = src_f16 ? FMT_F16 : FMT_F32;
    if (get_buffer(src_obj, &src, 0, src_fmt, n_values, src_fmt.itemsize, "source") != 0) goto done;
    if (get_buffer(dst_obj, &dst, 1, FMT_U8, dst_bytes, t->block_align, "destination") != 0) goto done;
    if (imp_obj != Py_None) {
        if (get_buffer(imp_obj, &imp, 0, FMT_F32, n_per_row, FMT_F32.itemsize, "importance") != 0) goto done;
        const float *w = (const float *)imp.buf;
        for (Py_ssize_t i = 0; i < n_per_row; i++) {
            if (!isfinite(w[i])) {
                PyErr_Format(PyExc_ValueError, "importance weight at column %zd is not finite", i);
                goto done;
            }
        }
    }
    if (run_jobs(t, src.buf, src_f16, (uint8_t *)dst.buf, imp.obj ? (const float *)imp.buf : NULL, n_rows, n_per_row,
                 (size_t)row_bytes, threads) == 0)
        result = Py_NewRef(Py_None);
done:
    if (src.obj) PyBuffer_Release(&src);
    if (dst.obj) PyBuffer_Release(&dst);
    if (imp.obj) PyBuffer_Release(&imp);
    return result;
}

/* ---- the other functions ---------------------------------------------------------------------- */

/* dequantize_into(type, src, n_values, dst): src holds whole blocks (uint8) of n_values values,
 * dst receives n_values float32. */
static PyObject *dequantize_into(PyObject *self, PyObject *args) {
    int type;
    long long n_arg;
    PyObject *src_obj, *dst_obj;
    Py_buffer src = {0}, dst = {0};
    (void)self;
    if (!PyArg_ParseTuple(args, "iOLO", &type, &src_obj, &n_arg, &dst_obj)) return NULL;
    const qc_type_traits *t = traits_or_error(type);
    if (!t) return NULL;
    if (n_arg < 0) return PyErr_Format(PyExc_ValueError, "n_values must not be negative, got %lld", n_arg);
    if (n_arg % t->block_elems != 0)
        return PyErr_Format(PyExc_ValueError, "%lld values are not whole %s blocks of %d", n_arg, t->name, t->block_elems);
    const Py_ssize_t n = as_ssize(n_arg, "n_values");
    if (n < 0) return NULL;
    const Py_ssize_t src_bytes = checked_mul(n / t->block_elems, t->block_bytes);
    if (src_bytes < 0) return PyErr_Format(PyExc_OverflowError, "%lld values of %s are more than a buffer can hold", n_arg, t->name);

    PyObject *result = NULL;
    if (get_buffer(src_obj, &src, 0, FMT_U8, src_bytes, t->block_align, "source") != 0) goto done;
    if (get_buffer(dst_obj, &dst, 1, FMT_F32, n, FMT_F32.itemsize, "destination") != 0) goto done;
    Py_BEGIN_ALLOW_THREADS
    t->dequantize_row(src.buf, (float *)dst.buf, n);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    if (src.obj) PyBuffer_Release(&src);
    if (dst.obj) PyBuffer_Release(&dst);
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

/* block_types() -> the type ids of the type table, in its order. */
static PyObject *block_types(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    PyObject *ids = PyTuple_New((Py_ssize_t)qc_type_count());
    for (size_t i = 0; ids && i < qc_type_count(); i++) {
        PyObject *id = PyLong_FromLong(qc_traits_at(i)->type);
        if (!id) {
            Py_DECREF(ids);
            return NULL;
        }
        PyTuple_SET_ITEM(ids, (Py_ssize_t)i, id);
    }
    return ids;
}

/* fp32_to_fp16_into(src, dst): the rounding every quantizer uses, exposed for tests. src holds
 * float32 values, dst receives as many fp16 bit patterns (uint16). */
static PyObject *fp32_to_fp16_into(PyObject *self, PyObject *args) {
    PyObject *src_obj, *dst_obj;
    Py_buffer src = {0}, dst = {0};
    (void)self;
    if (!PyArg_ParseTuple(args, "OO", &src_obj, &dst_obj)) return NULL;
    PyObject *result = NULL;
    if (get_buffer(src_obj, &src, 0, FMT_F32, -1, FMT_F32.itemsize, "source") != 0) goto done;
    const Py_ssize_t n = src.len / FMT_F32.itemsize;
    if (get_buffer(dst_obj, &dst, 1, FMT_U16, n, FMT_U16.itemsize, "destination") != 0) goto done;
    const float *s = (const float *)src.buf;
    qc_half *d = (qc_half *)dst.buf;
    for (Py_ssize_t i = 0; i < n; i++) d[i] = qc_fp32_to_fp16(s[i]);
    result = Py_NewRef(Py_None);
done:
    if (src.obj) PyBuffer_Release(&src);
    if (dst.obj) PyBuffer_Release(&dst);
    return result;
}

/* ---- gptq_columns ------------------------------------------------------------------------------ */

/* The sizes of one sub-block of GPTQ's column loop: m columns of n_out values (both ≥ 0), m·n_out
 * and m·m; 0, or -1 with the error set. */
static int column_geometry(long long m_arg, long long n_out_arg, Py_ssize_t *m, Py_ssize_t *n_out, Py_ssize_t *rows, Py_ssize_t *mm) {
    *m = as_ssize(m_arg, "m");
    *n_out = as_ssize(n_out_arg, "n_out");
    if (*m < 0 || *n_out < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "m and n_out must be >= 0");
        return -1;
    }
    *rows = checked_mul(*m, *n_out);
    *mm = checked_mul(*m, *m);
    if (*rows < 0 || *mm < 0) {
        PyErr_SetString(PyExc_OverflowError, "m·n_out does not fit in a Py_ssize_t");
        return -1;
    }
    return 0;
}


static PyObject *gptq_columns(PyObject *self, PyObject *args) {
    PyObject *objs[7];
    long long m_arg, n_out_arg;
    float maxq;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOLLf", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &objs[5], &objs[6], &m_arg, &n_out_arg, &maxq))
        return NULL;
    Py_buffer v[7] = {{0}};
    PyObject *result = NULL;
    Py_ssize_t m, n_out, rows, mm;
    if (column_geometry(m_arg, n_out_arg, &m, &n_out, &rows, &mm) != 0) return NULL;
    if (get_buffer(objs[0], &v[0], 1, FMT_F32, rows, 4, "w") != 0 || get_buffer(objs[1], &v[1], 1, FMT_F32, rows, 4, "err") != 0 ||
        get_buffer(objs[2], &v[2], 0, FMT_F32, mm, 4, "hinv") != 0 || get_buffer(objs[3], &v[3], 0, FMT_F32, m, 4, "inv_diag") != 0 ||
        get_buffer(objs[4], &v[4], 0, FMT_F32, -1, 4, "scales") != 0 || get_buffer(objs[6], &v[6], 0, FMT_I32, m, 4, "grid_row") != 0)
        goto done;
    const Py_ssize_t k = n_out ? v[4].len / 4 / n_out : 0;
    if (n_out && v[4].len / 4 != k * n_out) {
        PyErr_Format(PyExc_ValueError, "scales buffer has %zd float32 items, not a multiple of n_out %zd", v[4].len / 4, n_out);
        goto done;
    }
    if (get_buffer(objs[5], &v[5], 0, FMT_F32, k * n_out, 4, "zeros") != 0) goto done;
    const int32_t *grid_row = (const int32_t *)v[6].buf;
    for (Py_ssize_t i = 0; i < m; i++) {
        if (grid_row[i] < 0 || grid_row[i] >= k) {
            PyErr_Format(PyExc_ValueError, "grid_row[%zd] = %d is outside the %zd grid rows", i, grid_row[i], k);
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS qc_gptq_columns((float *)v[0].buf, (float *)v[1].buf, (const float *)v[2].buf, (const float *)v[3].buf,
                                           (const float *)v[4].buf, (const float *)v[5].buf, grid_row, m, n_out, maxq);
    Py_END_ALLOW_THREADS result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < 7; i++)
        if (v[i].obj) PyBuffer_Release(&v[i]);
    return result;
}

/* ---- codes inside blocks (codes.h), for GPTQ on the GGUF block grids ---------------------------- */

static const qc_type_traits *coded_traits_or_error(int type, const qc_code_info **info) {
    const qc_type_traits *t = traits_or_error(type);
    if (t && !(*info = qc_code_info_of(type))) {
        PyErr_Format(PyExc_ValueError, "block type %s has no code layout here", t->name);
        return NULL;
    }
    return t;
}

/* The whole blocks of n values, n checked against the type's block: their byte count, or -1. */
static Py_ssize_t blocks_bytes(const qc_type_traits *t, long long n_arg) {
    if (n_arg < 0 || n_arg % t->block_elems != 0) {
        PyErr_Format(PyExc_ValueError, "%lld values are not whole %s blocks of %d", n_arg, t->name, t->block_elems);
        return -1;
    }
    const Py_ssize_t n = as_ssize(n_arg, "n_values");
    const Py_ssize_t bytes = n < 0 ? -1 : checked_mul(n / t->block_elems, t->block_bytes);
    if (n >= 0 && bytes < 0) PyErr_SetString(PyExc_OverflowError, "too many values");
    return bytes;
}

/* code_info(type) -> (bits, zero): codes are 0 .. 2^bits − 1, value = s·(code − zero) + o. */
static PyObject *code_info(PyObject *self, PyObject *args) {
    int type;
    const qc_code_info *info = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &type)) return NULL;
    return coded_traits_or_error(type, &info) ? Py_BuildValue("(ii)", info->bits, info->zero) : NULL;
}

/* block_codes(type, blocks, n_values, codes, s, o): every value's code (uint8) and the s and o
 * (float32) of its block. */
static PyObject *block_codes(PyObject *self, PyObject *args) {
    int type;
    long long n_arg;
    PyObject *objs[4];
    Py_buffer v[4] = {{0}};
    PyObject *result = NULL;
    const qc_code_info *info = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "iOLOOO", &type, &objs[0], &n_arg, &objs[1], &objs[2], &objs[3])) return NULL;
    const qc_type_traits *t = coded_traits_or_error(type, &info);
    if (!t) return NULL;
    const Py_ssize_t bytes = blocks_bytes(t, n_arg);
    if (bytes < 0) return NULL;
    const Py_ssize_t n = (Py_ssize_t)n_arg;
    if (get_buffer(objs[0], &v[0], 0, FMT_U8, bytes, t->block_align, "blocks") != 0 || get_buffer(objs[1], &v[1], 1, FMT_U8, n, 1, "codes") != 0 ||
        get_buffer(objs[2], &v[2], 1, FMT_F32, n, 4, "s") != 0 || get_buffer(objs[3], &v[3], 1, FMT_F32, n, 4, "o") != 0)
        goto done;
    Py_BEGIN_ALLOW_THREADS qc_block_codes(type, v[0].buf, n, (uint8_t *)v[1].buf, (float *)v[2].buf, (float *)v[3].buf);
    Py_END_ALLOW_THREADS result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < 4; i++)
        if (v[i].obj) PyBuffer_Release(&v[i]);
    return result;
}

/* block_set_codes(type, blocks, n_values, codes): write the codes into the blocks in place. */
static PyObject *block_set_codes(PyObject *self, PyObject *args) {
    int type;
    long long n_arg;
    PyObject *blocks_obj, *codes_obj;
    Py_buffer blocks = {0}, codes = {0};
    PyObject *result = NULL;
    const qc_code_info *info = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "iOLO", &type, &blocks_obj, &n_arg, &codes_obj)) return NULL;
    const qc_type_traits *t = coded_traits_or_error(type, &info);
    if (!t) return NULL;
    const Py_ssize_t bytes = blocks_bytes(t, n_arg);
    if (bytes < 0) return NULL;
    const Py_ssize_t n = (Py_ssize_t)n_arg;
    if (get_buffer(blocks_obj, &blocks, 1, FMT_U8, bytes, t->block_align, "blocks") != 0 || get_buffer(codes_obj, &codes, 0, FMT_U8, n, 1, "codes") != 0)
        goto done;
    const uint8_t *c = (const uint8_t *)codes.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (c[i] >> info->bits) {
            PyErr_Format(PyExc_ValueError, "code %d at %zd does not fit in %s's %d bits", c[i], i, t->name, info->bits);
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS qc_block_set_codes(type, blocks.buf, n, c);
    Py_END_ALLOW_THREADS result = Py_NewRef(Py_None);
done:
    if (blocks.obj) PyBuffer_Release(&blocks);
    if (codes.obj) PyBuffer_Release(&codes);
    return result;
}

/* quantize_part_weighted(type, src, n_rows, n_per_row, dst, importance, sigma2): the weighted
 * Q4_0/Q5_0/Q4_1/Q5_1 quantizer on n_rows parts of rows, row i with the sigma2 sigma2[i] of its
 * whole row (qc_quantize_part_weighted). */
static PyObject *quantize_part_weighted(PyObject *self, PyObject *args) {
    int type;
    long long n_rows_arg, n_arg;
    PyObject *objs[4];
    Py_buffer v[4] = {{0}};
    PyObject *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "iOLLOOO", &type, &objs[0], &n_rows_arg, &n_arg, &objs[1], &objs[2], &objs[3])) return NULL;
    const qc_type_traits *t = traits_or_error(type);
    if (!t) return NULL;
    if (type != QC_Q4_0 && type != QC_Q5_0 && type != QC_Q4_1 && type != QC_Q5_1)
        return PyErr_Format(PyExc_ValueError, "%s has no row-wide sigma2", t->name);
    const Py_ssize_t row_bytes = blocks_bytes(t, n_arg);
    if (row_bytes < 0) return NULL;
    const Py_ssize_t n_rows = as_ssize(n_rows_arg, "n_rows"), n = (Py_ssize_t)n_arg;
    if (n_rows < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "n_rows must not be negative");
        return NULL;
    }
    const Py_ssize_t values = checked_mul(n_rows, n), bytes = checked_mul(n_rows, row_bytes);
    if (values < 0 || bytes < 0) return PyErr_Format(PyExc_OverflowError, "too many rows");
    if (get_buffer(objs[0], &v[0], 0, FMT_F32, values, 4, "source") != 0 || get_buffer(objs[1], &v[1], 1, FMT_U8, bytes, t->block_align, "destination") != 0 ||
        get_buffer(objs[2], &v[2], 0, FMT_F32, n, 4, "importance") != 0 || get_buffer(objs[3], &v[3], 0, FMT_F32, n_rows, 4, "sigma2") != 0)
        goto done;
    const float *src = (const float *)v[0].buf, *imp = (const float *)v[2].buf, *sigma2 = (const float *)v[3].buf;
    uint8_t *dst = (uint8_t *)v[1].buf;
    /* the quantizers take finite values only (quants.h) */
    for (Py_ssize_t i = 0; i < values; i++) {
        if (!isfinite(src[i])) {
            PyErr_Format(PyExc_FloatingPointError, "source value %zd is not finite", i);
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!isfinite(imp[i])) {
            PyErr_Format(PyExc_ValueError, "importance weight at column %zd is not finite", i);
            goto done;
        }
    }
    for (Py_ssize_t r = 0; r < n_rows; r++) {
        if (!isfinite(sigma2[r])) {
            PyErr_Format(PyExc_ValueError, "sigma2 of row %zd is not finite", r);
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS for (Py_ssize_t r = 0; r < n_rows; r++) qc_quantize_part_weighted(type, src + r * n, dst + r * row_bytes, n, imp, sigma2[r]);
    Py_END_ALLOW_THREADS result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < 4; i++)
        if (v[i].obj) PyBuffer_Release(&v[i]);
    return result;
}

/* row_sigma2_into(src, n_rows, n, out): each row's mean square, as the weighted legacy quantizers
 * take it (qc_row_sigma2), into out (n_rows float32). */
static PyObject *row_sigma2_into(PyObject *self, PyObject *args) {
    long long n_rows_arg, n_arg;
    PyObject *src_obj, *out_obj;
    Py_buffer src = {0}, out = {0};
    PyObject *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "OLLO", &src_obj, &n_rows_arg, &n_arg, &out_obj)) return NULL;
    if (n_rows_arg < 0 || n_arg <= 0) return PyErr_Format(PyExc_ValueError, "bad geometry: %lld rows of %lld", n_rows_arg, n_arg);
    const Py_ssize_t n_rows = as_ssize(n_rows_arg, "n_rows"), n = as_ssize(n_arg, "n");
    if (n_rows < 0 || n < 0) return NULL;
    const Py_ssize_t values = checked_mul(n_rows, n);
    if (values < 0) return PyErr_Format(PyExc_OverflowError, "too many values");
    if (get_buffer(src_obj, &src, 0, FMT_F32, values, 4, "source") != 0 || get_buffer(out_obj, &out, 1, FMT_F32, n_rows, 4, "out") != 0) goto done;
    for (Py_ssize_t r = 0; r < n_rows; r++) ((float *)out.buf)[r] = qc_row_sigma2((const float *)src.buf + r * n, n);
    result = Py_NewRef(Py_None);
done:
    if (src.obj) PyBuffer_Release(&src);
    if (out.obj) PyBuffer_Release(&out);
    return result;
}

/* gptq_block_columns(w, err, hinv, inv_diag, s, o, fit_w, codes, m, n_out, zero, max_code): one
 * sub-block of GPTQ's column loop on block grids, in place (gptq.h). */
static PyObject *gptq_block_columns(PyObject *self, PyObject *args) {
    PyObject *objs[8];
    long long m_arg, n_out_arg;
    int zero, max_code;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOOLLii", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &objs[5], &objs[6], &objs[7], &m_arg, &n_out_arg,
                          &zero, &max_code))
        return NULL;
    Py_buffer v[8] = {{0}};
    PyObject *result = NULL;
    Py_ssize_t m, n_out, rows, mm;
    if (column_geometry(m_arg, n_out_arg, &m, &n_out, &rows, &mm) != 0) return NULL;
    if (max_code < 0 || max_code > 255) return PyErr_Format(PyExc_ValueError, "max_code %d is not a uint8 code", max_code);
    if (get_buffer(objs[0], &v[0], 1, FMT_F32, rows, 4, "w") != 0 || get_buffer(objs[1], &v[1], 1, FMT_F32, rows, 4, "err") != 0 ||
        get_buffer(objs[2], &v[2], 0, FMT_F32, mm, 4, "hinv") != 0 || get_buffer(objs[3], &v[3], 0, FMT_F32, m, 4, "inv_diag") != 0 ||
        get_buffer(objs[4], &v[4], 0, FMT_F32, rows, 4, "s") != 0 || get_buffer(objs[5], &v[5], 0, FMT_F32, rows, 4, "o") != 0 ||
        get_buffer(objs[6], &v[6], 0, FMT_F32, rows, 4, "fit_w") != 0 || get_buffer(objs[7], &v[7], 1, FMT_U8, rows, 1, "codes") != 0)
        goto done;
    Py_BEGIN_ALLOW_THREADS qc_gptq_block_columns((float *)v[0].buf, (float *)v[1].buf, (const float *)v[2].buf, (const float *)v[3].buf,
                                                 (const float *)v[4].buf, (const float *)v[5].buf, (const float *)v[6].buf, (uint8_t *)v[7].buf, m,
                                                 n_out, zero, max_code);
    Py_END_ALLOW_THREADS result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < 8; i++)
        if (v[i].obj) PyBuffer_Release(&v[i]);
    return result;
}

/* gram_bf16_upper(x, n, d, h, threads): h's upper triangle += XᵀX of n rows of d bfloat16 values
 * (x as uint16 bits), exact products, float32 sums (gram.h). */
static PyObject *gram_bf16_upper(PyObject *self, PyObject *args) {
    long long n_arg, d_arg;
    int threads;
    PyObject *x_obj, *h_obj;
    Py_buffer x = {0}, h = {0};
    PyObject *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "OLLOi", &x_obj, &n_arg, &d_arg, &h_obj, &threads)) return NULL;
    if (n_arg < 0 || d_arg <= 0) return PyErr_Format(PyExc_ValueError, "bad geometry: %lld rows of %lld", n_arg, d_arg);
    if (!qc_gram_bf16_supported()) return PyErr_Format(PyExc_RuntimeError, "this CPU has no AVX-512 BF16 (see gram_bf16_supported())");
    const Py_ssize_t n = as_ssize(n_arg, "n"), d = as_ssize(d_arg, "d");
    if (n < 0 || d < 0) return NULL;
    const Py_ssize_t values = checked_mul(n, d), square = checked_mul(d, d);
    if (values < 0 || square < 0) return PyErr_Format(PyExc_OverflowError, "too many values");
    if (get_buffer(x_obj, &x, 0, FMT_U16, values, 2, "x") != 0 || get_buffer(h_obj, &h, 1, FMT_F32, square, 4, "h") != 0) goto done;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = qc_gram_bf16_upper((const uint16_t *)x.buf, n, d, (float *)h.buf, threads);
    Py_END_ALLOW_THREADS if (rc != 0) PyErr_NoMemory();
    else result = Py_NewRef(Py_None);
done:
    if (x.obj) PyBuffer_Release(&x);
    if (h.obj) PyBuffer_Release(&h);
    return result;
}

static PyObject *gram_bf16_supported(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyBool_FromLong(qc_gram_bf16_supported());
}

/* ---- quantize_file: the file engine ------------------------------------------------------------ */

/* One job tuple: (src_offset, src_type, dst_type, n_rows, n_per_row, dst_offset, importance, n_mat),
 * checked; its importance buffer (if any) is held in *imp until the engine is done. */
static int parse_job(PyObject *item, Py_ssize_t i, qc_tensor_job *job, Py_buffer *imp) {
    PyObject *imp_obj;
    long long src_offset, n_rows, n_per_row, dst_offset, n_mat;
    int src_type, dst_type;
    if (!PyArg_ParseTuple(item, "LiiLLLOL;a job is (src_offset, src_type, dst_type, n_rows, n_per_row, dst_offset, importance, n_mat)",
                          &src_offset, &src_type, &dst_type, &n_rows, &n_per_row, &dst_offset, &imp_obj, &n_mat))
        return -1;
    const int float_src = src_type == QC_F32 || src_type == QC_F16 || src_type == QC_BF16;
    const int float_dst = dst_type == QC_F32 || dst_type == QC_F16 || dst_type == QC_BF16;
    const qc_type_traits *t = qc_traits(dst_type);
    if (!float_src || (!float_dst && !t)) {
        PyErr_Format(PyExc_ValueError, "job %zd: cannot make type %d from type %d", i, dst_type, src_type);
        return -1;
    }
    if (src_offset < 0 || dst_offset < 0 || n_rows < 0 || n_per_row <= 0 || n_mat < 1 || n_rows % n_mat != 0 ||
        (t && n_per_row % t->block_elems != 0) || n_rows > INT64_MAX / n_per_row / 4 ||
        src_offset > INT64_MAX - n_rows * n_per_row * 4 || dst_offset > INT64_MAX - n_rows * n_per_row * 4) { /* every byte offset fits */
        PyErr_Format(PyExc_ValueError, "job %zd: bad geometry (%lld rows of %lld values, %lld matrices, offsets %lld and %lld)", i, n_rows,
                     n_per_row, n_mat, src_offset, dst_offset);
        return -1;
    }
    *job = (qc_tensor_job){src_offset, src_type, dst_type, n_rows, n_per_row, dst_offset, NULL, n_mat};
    if (imp_obj == Py_None) return 0;
    if (n_mat > PY_SSIZE_T_MAX / n_per_row) {
        PyErr_Format(PyExc_OverflowError, "job %zd: %lld × %lld importance weights", i, n_mat, n_per_row);
        return -1;
    }
    if (get_buffer(imp_obj, imp, 0, FMT_F32, (Py_ssize_t)(n_mat * n_per_row), FMT_F32.itemsize, "importance") != 0) return -1;
    const float *w = (const float *)imp->buf;
    for (Py_ssize_t k = 0; k < (Py_ssize_t)(n_mat * n_per_row); k++) {
        if (!isfinite(w[k])) {
            PyErr_Format(PyExc_ValueError, "job %zd: importance weight %zd is not finite", i, k);
            return -1;
        }
    }
    job->importance = w;
    return 0;
}

/* The engine's result as an exception: FloatingPointError(job, row, column) for a NaN or Inf,
 * OverflowError(job, row) for a weighted scale past fp16, EOFError(job) for a truncated input,
 * OSError with the file's name for an I/O error. */
static void raise_result(qc_engine_result r, PyObject *in_path, PyObject *out_path) {
    switch (r.status) {
    case QC_ENGINE_NONFINITE:
        PyErr_SetObject(PyExc_FloatingPointError, Py_BuildValue("(iLL)", r.tensor, (long long)r.row, (long long)r.column));
        break;
    case QC_ENGINE_SCALE_OVERFLOW:
        PyErr_SetObject(PyExc_OverflowError, Py_BuildValue("(iL)", r.tensor, (long long)r.row));
        break;
    case QC_ENGINE_TRUNCATED:
        PyErr_SetObject(PyExc_EOFError, Py_BuildValue("(i)", r.tensor));
        break;
    case QC_ENGINE_READ_ERROR:
    case QC_ENGINE_WRITE_ERROR:
        errno = r.err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, r.status == QC_ENGINE_READ_ERROR ? in_path : out_path);
        break;
    case QC_ENGINE_NO_MEMORY:
        PyErr_NoMemory();
        break;
    default:
        break; /* OK, or cancelled: the exception that cancelled it is set */
    }
}

/* quantize_file(in_fd, out_fd, jobs, threads, progress, in_path, out_path) -> {phase: thread-seconds}:
 * fill the output's tensor data (the jobs, see engine.h) from the input. progress(values_done) is
 * called every 50 ms or so; a signal (Ctrl-C) or an exception from progress stops the workers after
 * their current chunk. Returns where the workers' time went: read, widen, quantize, write. */
static PyObject *quantize_file(PyObject *self, PyObject *args) {
    int in_fd, out_fd, threads;
    PyObject *jobs_obj, *progress, *in_path, *out_path;
    (void)self;
    if (!PyArg_ParseTuple(args, "iiO!iOOO", &in_fd, &out_fd, &PyList_Type, &jobs_obj, &threads, &progress, &in_path, &out_path)) return NULL;
    const Py_ssize_t n_jobs = PyList_GET_SIZE(jobs_obj);
    if (n_jobs > INT32_MAX) return PyErr_Format(PyExc_ValueError, "%zd jobs are too many", n_jobs);
    qc_tensor_job *jobs = PyMem_Calloc((size_t)n_jobs + 1, sizeof *jobs);
    Py_buffer *imps = PyMem_Calloc((size_t)n_jobs + 1, sizeof *imps);
    PyObject *result = NULL;
    if (!jobs || !imps) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n_jobs; i++)
        if (parse_job(PyList_GET_ITEM(jobs_obj, i), i, &jobs[i], &imps[i]) != 0) goto done;
    qc_engine *e;
    Py_BEGIN_ALLOW_THREADS e = qc_engine_start(in_fd, out_fd, jobs, (int)n_jobs, threads);
    Py_END_ALLOW_THREADS if (!e) {
        PyErr_SetString(PyExc_MemoryError, "cannot start the quantizer's threads");
        goto done;
    }
    int64_t reported = -1, values = 0;
    for (int finished = 0, stopping = 0; !finished;) {
        Py_BEGIN_ALLOW_THREADS finished = qc_engine_wait(e, 50, &values);
        Py_END_ALLOW_THREADS if (stopping) continue;
        if (values != reported && progress != Py_None) {
            PyObject *r = PyObject_CallFunction(progress, "L", (long long)values);
            Py_XDECREF(r);
            stopping = r == NULL;
        }
        reported = values;
        if (!stopping) stopping = PyErr_CheckSignals() != 0;
        if (stopping) qc_engine_cancel(e);
    }
    qc_engine_result r;
    Py_BEGIN_ALLOW_THREADS r = qc_engine_finish(e);
    Py_END_ALLOW_THREADS if (!PyErr_Occurred()) {
        raise_result(r, in_path, out_path);
        if (r.status == QC_ENGINE_OK)
            result = Py_BuildValue("{sdsdsdsd}", "read", r.phases.read, "widen", r.phases.widen, "quantize", r.phases.quantize, "write",
                                   r.phases.write);
    }
done:
    for (Py_ssize_t i = 0; imps && i < n_jobs; i++)
        if (imps[i].obj) PyBuffer_Release(&imps[i]);
    PyMem_Free(jobs);
    PyMem_Free(imps);
    return result;
}

/* ---- the instruction-set switch ----------------------------------------------------------------- */

/* "scalar, avx2, avx512": the paths this CPU runs. */
static const char *isa_choices(void) {
    static char buf[64];
    buf[0] = '\0';
    for (int i = 0; i < QC_ISA_COUNT; i++) {
        if (!qc_isa_supported((enum qc_isa)i)) continue;
        if (buf[0]) strcat(buf, ", ");
        strcat(buf, qc_isa_name((enum qc_isa)i));
    }
    return buf;
}

/* set_isa(name): make the quantizers take that path; ValueError if unknown or not on this CPU. */
static PyObject *set_isa(PyObject *self, PyObject *args) {
    const char *name;
    (void)self;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    const int isa = qc_isa_from_name(name);
    if (isa < 0 || qc_isa_set((enum qc_isa)isa) != 0)
        return PyErr_Format(PyExc_ValueError, "instruction set %s is not one this CPU runs (%s)", name, isa_choices());
    Py_RETURN_NONE;
}

/* isa() -> the active path's name; isas() -> the names of every path this CPU runs. */
static PyObject *isa(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyUnicode_FromString(qc_isa_name(qc_isa_active()));
}

static PyObject *isas(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    PyObject *names = PyList_New(0);
    for (int i = 0; names && i < QC_ISA_COUNT; i++) {
        if (!qc_isa_supported((enum qc_isa)i)) continue;
        PyObject *name = PyUnicode_FromString(qc_isa_name((enum qc_isa)i));
        if (!name || PyList_Append(names, name) != 0) {
            Py_XDECREF(name);
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(name);
    }
    return names;
}

static PyObject *abi_version(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyLong_FromLong(6);
}

static PyMethodDef methods[] = {
    {"quantize_into", quantize_into, METH_VARARGS, "quantize_into(type, src, n_rows, n_per_row, dst, threads, importance=None, src_f16=False)"},
    {"dequantize_into", dequantize_into, METH_VARARGS, "dequantize_into(type, src, n_values, dst)"},
    {"block_info", block_info, METH_VARARGS, "block_info(type) -> (name, block_elems, block_bytes)"},
    {"block_types", block_types, METH_NOARGS, "block_types() -> the type ids this module quantizes"},
    {"fp32_to_fp16_into", fp32_to_fp16_into, METH_VARARGS, "fp32_to_fp16_into(src, dst)"},
    {"gptq_columns", gptq_columns, METH_VARARGS, "gptq_columns(w, err, hinv, inv_diag, scales, zeros, grid_row, m, n_out, maxq): one sub-block of GPTQ's column loop, in place"},
    {"code_info", code_info, METH_VARARGS, "code_info(type) -> (bits, zero): value = s·(code − zero) + o"},
    {"block_codes", block_codes, METH_VARARGS, "block_codes(type, blocks, n_values, codes, s, o): codes and affine maps of whole blocks"},
    {"block_set_codes", block_set_codes, METH_VARARGS, "block_set_codes(type, blocks, n_values, codes): new codes into blocks, in place"},
    {"quantize_part_weighted", quantize_part_weighted, METH_VARARGS, "quantize_part_weighted(type, src, n_rows, n, dst, importance, sigma2)"},
    {"row_sigma2_into", row_sigma2_into, METH_VARARGS, "row_sigma2_into(src, n_rows, n, out): the rows' mean squares as the weighted legacy quantizers take them"},
    {"gptq_block_columns", gptq_block_columns, METH_VARARGS, "gptq_block_columns(w, err, hinv, inv_diag, s, o, fit_w, codes, m, n_out, zero, max_code)"},
    {"gram_bf16_upper", gram_bf16_upper, METH_VARARGS, "gram_bf16_upper(x, n, d, h, threads): h's upper triangle += XᵀX of bfloat16 rows (x as uint16)"},
    {"gram_bf16_supported", gram_bf16_supported, METH_NOARGS, "gram_bf16_supported() -> whether this CPU runs gram_bf16_upper"},
    {"quantize_file", quantize_file, METH_VARARGS, "quantize_file(in_fd, out_fd, jobs, threads, progress, in_path, out_path): fill a GGUF's tensor data"},
    {"set_isa", set_isa, METH_VARARGS, "set_isa(name): run the quantizers on 'scalar', 'avx2' or 'avx512' (same bytes)"},
    {"isa", isa, METH_NOARGS, "isa() -> the instruction set the quantizers run on"},
    {"isas", isas, METH_NOARGS, "isas() -> the instruction sets this CPU runs"},
    {"abi_version", abi_version, METH_NOARGS, "ABI version of the native extension."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "qconvert._native", "qconvert's GGUF block quantizers.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (qc_isa_init() != 0) {
        PyErr_Format(PyExc_ImportError, "QCONVERT_ISA=%s: not a path this CPU can run (%s); unset it or choose another", getenv("QCONVERT_ISA"),
                     isa_choices());
        return NULL;
    }
    return PyModule_Create(&module);
}

/* qconvert._native: the C side of qconvert. For now it only reports its ABI version;
 * the GGUF block quantizers join it in a later stage. Plain C, no torch. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define QCONVERT_NATIVE_ABI 1

static PyObject *abi_version(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyLong_FromLong(QCONVERT_NATIVE_ABI);
}

static PyMethodDef methods[] = {
    {"abi_version", abi_version, METH_NOARGS, "ABI version of the native extension."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "qconvert._native", "qconvert's native kernels.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }

/* The native timing loop: calls fn `loops` times per round through vectorcall and stores each
 * round's length in nanoseconds. Calibration, statistics and defaults live in
 * pyagentbench.instruments.timers. */
#include "module.h"
#include "clock.h"

#include <string.h>

/* fn may be a C function that never enters the eval loop, where signals are normally handled, so
 * the loop calls PyErr_CheckSignals() itself. That costs ~4 ns, a quarter of a no-op call, so
 * when rounds hold many calls (loops >= FAST_CALL_LOOPS: calibration then found calls of well under
 * a microsecond) it checks once every 16 calls; Ctrl-C still lands within microseconds. */
#define FAST_CALL_LOOPS 1024
#define FAST_CALL_SIGNAL_MASK 15

/* fn may be C code that never enters the eval loop, which is where a thread normally hands the GIL
 * to others. So the loop hands it over itself once per switch interval: between rounds, and inside a
 * round every YIELD_CHECK_MASK + 1 calls when a round lasts longer than that. */
#define YIELD_CHECK_MASK 4095

static int64_t
switch_interval(void)
{
    PyObject *sys = PyImport_ImportModule("sys");
    if (sys == NULL) {
        return -1;
    }
    PyObject *seconds = PyObject_CallMethod(sys, "getswitchinterval", NULL);
    Py_DECREF(sys);
    if (seconds == NULL) {
        return -1;
    }
    double value = PyFloat_AsDouble(seconds);
    Py_DECREF(seconds);
    if (value == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    return (int64_t)(value * 1e9);
}

static inline void
maybe_yield_gil(int64_t *last_yield_ns, int64_t switch_interval_ns)
{
    int64_t now = pab_now_ns();
    if (now - *last_yield_ns >= switch_interval_ns) {
        Py_BEGIN_ALLOW_THREADS
        Py_END_ALLOW_THREADS
        *last_yield_ns = pab_now_ns();
    }
}

static int
parse_int64_buffer(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) {
        return -1;
    }
    if (view->itemsize != 8 || view->format == NULL ||
        !(strcmp(view->format, "q") == 0 || strcmp(view->format, "@q") == 0 ||
          strcmp(view->format, "=q") == 0 || strcmp(view->format, "l") == 0)) {
        PyErr_Format(PyExc_TypeError, "time_rounds(): out must be a writable buffer of int64 "
                                      "('q'), e.g. array.array('q')");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *
time_rounds(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        return PyErr_Format(PyExc_TypeError,
                            "time_rounds() takes 5 arguments (fn, args, kwargs, loops, out), %zd given",
                            nargs);
    }
    PyObject *fn = args[0], *call_args = args[1], *call_kwargs = args[2];
    if (!PyCallable_Check(fn)) {
        return PyErr_Format(PyExc_TypeError, "time_rounds(): fn must be callable, not %.100s",
                            Py_TYPE(fn)->tp_name);
    }
    if (!PyTuple_Check(call_args)) {
        return PyErr_Format(PyExc_TypeError, "time_rounds(): args must be a tuple, not %.100s",
                            Py_TYPE(call_args)->tp_name);
    }
    if (call_kwargs != Py_None && !PyDict_Check(call_kwargs)) {
        return PyErr_Format(PyExc_TypeError,
                            "time_rounds(): kwargs must be a dict or None, not %.100s",
                            Py_TYPE(call_kwargs)->tp_name);
    }
    long long loops = PyLong_AsLongLong(args[3]);
    if (loops == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (loops < 1) {
        return PyErr_Format(PyExc_ValueError, "time_rounds(): loops must be >= 1, got %lld",
                            loops);
    }
    Py_buffer view;
    if (parse_int64_buffer(args[4], &view) < 0) {
        return NULL;
    }
    int64_t *out = (int64_t *)view.buf;
    Py_ssize_t rounds = view.len / 8;

    /* One vector: a free slot (for PY_VECTORCALL_ARGUMENTS_OFFSET), positionals, keyword values. */
    Py_ssize_t npos = PyTuple_GET_SIZE(call_args);
    Py_ssize_t nkw = call_kwargs == Py_None ? 0 : PyDict_GET_SIZE(call_kwargs);
    PyObject **stack = PyMem_New(PyObject *, 1 + npos + nkw);
    PyObject *kwnames = NULL;
    PyObject *result = NULL;
    if (stack == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < 1 + npos + nkw; i++) {
        stack[i] = NULL;
    }
    for (Py_ssize_t i = 0; i < npos; i++) {
        stack[1 + i] = PyTuple_GET_ITEM(call_args, i); /* borrowed: call_args outlives the loop */
    }
    if (nkw > 0) {
        kwnames = PyTuple_New(nkw);
        if (kwnames == NULL) {
            goto done;
        }
        Py_ssize_t pos = 0, i = 0;
        PyObject *key, *value;
        while (PyDict_Next(call_kwargs, &pos, &key, &value)) {
            if (!PyUnicode_Check(key)) {
                PyErr_SetString(PyExc_TypeError, "time_rounds(): keywords must be strings");
                goto done;
            }
            PyTuple_SET_ITEM(kwnames, i, Py_NewRef(key));
            stack[1 + npos + i] = Py_NewRef(value); /* owned: fn may mutate the dict */
            i++;
        }
    }
    size_t nargsf = (size_t)npos | PY_VECTORCALL_ARGUMENTS_OFFSET;

    int64_t switch_interval_ns = switch_interval();
    if (switch_interval_ns < 0) {
        goto done;
    }
    /* Calling fn's own vectorcall entry skips PyObject_Vectorcall's per-call lookups; the only
     * check those made that matters here (NULL without an exception) is made above. */
    vectorcallfunc call = PyVectorcall_Function(fn);
    if (call == NULL) {
        call = PyObject_Vectorcall;
    }
    long long last_loop = loops - 1;
    Py_ssize_t last_round = rounds - 1;
    long long signal_mask = loops >= FAST_CALL_LOOPS ? FAST_CALL_SIGNAL_MASK : 0;
    int64_t last_yield_ns = pab_now_ns();
    for (Py_ssize_t r = 0; r < rounds; r++) {
        int64_t start = pab_now_ns();
        for (long long i = 0; i < loops; i++) {
            PyObject *value = call(fn, stack + 1, nargsf, kwnames);
            if (value == NULL) {
                if (!PyErr_Occurred()) {
                    PyErr_Format(PyExc_SystemError, "%R returned NULL without setting an exception",
                                 fn);
                }
                goto done;
            }
            if (i == last_loop && r == last_round) {
                result = value; /* the caller gets the final call's result */
            }
            else {
                Py_DECREF(value);
            }
            if ((i & signal_mask) == 0 && PyErr_CheckSignals() < 0) {
                goto done;
            }
            if ((i & YIELD_CHECK_MASK) == YIELD_CHECK_MASK) {
                /* A long round: let other threads run as the eval loop would. */
                maybe_yield_gil(&last_yield_ns, switch_interval_ns);
            }
        }
        out[r] = pab_now_ns() - start;
        maybe_yield_gil(&last_yield_ns, switch_interval_ns);
    }
    if (result == NULL) { /* no rounds */
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&view);
    goto cleanup;

done:
    Py_CLEAR(result);
    PyBuffer_Release(&view);
cleanup:
    if (stack != NULL) {
        for (Py_ssize_t i = 0; i < nkw; i++) {
            Py_XDECREF(stack[1 + npos + i]);
        }
    }
    Py_XDECREF(kwnames);
    PyMem_Free(stack);
    return result;
}

static PyMethodDef runner_functions[] = {
    {"time_rounds", (PyCFunction)(void (*)(void))time_rounds, METH_FASTCALL,
     "time_rounds(fn, args, kwargs, loops, out) -> object\n--\n\nCall fn(*args, **kwargs) loops "
     "times per round, once per element of out (a writable int64 buffer), store each round's "
     "nanoseconds there, and return the final call's result (None if out is empty). Exceptions "
     "from fn and KeyboardInterrupt propagate at once."},
    {NULL, NULL, 0, NULL},
};

int
pab_runner_exec(PyObject *module, pab_state *state)
{
    return PyModule_AddFunctions(module, runner_functions);
}

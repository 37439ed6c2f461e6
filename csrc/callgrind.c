/* Instruction counting under callgrind: a loop of calls with callgrind's counters zeroed just before
 * and dumped just after them (one dump file per window).
 *
 * Callgrind's collection switch is per thread: a thread the target starts begins with collection at
 * its --collect-atstart value, and a toggle made on this thread does not reach it. So valgrind runs
 * with collection on everywhere (--collect-atstart=yes, --separate-threads=no) and the window is
 * bounded by zeroing and dumping, which act on every thread: a dump holds what all the process's
 * threads executed between the zero and the dump.
 *
 * Two builds, chosen by setup.py:
 *   PAB_HAVE_CALLGRIND_H  valgrind's own header is installed: client requests zero the counters
 *                         and dump them under the caller's label.
 *   otherwise             the window is pab_callgrind_window(), and valgrind is started with
 *                         --zero-before= and --dump-after= naming it; the label is not used (the
 *                         Python side reads the newest dump).
 * Outside valgrind the client requests are a few no-op instructions and the loop just calls fn.
 * Parsing the dumps, valgrind's options and all policy live in pyagentbench/instruments/callgrind.py. */
#include "module.h"
#include "callgrind.h"

#include <stdlib.h>
#include <string.h>

#ifdef PAB_HAVE_CALLGRIND_H
#include <valgrind/callgrind.h>
#endif

#if defined(__GNUC__)
#define PAB_NOINLINE __attribute__((noinline, used))
#else
#define PAB_NOINLINE
#endif

PAB_NOINLINE Py_ssize_t
pab_callgrind_window(PyObject *fn, PyObject *args, PyObject *kwargs, Py_ssize_t loops)
{
    for (Py_ssize_t i = 0; i < loops; i++) {
        PyObject *result = PyObject_Call(fn, args, kwargs);
        if (result == NULL) {
            return i;
        }
        Py_DECREF(result);
    }
    return loops;
}

static PyObject *
callgrind_count(PyObject *module, PyObject *const *argv, Py_ssize_t argc)
{
    if (argc != 5) {
        PyErr_Format(PyExc_TypeError, "callgrind_count() takes 5 arguments (%zd given)", argc);
        return NULL;
    }
    PyObject *fn = argv[0], *args = argv[1], *kwargs = argv[2];
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "callgrind_count(): fn must be callable, not %.100s",
                     Py_TYPE(fn)->tp_name);
        return NULL;
    }
    if (!PyTuple_Check(args)) {
        PyErr_Format(PyExc_TypeError, "callgrind_count(): args must be a tuple, not %.100s",
                     Py_TYPE(args)->tp_name);
        return NULL;
    }
    if (kwargs == Py_None) {
        kwargs = NULL;
    }
    else if (!PyDict_Check(kwargs)) {
        PyErr_Format(PyExc_TypeError, "callgrind_count(): kwargs must be a dict or None, not %.100s",
                     Py_TYPE(kwargs)->tp_name);
        return NULL;
    }
    Py_ssize_t loops = PyLong_AsSsize_t(argv[3]);
    if (loops == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (loops < 1) {
        PyErr_Format(PyExc_ValueError, "callgrind_count(): loops must be >= 1, got %zd", loops);
        return NULL;
    }
    if (!PyUnicode_Check(argv[4])) {
        PyErr_Format(PyExc_TypeError, "callgrind_count(): name must be a str, not %.100s",
                     Py_TYPE(argv[4])->tp_name);
        return NULL;
    }
    const char *name = PyUnicode_AsUTF8(argv[4]);
    if (name == NULL) {
        return NULL;
    }
#ifdef PAB_HAVE_CALLGRIND_H
    CALLGRIND_ZERO_STATS;
#endif
    Py_ssize_t done = pab_callgrind_window(fn, args, kwargs, loops);
#ifdef PAB_HAVE_CALLGRIND_H
    CALLGRIND_DUMP_STATS_AT(name);
#else
    (void)name;
#endif
    if (done < loops) {
        return NULL; /* fn raised; the dump holds the calls before it and is discarded by the caller */
    }
    Py_RETURN_NONE;
}

static PyObject *
running_on_valgrind(PyObject *module, PyObject *unused)
{
#ifdef PAB_HAVE_CALLGRIND_H
    return PyBool_FromLong(RUNNING_ON_VALGRIND ? 1 : 0);
#else
    /* Without the client request, valgrind's preloaded core library is the sign. */
    const char *preload = getenv("LD_PRELOAD");
    return PyBool_FromLong(preload != NULL && strstr(preload, "vgpreload_") != NULL);
#endif
}

/* Instrumentation (valgrind's translation of code with callgrind's counting in it) is what makes
 * a program under callgrind 50-100 times slower; without it valgrind runs it a few times slower.
 * With the client requests the Python side starts valgrind with --instr-atstart=no and turns
 * instrumentation on only around each benchmark's warm call and counted window. It is process-wide,
 * so every thread is instrumented while it is on. */
static PyObject *
callgrind_instrumentation(PyObject *module, PyObject *on)
{
    int value = PyObject_IsTrue(on);
    if (value < 0) {
        return NULL;
    }
#ifdef PAB_HAVE_CALLGRIND_H
    if (value) {
        CALLGRIND_START_INSTRUMENTATION;
    }
    else {
        CALLGRIND_STOP_INSTRUMENTATION;
    }
#endif
    Py_RETURN_NONE;
}

static PyObject *
callgrind_client_requests(PyObject *module, PyObject *unused)
{
#ifdef PAB_HAVE_CALLGRIND_H
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef callgrind_functions[] = {
    {"callgrind_count", (PyCFunction)(void (*)(void))callgrind_count, METH_FASTCALL,
     PyDoc_STR("callgrind_count(fn, args, kwargs, loops, name, /)\n--\n\n"
               "Call fn(*args, **kwargs) loops times with callgrind's counters zeroed just before "
               "the calls and dumped just after them under name.")},
    {"running_on_valgrind", running_on_valgrind, METH_NOARGS,
     PyDoc_STR("running_on_valgrind()\n--\n\nTrue when this process runs under valgrind.")},
    {"callgrind_instrumentation", callgrind_instrumentation, METH_O,
     PyDoc_STR("callgrind_instrumentation(on, /)\n--\n\n"
               "Turn callgrind's instrumentation on or off for the whole process (a no-op when "
               "built without valgrind's callgrind.h, or outside valgrind).")},
    {"callgrind_client_requests", callgrind_client_requests, METH_NOARGS,
     PyDoc_STR("callgrind_client_requests()\n--\n\n"
               "True when built with valgrind's callgrind.h (client requests bound the window); "
               "False when valgrind must be told the window function's name.")},
    {NULL, NULL, 0, NULL},
};

int
pab_callgrind_exec(PyObject *module, pab_state *state)
{
    if (PyModule_AddFunctions(module, callgrind_functions) < 0) {
        return -1;
    }
    return PyModule_AddStringConstant(module, "CALLGRIND_WINDOW_SYMBOL", PAB_CALLGRIND_WINDOW_SYMBOL);
}

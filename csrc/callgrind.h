/* The measured window of callgrind instruction counting (callgrind.c).
 *
 * Built with valgrind's <valgrind/callgrind.h> (setup.py defines PAB_HAVE_CALLGRIND_H when it finds
 * it), the window is bounded by callgrind's client requests (zero before, dump after). Without the header,
 * the window is the function named PAB_CALLGRIND_WINDOW_SYMBOL, and the Python side asks callgrind
 * to zero and dump around it by name (--zero-before=, --dump-after=). */
#ifndef PYAGENTBENCH_CALLGRIND_H
#define PYAGENTBENCH_CALLGRIND_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The window function's symbol, for callgrind's --zero-before= and --dump-after= when built without the header. */
#define PAB_CALLGRIND_WINDOW_SYMBOL "pab_callgrind_window"

/* Calls fn(*args, **kwargs) `loops` times and returns the number of calls that returned (loops
 * unless one raised; then the exception is set). Not static and never inlined: its symbol must stay
 * in the shared object for callgrind to find by name. kwargs may be NULL. */
Py_ssize_t pab_callgrind_window(PyObject *fn, PyObject *args, PyObject *kwargs, Py_ssize_t loops);

#endif /* PYAGENTBENCH_CALLGRIND_H */

/* The native timing loop: calls fn `loops` times per round through vectorcall and stores each
 * round's length in nanoseconds. Optionally it also times every call on its own into a Histogram
 * (the per-call tails), and consumes generators fn returns, timing their items (time to first item,
 * time between items). Calibration, statistics and defaults live in
 * pyagentbench.instruments.timers. */
#include "module.h"
#include "clock.h"
#include "histogram.h"

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

/* The int64 slots of time_rounds()'s `streams` buffer, added to by the per-call loop. */
enum {
    STREAM_TIMED,      /* calls whose stream was timed */
    STREAM_WITH_ITEMS, /* of those, calls that yielded at least one item */
    STREAM_ITEMS,      /* items those calls yielded */
    STREAM_FIRST_NS,   /* sum over calls with items: call start to first item */
    STREAM_GAPS_NS,    /* sum over calls with items: first item to last item */
    STREAM_FIELDS
};

#define CLOCK_COST_SAMPLES 101

static int
compare_int64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* What one now_ns() read adds to an interval it closes: the median of back-to-back reads. The
 * per-call loop subtracts it from every interval it measures, so a fast call does not read high. */
static int64_t
clock_read_cost_ns(void)
{
    int64_t deltas[CLOCK_COST_SAMPLES];
    for (int i = 0; i < CLOCK_COST_SAMPLES; i++) {
        int64_t a = pab_now_ns();
        int64_t b = pab_now_ns();
        deltas[i] = b - a;
    }
    qsort(deltas, CLOCK_COST_SAMPLES, sizeof(int64_t), compare_int64);
    return deltas[CLOCK_COST_SAMPLES / 2];
}

static inline int64_t
non_negative(int64_t ns)
{
    return ns < 0 ? 0 : ns;
}

/* What the per-call loop does beside calling fn. */
typedef struct {
    PyObject *calls;      /* a Histogram, or NULL: each call's ns is recorded there */
    int64_t *streams;     /* STREAM_FIELDS slots, or NULL: fn's values are not consumed */
    int64_t clock_ns;     /* clock_read_cost_ns() */
} per_call_options;

/* Consumes the iterator value to its end. keep: collect the items in a new list (returned in
 * *kept). Timed (opts->calls set): the first and last item's times and the count go to *first_ns,
 * *last_ns and *count. Returns 0, or -1 with an exception set (value is not consumed further). */
static int
consume_stream(PyObject *value, int keep, int timed, PyObject **kept, int64_t *first_ns,
               int64_t *last_ns, int64_t *count)
{
    iternextfunc next = Py_TYPE(value)->tp_iternext;
    if (next == NULL || !PyIter_Check(value)) {
        PyErr_Format(PyExc_TypeError,
                     "time_rounds(): streams was given, but fn returned %.100s, not an iterator",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    PyObject *items = NULL;
    if (keep) {
        items = PyList_New(0);
        if (items == NULL) {
            return -1;
        }
    }
    int64_t n = 0;
    PyObject *item;
    while ((item = PyIter_Next(value)) != NULL) {
        if (timed) {
            *last_ns = pab_now_ns();
            if (n == 0) {
                *first_ns = *last_ns;
            }
        }
        n++;
        if (items != NULL) {
            int rc = PyList_Append(items, item);
            Py_DECREF(item);
            if (rc < 0) {
                Py_DECREF(items);
                return -1;
            }
        }
        else {
            Py_DECREF(item);
        }
    }
    if (PyErr_Occurred()) {
        Py_XDECREF(items);
        return -1;
    }
    *count = n;
    *kept = items;
    return 0;
}

/* One call of fn in the per-call loop: timed on its own when opts->calls is set, its iterator
 * consumed when opts->streams is set. Returns fn's value (or the list of items of a consumed
 * stream when keep), a new reference; NULL with an exception set. */
static PyObject *
call_per_call(vectorcallfunc call, PyObject *fn, PyObject *const *stack, size_t nargsf,
              PyObject *kwnames, const per_call_options *opts, int keep)
{
    int timed = opts->calls != NULL;
    int64_t start = timed ? pab_now_ns() : 0;
    PyObject *value = call(fn, stack, nargsf, kwnames);
    if (value == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_SystemError, "%R returned NULL without setting an exception", fn);
        }
        return NULL;
    }
    int64_t first_ns = 0, last_ns = 0, items = 0;
    if (opts->streams != NULL) {
        PyObject *kept = NULL;
        int rc = consume_stream(value, keep, timed, &kept, &first_ns, &last_ns, &items);
        Py_DECREF(value);
        if (rc < 0) {
            return NULL;
        }
        value = kept != NULL ? kept : Py_NewRef(Py_None);
    }
    if (!timed) {
        return value;
    }
    /* The interval holds one clock read of its own plus one per item timed. */
    int64_t elapsed = non_negative(pab_now_ns() - start - (1 + items) * opts->clock_ns);
    if (pab_histogram_record_value(opts->calls, elapsed) < 0) {
        Py_DECREF(value);
        return NULL;
    }
    if (opts->streams != NULL) {
        int64_t *s = opts->streams;
        s[STREAM_TIMED] += 1;
        if (items > 0) {
            s[STREAM_WITH_ITEMS] += 1;
            s[STREAM_ITEMS] += items;
            s[STREAM_FIRST_NS] += non_negative(first_ns - start - opts->clock_ns);
            s[STREAM_GAPS_NS] += non_negative(last_ns - first_ns - (items - 1) * opts->clock_ns);
        }
    }
    return value;
}

static int
parse_int64_buffer(PyObject *obj, Py_buffer *view, const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) {
        return -1;
    }
    if (view->itemsize != 8 || view->format == NULL ||
        !(strcmp(view->format, "q") == 0 || strcmp(view->format, "@q") == 0 ||
          strcmp(view->format, "=q") == 0 || strcmp(view->format, "l") == 0)) {
        PyErr_Format(PyExc_TypeError, "time_rounds(): %s must be a writable buffer of int64 "
                                      "('q'), e.g. array.array('q')", name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *
time_rounds(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 5 || nargs > 7) {
        return PyErr_Format(PyExc_TypeError,
                            "time_rounds() takes 5 to 7 arguments (fn, args, kwargs, loops, out, "
                            "calls=None, streams=None), %zd given",
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
    per_call_options opts = {NULL, NULL, 0};
    if (nargs > 5 && args[5] != Py_None) {
        if (!pab_histogram_check(args[5])) {
            return PyErr_Format(PyExc_TypeError,
                                "time_rounds(): calls must be a Histogram or None, not %.100s",
                                Py_TYPE(args[5])->tp_name);
        }
        opts.calls = args[5];
    }
    Py_buffer streams_view = {0};
    if (nargs > 6 && args[6] != Py_None) {
        if (parse_int64_buffer(args[6], &streams_view, "streams") < 0) {
            return NULL;
        }
        if (streams_view.len < (Py_ssize_t)(STREAM_FIELDS * 8)) {
            PyBuffer_Release(&streams_view);
            return PyErr_Format(PyExc_ValueError,
                                "time_rounds(): streams must hold at least %d int64 slots",
                                (int)STREAM_FIELDS);
        }
        opts.streams = (int64_t *)streams_view.buf;
    }
    Py_buffer view;
    if (parse_int64_buffer(args[4], &view, "out") < 0) {
        if (opts.streams != NULL) {
            PyBuffer_Release(&streams_view);
        }
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
    if (opts.calls != NULL || opts.streams != NULL) {
        /* The per-call loop: kept apart so that the plain loop below stays as lean as it was. */
        if (opts.calls != NULL) {
            opts.clock_ns = clock_read_cost_ns();
        }
        for (Py_ssize_t r = 0; r < rounds; r++) {
            int64_t start = pab_now_ns();
            for (long long i = 0; i < loops; i++) {
                int last = i == last_loop && r == last_round;
                PyObject *value = call_per_call(call, fn, stack + 1, nargsf, kwnames, &opts, last);
                if (value == NULL) {
                    goto done;
                }
                if (last) {
                    result = value;
                }
                else {
                    Py_DECREF(value);
                }
                if ((i & signal_mask) == 0 && PyErr_CheckSignals() < 0) {
                    goto done;
                }
                if ((i & YIELD_CHECK_MASK) == YIELD_CHECK_MASK) {
                    maybe_yield_gil(&last_yield_ns, switch_interval_ns);
                }
            }
            out[r] = pab_now_ns() - start;
            maybe_yield_gil(&last_yield_ns, switch_interval_ns);
        }
    }
    else {
        for (Py_ssize_t r = 0; r < rounds; r++) {
            int64_t start = pab_now_ns();
            for (long long i = 0; i < loops; i++) {
                PyObject *value = call(fn, stack + 1, nargsf, kwnames);
                if (value == NULL) {
                    if (!PyErr_Occurred()) {
                        PyErr_Format(PyExc_SystemError,
                                     "%R returned NULL without setting an exception", fn);
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
    }
    if (result == NULL) { /* no rounds */
        result = Py_NewRef(Py_None);
    }
    goto cleanup;

done:
    Py_CLEAR(result);
cleanup:
    PyBuffer_Release(&view);
    if (opts.streams != NULL) {
        PyBuffer_Release(&streams_view);
    }
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
     "time_rounds(fn, args, kwargs, loops, out, calls=None, streams=None) -> object\n--\n\n"
     "Call fn(*args, **kwargs) loops times per round, once per element of out (a writable int64 "
     "buffer), store each round's nanoseconds there, and return the final call's result (None if "
     "out is empty). Exceptions from fn and KeyboardInterrupt propagate at once.\n\n"
     "calls: a Histogram; each call is also timed on its own and its nanoseconds, less the cost "
     "of a clock read, recorded there (this adds two clock reads per call to the rounds).\n"
     "streams: a writable int64 buffer of 5 slots; fn's values are iterators, consumed to the end "
     "inside each call, and the final call's result is the list of its items. With calls, each "
     "item is timed too and the slots get added: calls timed, calls with items, items, "
     "sum of ns from call start to first item, sum of ns from first to last item."},
    {NULL, NULL, 0, NULL},
};

int
pab_runner_exec(PyObject *module, pab_state *state)
{
    return PyModule_AddFunctions(module, runner_functions);
}

/* Clocks: now_ns/now, CPU time, the cycle counter with its calibration, clock_info(), and Timer. */
#include "module.h"
#include "clock.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

pab_clock_calibration pab_clock = {0};

static pthread_once_t calibration_once = PTHREAD_ONCE_INIT;

/* Where cycles() reads from, for clock_info(). */
static const char *cycles_source = "now_ns";

/* Reads CLOCK_MONOTONIC on both sides of one counter read and keeps the tightest of a few tries,
 * so that the pair (cycles, ns) is known to within the bracket's width. */
static void
read_clock_pair(uint64_t *cycles, int64_t *ns)
{
    int64_t best_width = INT64_MAX;
    *cycles = 0;
    *ns = 0;
    for (int i = 0; i < 16; i++) {
        int64_t before = pab_monotonic_ns();
        uint64_t c = pab_cycles();
        int64_t after = pab_monotonic_ns();
        if (after - before < best_width) {
            best_width = after - before;
            *cycles = c;
            *ns = before + (after - before) / 2;
        }
    }
}

/* The kernel keeps CLOCK_MONOTONIC with the TSC only where the TSC is invariant and synchronised
 * across CPUs; then reading the TSC ourselves is as trustworthy as the kernel's clock. */
static int
counter_drives_kernel_clock(void)
{
#if defined(__x86_64__) && defined(__linux__)
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(0x80000007, &eax, &ebx, &ecx, &edx) || !(edx & (1u << 8))) {
        return 0; /* no invariant TSC */
    }
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (f == NULL) {
        return 0;
    }
    char name[64] = {0};
    int ok = fgets(name, sizeof(name), f) != NULL && strncmp(name, "tsc", 3) == 0 &&
             (name[3] == '\n' || name[3] == '\0');
    fclose(f);
    return ok;
#elif defined(__aarch64__) && defined(__linux__)
    /* The generic timer is the architected system counter; the kernel's clock is built on it. */
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (f == NULL) {
        return 0;
    }
    char name[64] = {0};
    int ok = fgets(name, sizeof(name), f) != NULL && strncmp(name, "arch_sys_counter", 16) == 0;
    fclose(f);
    return ok;
#else
    return 0;
#endif
}

static void
calibrate_once(void)
{
    pab_clock.counter_is_clock = 0;
#if PAB_HAVE_CYCLE_COUNTER
    uint64_t c0 = 0, c1 = 0;
    int64_t t0 = 0, t1 = 0;
    read_clock_pair(&c0, &t0);
    /* 5 ms: with brackets of ~100 ns the rate is known to about 2e-5. */
    while (pab_monotonic_ns() - t0 < 5000000) {
    }
    read_clock_pair(&c1, &t1);
    double cycles_per_second = 0.0;
    if (c1 > c0 && t1 > t0) {
        cycles_per_second = (double)(c1 - c0) * 1e9 / (double)(t1 - t0);
    }
#if defined(__aarch64__)
    {
        uint64_t freq;
        __asm__ __volatile__("mrs %0, cntfrq_el0" : "=r"(freq));
        if (freq > 0) {
            cycles_per_second = (double)freq; /* the architected rate is exact */
        }
    }
#endif
    if (cycles_per_second >= 1e6 && cycles_per_second <= 1e11) {
        pab_clock.cycles_per_second = cycles_per_second;
        pab_clock.ns_per_cycle = 1e9 / cycles_per_second;
        pab_clock.mult = (uint64_t)llround(pab_clock.ns_per_cycle * 4294967296.0);
        pab_clock.base_cycles = c1;
        pab_clock.base_ns = t1;
#if defined(__x86_64__) || defined(__i386__)
        cycles_source = "rdtsc";
#else
        cycles_source = "cntvct_el0";
#endif
#if defined(__SIZEOF_INT128__)
        pab_clock.counter_is_clock = counter_drives_kernel_clock();
#endif
    }
#endif
}

void
pab_clock_calibrate(void)
{
    (void)pthread_once(&calibration_once, calibrate_once);
}

static int
have_cycle_counter(void)
{
    return pab_clock.cycles_per_second > 0.0;
}

/* ---- module functions ---- */

static PyObject *
now_ns(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLongLong(pab_now_ns());
}

static PyObject *
now(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble((double)pab_now_ns() * 1e-9);
}

static PyObject *
cpu_clock_result(int64_t ns)
{
    if (ns < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLongLong(ns);
}

static PyObject *
thread_cpu_ns(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return cpu_clock_result(pab_thread_cpu_ns());
}

static PyObject *
process_cpu_ns(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return cpu_clock_result(pab_process_cpu_ns());
}

static PyObject *
cycles(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    if (have_cycle_counter()) {
        return PyLong_FromUnsignedLongLong(pab_cycles());
    }
    return PyLong_FromLongLong(pab_now_ns());
}

static PyObject *
cycles_to_ns(PyObject *module, PyObject *arg)
{
    if (!PyLong_Check(arg)) {
        return PyErr_Format(PyExc_TypeError, "cycles_to_ns(): n must be an int, not %.100s",
                            Py_TYPE(arg)->tp_name);
    }
    if (!have_cycle_counter()) {
        return Py_NewRef(arg); /* cycles() falls back to now_ns(): its unit is already ns */
    }
    double n = PyLong_AsDouble(arg);
    if (n == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    return PyLong_FromDouble(n * pab_clock.ns_per_cycle);
}

static int
compare_int64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

#define OVERHEAD_SAMPLES 1001

/* Median of back-to-back reads of one clock, in that clock's own unit. */
#define MEDIAN_BACK_TO_BACK(result, read_expr)                                                    \
    do {                                                                                          \
        int64_t deltas_[OVERHEAD_SAMPLES];                                                        \
        for (int i_ = 0; i_ < OVERHEAD_SAMPLES; i_++) {                                           \
            int64_t a_ = (int64_t)(read_expr);                                                    \
            int64_t b_ = (int64_t)(read_expr);                                                    \
            deltas_[i_] = b_ - a_;                                                                \
        }                                                                                         \
        qsort(deltas_, OVERHEAD_SAMPLES, sizeof(int64_t), compare_int64);                         \
        (result) = deltas_[OVERHEAD_SAMPLES / 2];                                                 \
    } while (0)

static double
clock_resolution_ns(clockid_t clock)
{
    struct timespec ts;
    if (clock_getres(clock, &ts) != 0) {
        return NAN;
    }
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Adds {"source": ..., "resolution_ns": ..., "overhead_ns": ...} under name; extra may add more. */
static int
add_clock_entry(PyObject *info, const char *name, const char *source, double resolution_ns,
                double overhead_ns, PyObject **entry_out)
{
    PyObject *entry = Py_BuildValue("{s:s,s:d,s:d}", "source", source, "resolution_ns",
                                    resolution_ns, "overhead_ns", overhead_ns);
    if (entry == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(info, name, entry);
    if (entry_out != NULL && rc == 0) {
        *entry_out = entry;
    }
    else {
        Py_DECREF(entry);
    }
    return rc;
}

static PyObject *
clock_info(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    int64_t now_overhead, thread_overhead, process_overhead, cycles_overhead;
    Py_BEGIN_ALLOW_THREADS
    MEDIAN_BACK_TO_BACK(now_overhead, pab_now_ns());
    MEDIAN_BACK_TO_BACK(thread_overhead, pab_thread_cpu_ns());
    MEDIAN_BACK_TO_BACK(process_overhead, pab_process_cpu_ns());
    if (have_cycle_counter()) {
        MEDIAN_BACK_TO_BACK(cycles_overhead, pab_cycles());
    }
    else {
        cycles_overhead = now_overhead;
    }
    Py_END_ALLOW_THREADS

    PyObject *info = PyDict_New();
    if (info == NULL) {
        return NULL;
    }
    PyObject *cycles_entry = NULL;
    int counter = have_cycle_counter();
    double cycle_ns = counter ? pab_clock.ns_per_cycle : clock_resolution_ns(CLOCK_MONOTONIC);
    if (add_clock_entry(info, "now_ns",
                        pab_clock.counter_is_clock ? (strcmp(cycles_source, "rdtsc") == 0
                                                          ? "rdtsc scaled to CLOCK_MONOTONIC"
                                                          : "cntvct_el0 scaled to CLOCK_MONOTONIC")
                                                   : "clock_gettime(CLOCK_MONOTONIC)",
                        pab_clock.counter_is_clock ? cycle_ns
                                                   : clock_resolution_ns(CLOCK_MONOTONIC),
                        (double)now_overhead, NULL) < 0 ||
        add_clock_entry(info, "thread_cpu_ns", "clock_gettime(CLOCK_THREAD_CPUTIME_ID)",
                        clock_resolution_ns(CLOCK_THREAD_CPUTIME_ID), (double)thread_overhead,
                        NULL) < 0 ||
        add_clock_entry(info, "process_cpu_ns", "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)",
                        clock_resolution_ns(CLOCK_PROCESS_CPUTIME_ID), (double)process_overhead,
                        NULL) < 0 ||
        add_clock_entry(info, "cycles", counter ? cycles_source : "now_ns (no cycle counter)",
                        cycle_ns, counter ? (double)cycles_overhead * pab_clock.ns_per_cycle
                                          : (double)cycles_overhead,
                        &cycles_entry) < 0) {
        Py_DECREF(info);
        return NULL;
    }
    PyObject *hz = PyFloat_FromDouble(counter ? pab_clock.cycles_per_second : 1e9);
    int rc = hz == NULL ? -1 : PyDict_SetItemString(cycles_entry, "frequency_hz", hz);
    Py_XDECREF(hz);
    if (rc == 0) {
        rc = PyDict_SetItemString(cycles_entry, "counter", counter ? Py_True : Py_False);
    }
    if (rc == 0) {
        PyObject *raw = PyFloat_FromDouble((double)cycles_overhead);
        rc = raw == NULL ? -1 : PyDict_SetItemString(cycles_entry, "overhead_cycles", raw);
        Py_XDECREF(raw);
    }
    Py_DECREF(cycles_entry);
    if (rc < 0) {
        Py_DECREF(info);
        return NULL;
    }
    return info;
}

/* ---- Timer ---- */

typedef enum { TIMER_CPU_NONE, TIMER_CPU_PROCESS, TIMER_CPU_THREAD } timer_cpu_clock;

typedef struct {
    PyObject_HEAD
    timer_cpu_clock cpu_clock;
    int running;
    int64_t start_ns;
    int64_t start_cpu_ns;
    int64_t elapsed_ns;
    int64_t cpu_ns;
    int64_t last_lap_ns;
    int64_t *laps;
    Py_ssize_t n_laps;
    Py_ssize_t laps_capacity;
} TimerObject;

static int64_t
timer_read_cpu(const TimerObject *self)
{
    switch (self->cpu_clock) {
    case TIMER_CPU_PROCESS:
        return pab_process_cpu_ns();
    case TIMER_CPU_THREAD:
        return pab_thread_cpu_ns();
    default:
        return 0;
    }
}

static int
timer_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    TimerObject *self = (TimerObject *)op;
    static char *kwlist[] = {"cpu", NULL};
    PyObject *cpu = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:Timer", kwlist, &cpu)) {
        return -1;
    }
    if (cpu == Py_None) {
        self->cpu_clock = TIMER_CPU_NONE;
    }
    else if (PyUnicode_Check(cpu) && PyUnicode_CompareWithASCIIString(cpu, "process") == 0) {
        self->cpu_clock = TIMER_CPU_PROCESS;
    }
    else if (PyUnicode_Check(cpu) && PyUnicode_CompareWithASCIIString(cpu, "thread") == 0) {
        self->cpu_clock = TIMER_CPU_THREAD;
    }
    else {
        PyErr_Format(PyExc_ValueError,
                     "Timer(): cpu must be 'process', 'thread' or None, not %R", cpu);
        return -1;
    }
    self->running = 0;
    self->elapsed_ns = 0;
    self->cpu_ns = 0;
    self->n_laps = 0;
    return 0;
}

static void
timer_dealloc(PyObject *op)
{
    TimerObject *self = (TimerObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyMem_Free(self->laps);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *
timer_start(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    TimerObject *self = (TimerObject *)op;
    if (self->running) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Timer is already running; nest a second Timer to time an inner span");
        return NULL;
    }
    self->running = 1;
    self->elapsed_ns = 0;
    self->cpu_ns = 0;
    self->n_laps = 0;
    self->start_cpu_ns = timer_read_cpu(self);
    self->start_ns = pab_now_ns();
    self->last_lap_ns = self->start_ns;
    return Py_NewRef(op);
}

static PyObject *
timer_stop(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    int64_t end_ns = pab_now_ns();
    TimerObject *self = (TimerObject *)op;
    if (!self->running) {
        PyErr_SetString(PyExc_RuntimeError, "Timer.stop() called before start()");
        return NULL;
    }
    self->elapsed_ns = end_ns - self->start_ns;
    self->cpu_ns = self->cpu_clock == TIMER_CPU_NONE ? 0 : timer_read_cpu(self) - self->start_cpu_ns;
    self->running = 0;
    return PyLong_FromLongLong(self->elapsed_ns);
}

static PyObject *
timer_lap(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    int64_t t = pab_now_ns();
    TimerObject *self = (TimerObject *)op;
    if (!self->running) {
        PyErr_SetString(PyExc_RuntimeError, "Timer.lap() needs a running Timer");
        return NULL;
    }
    if (self->n_laps == self->laps_capacity) {
        Py_ssize_t capacity = self->laps_capacity ? self->laps_capacity * 2 : 8;
        int64_t *laps = PyMem_Realloc(self->laps, (size_t)capacity * sizeof(int64_t));
        if (laps == NULL) {
            return PyErr_NoMemory();
        }
        self->laps = laps;
        self->laps_capacity = capacity;
    }
    int64_t lap_ns = t - self->last_lap_ns;
    self->laps[self->n_laps++] = lap_ns;
    self->last_lap_ns = t;
    return PyLong_FromLongLong(lap_ns);
}

static PyObject *
timer_enter(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return timer_start(op, NULL);
}

static PyObject *
timer_exit(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *elapsed = timer_stop(op, NULL);
    if (elapsed == NULL) {
        return NULL;
    }
    Py_DECREF(elapsed);
    Py_RETURN_FALSE;
}

static PyObject *
timer_get_elapsed_ns(PyObject *op, void *Py_UNUSED(closure))
{
    TimerObject *self = (TimerObject *)op;
    int64_t ns = self->running ? pab_now_ns() - self->start_ns : self->elapsed_ns;
    return PyLong_FromLongLong(ns);
}

static PyObject *
timer_get_elapsed(PyObject *op, void *Py_UNUSED(closure))
{
    TimerObject *self = (TimerObject *)op;
    int64_t ns = self->running ? pab_now_ns() - self->start_ns : self->elapsed_ns;
    return PyFloat_FromDouble((double)ns * 1e-9);
}

static PyObject *
timer_get_cpu_ns(PyObject *op, void *Py_UNUSED(closure))
{
    TimerObject *self = (TimerObject *)op;
    if (self->cpu_clock == TIMER_CPU_NONE) {
        Py_RETURN_NONE;
    }
    int64_t ns = self->running ? timer_read_cpu(self) - self->start_cpu_ns : self->cpu_ns;
    return PyLong_FromLongLong(ns);
}

static PyObject *
timer_get_running(PyObject *op, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((TimerObject *)op)->running);
}

static PyObject *
timer_get_cpu(PyObject *op, void *Py_UNUSED(closure))
{
    switch (((TimerObject *)op)->cpu_clock) {
    case TIMER_CPU_PROCESS:
        return PyUnicode_FromString("process");
    case TIMER_CPU_THREAD:
        return PyUnicode_FromString("thread");
    default:
        Py_RETURN_NONE;
    }
}

static PyObject *
timer_get_laps(PyObject *op, void *Py_UNUSED(closure))
{
    TimerObject *self = (TimerObject *)op;
    PyObject *laps = PyTuple_New(self->n_laps);
    if (laps == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < self->n_laps; i++) {
        PyObject *lap = PyLong_FromLongLong(self->laps[i]);
        if (lap == NULL) {
            Py_DECREF(laps);
            return NULL;
        }
        PyTuple_SET_ITEM(laps, i, lap);
    }
    return laps;
}

static PyMethodDef timer_methods[] = {
    {"start", timer_start, METH_NOARGS,
     "start() -> Timer\n--\n\nStart a new span (clearing elapsed time and laps) and return the "
     "Timer.\nRaises RuntimeError if it is already running."},
    {"stop", timer_stop, METH_NOARGS,
     "stop() -> int\n--\n\nStop the span and return its length in nanoseconds.\nRaises "
     "RuntimeError if the Timer is not running."},
    {"lap", timer_lap, METH_NOARGS,
     "lap() -> int\n--\n\nReturn the nanoseconds since the previous lap (or start) and record it "
     "in laps."},
    {"__enter__", timer_enter, METH_NOARGS, "Start the Timer."},
    {"__exit__", (PyCFunction)(void (*)(void))timer_exit, METH_FASTCALL, "Stop the Timer."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef timer_getset[] = {
    {"elapsed_ns", timer_get_elapsed_ns, NULL,
     "Nanoseconds of the last span, or so far if running.", NULL},
    {"elapsed", timer_get_elapsed, NULL, "elapsed_ns in seconds, as a float.", NULL},
    {"cpu_ns", timer_get_cpu_ns, NULL,
     "CPU nanoseconds spent during the span on the chosen CPU clock, or None if cpu=None.", NULL},
    {"cpu", timer_get_cpu, NULL, "Which CPU clock the Timer reads: 'process', 'thread' or None.",
     NULL},
    {"running", timer_get_running, NULL, "True between start() and stop().", NULL},
    {"laps", timer_get_laps, NULL, "Tuple of lap lengths in nanoseconds, from lap().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot timer_slots[] = {
    {Py_tp_doc, "Timer(cpu='process')\n--\n\nWall-clock timer on now_ns(), with CPU time on "
                "the process or thread CPU clock (cpu=None reads no CPU clock)."},
    {Py_tp_init, timer_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, timer_dealloc},
    {Py_tp_methods, timer_methods},
    {Py_tp_getset, timer_getset},
    {0, NULL},
};

static PyType_Spec timer_spec = {
    .name = "pyagentbench._native.Timer",
    .basicsize = sizeof(TimerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | PAB_TPFLAGS_IMMUTABLE,
    .slots = timer_slots,
};

static PyMethodDef clock_functions[] = {
    {"now_ns", now_ns, METH_NOARGS,
     "now_ns() -> int\n--\n\nMonotonic clock in nanoseconds (see clock_info()['now_ns'])."},
    {"now", now, METH_NOARGS,
     "now() -> float\n--\n\nnow_ns() in seconds; usable as pytest-benchmark's timer."},
    {"thread_cpu_ns", thread_cpu_ns, METH_NOARGS,
     "thread_cpu_ns() -> int\n--\n\nCPU time of the calling thread in nanoseconds."},
    {"process_cpu_ns", process_cpu_ns, METH_NOARGS,
     "process_cpu_ns() -> int\n--\n\nCPU time of the whole process in nanoseconds."},
    {"cycles", cycles, METH_NOARGS,
     "cycles() -> int\n--\n\nThe CPU's cycle counter (rdtsc, cntvct_el0), or now_ns() where "
     "there is none."},
    {"cycles_to_ns", cycles_to_ns, METH_O,
     "cycles_to_ns(n) -> int\n--\n\nConvert a count of cycles() ticks to nanoseconds with the "
     "calibrated counter frequency."},
    {"clock_info", clock_info, METH_NOARGS,
     "clock_info() -> dict\n--\n\nFor each clock: source, resolution_ns and overhead_ns (median "
     "of back-to-back reads)."},
    {NULL, NULL, 0, NULL},
};

int
pab_clock_exec(PyObject *module, pab_state *state)
{
    Py_BEGIN_ALLOW_THREADS
    pab_clock_calibrate();
    Py_END_ALLOW_THREADS
    if (PyModule_AddFunctions(module, clock_functions) < 0) {
        return -1;
    }
    return pab_add_type(module, &timer_spec, NULL, &state->timer_type);
}

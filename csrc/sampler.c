/* Sampler: a background pthread that samples this process's RSS (/proc/self/statm, pread on a
 * descriptor kept open) and process CPU time at a fixed absolute cadence into a preallocated ring.
 * Also the module functions rss(), status_field(), reset_peak_rss_hwm() and trim_heap().
 *
 * The CPU figures leave the sampler thread's own CPU out: each sample subtracts what the thread
 * has used so far (its CLOCK_THREAD_CPUTIME_ID, read by the thread itself, and read a last time
 * just before it exits), so an idle process reads ~0% and a CPU-bound thread at most 100%.
 *
 * The sampler thread never touches the Python API: it works on a sampler_core, plain C memory owned
 * by the Python object. Python reads the core under core->lock. Policy (defaults, the summary's
 * arithmetic, units, the psutil fallback) lives in pyagentbench/instruments/resources.py. */
#ifndef _GNU_SOURCE /* Python.h's pyconfig.h defines it too */
#define _GNU_SOURCE 1
#endif
#include "module.h"
#include "clock.h"
#include "rss.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#if PAB_HAVE_PROCFS_RSS
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#define SAMPLER_MIN_INTERVAL_NS 100000LL        /* 100 us */
#define SAMPLER_MAX_INTERVAL_NS 10000000000LL   /* 10 s */
#define SAMPLER_MIN_CAPACITY 2
#define SAMPLER_MAX_CAPACITY (1 << 26)
/* The longest single sleep: how soon a stop request is seen when the interval is long. */
#define SAMPLER_SLEEP_SLICE_NS 10000000LL       /* 10 ms */
#define SAMPLER_THREAD_STACK_BYTES (64 * 1024)

typedef enum { SAMPLER_IDLE, SAMPLER_RUNNING, SAMPLER_STOPPING, SAMPLER_STOPPED } sampler_phase;

typedef struct sampler_core {
    pthread_mutex_t lock; /* guards every field below except stop_requested and the registry links */
    atomic_int stop_requested;
    struct sampler_core *registry_prev, *registry_next; /* guarded by registry_lock */

    int64_t interval_ns;
    int64_t capacity;
    int64_t *ring; /* [capacity timestamps_ns][capacity rss_bytes][capacity cpu_ns] */

    sampler_phase phase;
    pthread_t thread;
    int thread_joinable; /* a thread of this process was created and not yet joined */
    pid_t owner_pid;     /* the process whose thread samples (fork check) */
    int statm_fd;
    pid_t statm_pid;
    int read_errno; /* first error reading statm, 0 if none */

    int64_t start_mono_ns; /* CLOCK_MONOTONIC at start: the sampling grid's origin */
    uint64_t samples;      /* samples taken since start, including those the ring dropped */
    uint64_t missed_samples;
    int64_t start_ns, last_ns;
    int64_t start_rss_bytes, last_rss_bytes, peak_rss_bytes;
    double rss_sum_bytes;
    int64_t start_cpu_ns, last_cpu_ns; /* process CPU less own_cpu_ns, at the first/last sample */
    int64_t own_cpu_ns; /* CPU the sampler thread has used since start (its last reading) */
} sampler_core;

/* Every live core, so that fork handlers can lock them before fork() and mark them stopped in the
 * child. Process-wide by nature: threads and fork() belong to the process, not to an interpreter. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static sampler_core *registry_head = NULL;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_status = 0;

static void
atfork_prepare(void)
{
    pthread_mutex_lock(&registry_lock);
    for (sampler_core *c = registry_head; c != NULL; c = c->registry_next) {
        pthread_mutex_lock(&c->lock);
    }
}

static void
atfork_parent(void)
{
    for (sampler_core *c = registry_head; c != NULL; c = c->registry_next) {
        pthread_mutex_unlock(&c->lock);
    }
    pthread_mutex_unlock(&registry_lock);
}

/* The child has only the thread that called fork(): no sampler thread survives. A sampler that was
 * running keeps the samples it had and reads as stopped; it can be started again. */
static void
atfork_child(void)
{
    for (sampler_core *c = registry_head; c != NULL; c = c->registry_next) {
        if (c->phase == SAMPLER_RUNNING || c->phase == SAMPLER_STOPPING) {
            c->phase = SAMPLER_STOPPED;
        }
        c->thread_joinable = 0;
        atomic_store(&c->stop_requested, 0);
        pthread_mutex_unlock(&c->lock);
    }
    pthread_mutex_unlock(&registry_lock);
}

static void
register_atfork(void)
{
    atfork_status = pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static void
registry_add(sampler_core *core)
{
    pthread_mutex_lock(&registry_lock);
    core->registry_prev = NULL;
    core->registry_next = registry_head;
    if (registry_head != NULL) {
        registry_head->registry_prev = core;
    }
    registry_head = core;
    pthread_mutex_unlock(&registry_lock);
}

static void
registry_remove(sampler_core *core)
{
    pthread_mutex_lock(&registry_lock);
    if (core->registry_prev != NULL) {
        core->registry_prev->registry_next = core->registry_next;
    }
    else {
        registry_head = core->registry_next;
    }
    if (core->registry_next != NULL) {
        core->registry_next->registry_prev = core->registry_prev;
    }
    pthread_mutex_unlock(&registry_lock);
}

/* Records one sample. Caller holds core->lock.
 * The process CPU clock read from one thread includes the other running threads' CPU only up to
 * their last scheduler update (a tick at most), so once the sampler's own CPU is taken out, a
 * sample could read lower than the one before; the series is kept non-decreasing. The first and
 * last samples are read by the caller of start() and stop(), so the total is exact. */
static void
record_sample(sampler_core *core, int64_t ts_ns, int64_t rss_bytes, int64_t cpu_ns)
{
    if (core->samples > 0 && cpu_ns < core->last_cpu_ns) {
        cpu_ns = core->last_cpu_ns;
    }
    int64_t slot = (int64_t)(core->samples % (uint64_t)core->capacity);
    core->ring[slot] = ts_ns;
    core->ring[core->capacity + slot] = rss_bytes;
    core->ring[2 * core->capacity + slot] = cpu_ns;
    if (core->samples == 0) {
        core->start_ns = ts_ns;
        core->start_rss_bytes = rss_bytes;
        core->start_cpu_ns = cpu_ns;
        core->peak_rss_bytes = rss_bytes;
    }
    if (rss_bytes > core->peak_rss_bytes) {
        core->peak_rss_bytes = rss_bytes;
    }
    core->rss_sum_bytes += (double)rss_bytes;
    core->last_ns = ts_ns;
    core->last_rss_bytes = rss_bytes;
    core->last_cpu_ns = cpu_ns;
    core->samples++;
}

/* The calling thread's CPU time in nanoseconds, or -1. */
static int64_t
own_thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return -1;
    }
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Reads RSS and CPU and records them. Runs with or without the GIL; takes core->lock itself.
 * in_sampler_thread: the caller is the sampler thread, which first updates its own CPU reading
 * (read before the process clock, so the process figure never lacks CPU that is subtracted). */
static void
take_sample(sampler_core *core, int in_sampler_thread)
{
    int64_t own_ns = in_sampler_thread ? own_thread_cpu_ns() : -1;
    int64_t rss_bytes = pab_statm_rss_bytes(core->statm_fd);
    int saved_errno = errno;
    int64_t cpu_ns = pab_process_cpu_ns();
    int64_t ts_ns = pab_now_ns();
    pthread_mutex_lock(&core->lock);
    if (own_ns >= 0) {
        core->own_cpu_ns = own_ns;
    }
    cpu_ns -= core->own_cpu_ns;
    if (rss_bytes < 0) {
        if (core->read_errno == 0) {
            core->read_errno = saved_errno ? saved_errno : EIO;
        }
    }
    else {
        record_sample(core, ts_ns, rss_bytes, cpu_ns);
    }
    pthread_mutex_unlock(&core->lock);
}

/* Sleeps until CLOCK_MONOTONIC reaches deadline_ns, in slices so that a stop request is seen within
 * SAMPLER_SLEEP_SLICE_NS. Returns 1 if a stop was requested, else 0. */
static int
sleep_until(sampler_core *core, int64_t deadline_ns)
{
    for (;;) {
        if (atomic_load_explicit(&core->stop_requested, memory_order_acquire)) {
            return 1;
        }
        int64_t now = pab_monotonic_ns();
        if (now >= deadline_ns) {
            return 0;
        }
        int64_t wake_ns = deadline_ns - now > SAMPLER_SLEEP_SLICE_NS ? now + SAMPLER_SLEEP_SLICE_NS
                                                                     : deadline_ns;
        struct timespec ts = {.tv_sec = (time_t)(wake_ns / 1000000000),
                              .tv_nsec = (long)(wake_ns % 1000000000)};
        (void)clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL); /* EINTR: loop again */
    }
}

/* The sampler thread: one sample per tick of a grid anchored at start, never drifting. A tick that
 * comes when the next one is already due (the thread was descheduled) is counted in missed_samples
 * and the grid skips ahead, so samples never bunch up to catch up. */
static void *
sampler_thread_main(void *arg)
{
    sampler_core *core = (sampler_core *)arg;
    const int64_t interval_ns = core->interval_ns;
    int64_t deadline_ns = core->start_mono_ns + interval_ns;
    for (;;) {
        if (sleep_until(core, deadline_ns)) {
            break;
        }
        take_sample(core, 1);
        deadline_ns += interval_ns;
        int64_t now = pab_monotonic_ns();
        if (now >= deadline_ns) {
            int64_t late_ticks = (now - deadline_ns) / interval_ns + 1;
            deadline_ns += late_ticks * interval_ns;
            pthread_mutex_lock(&core->lock);
            core->missed_samples += (uint64_t)late_ticks;
            pthread_mutex_unlock(&core->lock);
        }
    }
    /* The last reading of the thread's own CPU, for the sample stop() takes after the join. */
    int64_t own_ns = own_thread_cpu_ns();
    if (own_ns >= 0) {
        pthread_mutex_lock(&core->lock);
        core->own_cpu_ns = own_ns;
        pthread_mutex_unlock(&core->lock);
    }
    return NULL;
}

/* Lets the sampler thread run on any CPU this thread may use except the one it is on now. Woken
 * on the measured thread's CPU, the sampler would preempt it at every tick and evict its caches:
 * measured here, that slowed a pure-Python loop by 3-4% at 1 kHz, against about 0% from another
 * CPU. With a single allowed CPU there is no choice and nothing changes. */
static void
keep_off_current_cpu(pthread_attr_t *attr)
{
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
        return;
    }
    int cpu = sched_getcpu();
    if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &allowed) || CPU_COUNT(&allowed) < 2) {
        return;
    }
    CPU_CLR(cpu, &allowed);
    (void)pthread_attr_setaffinity_np(attr, sizeof(allowed), &allowed);
}

/* Requests the thread's end and joins it. Caller does not hold core->lock. */
static void
stop_thread(sampler_core *core, int release_gil)
{
    atomic_store_explicit(&core->stop_requested, 1, memory_order_release);
    if (release_gil) {
        Py_BEGIN_ALLOW_THREADS
        (void)pthread_join(core->thread, NULL);
        Py_END_ALLOW_THREADS
    }
    else {
        /* The thread never waits for the GIL, so joining while holding it cannot deadlock; it
         * returns within one sleep slice plus one sample. */
        (void)pthread_join(core->thread, NULL);
    }
}

/* ---- the Python type ---- */

typedef struct {
    PyObject_HEAD
    sampler_core *core;
} SamplerObject;

static int64_t
int64_arg(PyObject *obj, const char *name)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "Sampler(): %s must be an int, not %.100s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    long long value = PyLong_AsLongLong(obj);
    if (value == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "Sampler(): %s is out of range", name);
        }
        return -1;
    }
    return (int64_t)value;
}

static PyObject *
sampler_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"interval_ns", "capacity", NULL};
    PyObject *interval_obj, *capacity_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:Sampler", keywords, &interval_obj,
                                     &capacity_obj)) {
        return NULL;
    }
    int64_t interval_ns = int64_arg(interval_obj, "interval_ns");
    if (interval_ns == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (interval_ns < SAMPLER_MIN_INTERVAL_NS || interval_ns > SAMPLER_MAX_INTERVAL_NS) {
        return PyErr_Format(PyExc_ValueError,
                            "Sampler(): interval_ns must be from %lld (100 us) to %lld (10 s), "
                            "got %lld",
                            SAMPLER_MIN_INTERVAL_NS, SAMPLER_MAX_INTERVAL_NS,
                            (long long)interval_ns);
    }
    int64_t capacity = int64_arg(capacity_obj, "capacity");
    if (capacity == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (capacity < SAMPLER_MIN_CAPACITY || capacity > SAMPLER_MAX_CAPACITY) {
        return PyErr_Format(PyExc_ValueError,
                            "Sampler(): capacity must be from %d to %d samples, got %lld",
                            SAMPLER_MIN_CAPACITY, SAMPLER_MAX_CAPACITY, (long long)capacity);
    }
    if (atfork_status != 0) {
        errno = atfork_status;
        return PyErr_SetFromErrno(PyExc_OSError);
    }

    sampler_core *core = calloc(1, sizeof(sampler_core));
    if (core == NULL) {
        return PyErr_NoMemory();
    }
    /* Touched now, so that filling the ring later does not itself raise RSS. */
    core->ring = malloc((size_t)capacity * 3 * sizeof(int64_t));
    if (core->ring == NULL) {
        free(core);
        return PyErr_NoMemory();
    }
    memset(core->ring, 0, (size_t)capacity * 3 * sizeof(int64_t));
    int err = pthread_mutex_init(&core->lock, NULL);
    if (err != 0) {
        free(core->ring);
        free(core);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    atomic_init(&core->stop_requested, 0);
    core->interval_ns = interval_ns;
    core->capacity = capacity;
    core->phase = SAMPLER_IDLE;
    core->statm_fd = -1;

    SamplerObject *self = (SamplerObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        pthread_mutex_destroy(&core->lock);
        free(core->ring);
        free(core);
        return NULL;
    }
    self->core = core;
    registry_add(core);
    return (PyObject *)self;
}

static void
sampler_dealloc(SamplerObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    sampler_core *core = self->core;
    if (core != NULL) {
        pthread_mutex_lock(&core->lock);
        int join = core->thread_joinable && core->owner_pid == getpid();
        core->thread_joinable = 0;
        pthread_mutex_unlock(&core->lock);
        if (join) {
            stop_thread(core, 0);
        }
        registry_remove(core);
        if (core->statm_fd >= 0) {
            close(core->statm_fd);
        }
        pthread_mutex_destroy(&core->lock);
        free(core->ring);
        free(core);
        self->core = NULL;
    }
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *
sampler_start(SamplerObject *self, PyObject *Py_UNUSED(ignored))
{
    sampler_core *core = self->core;
    pid_t pid = getpid();
    pthread_mutex_lock(&core->lock);
    if (core->phase == SAMPLER_RUNNING || core->phase == SAMPLER_STOPPING) {
        pthread_mutex_unlock(&core->lock);
        PyErr_SetString(PyExc_RuntimeError, "Sampler.start(): the sampler is already running");
        return NULL;
    }
    if (core->statm_fd >= 0 && core->statm_pid != pid) {
        close(core->statm_fd); /* opened by the parent before fork(): it reads the parent */
        core->statm_fd = -1;
    }
    if (core->statm_fd < 0) {
        core->statm_fd = pab_statm_open();
        if (core->statm_fd < 0) {
            pthread_mutex_unlock(&core->lock);
            return PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/proc/self/statm");
        }
        core->statm_pid = pid;
    }
    core->samples = 0;
    core->missed_samples = 0;
    core->rss_sum_bytes = 0.0;
    core->read_errno = 0;
    core->own_cpu_ns = 0;
    atomic_store(&core->stop_requested, 0);
    core->start_mono_ns = pab_monotonic_ns();
    pthread_mutex_unlock(&core->lock);

    take_sample(core, 0); /* the first sample, at the grid's origin */

    pthread_mutex_lock(&core->lock);
    if (core->samples == 0) {
        int saved = core->read_errno;
        pthread_mutex_unlock(&core->lock);
        errno = saved;
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/proc/self/statm");
    }
    /* The sampler thread gets no signals: they stay with the interpreter's threads. */
    sigset_t all_signals, previous;
    sigfillset(&all_signals);
    pthread_attr_t attr;
    int err = pthread_attr_init(&attr);
    if (err == 0) {
        (void)pthread_attr_setstacksize(&attr, SAMPLER_THREAD_STACK_BYTES);
        keep_off_current_cpu(&attr);
        pthread_sigmask(SIG_SETMASK, &all_signals, &previous);
        err = pthread_create(&core->thread, &attr, sampler_thread_main, core);
        pthread_sigmask(SIG_SETMASK, &previous, NULL);
        pthread_attr_destroy(&attr);
    }
    if (err != 0) {
        core->phase = SAMPLER_STOPPED;
        pthread_mutex_unlock(&core->lock);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    core->thread_joinable = 1;
    core->owner_pid = pid;
    core->phase = SAMPLER_RUNNING;
    pthread_mutex_unlock(&core->lock);
    Py_RETURN_NONE;
}

static PyObject *
sampler_stop(SamplerObject *self, PyObject *Py_UNUSED(ignored))
{
    sampler_core *core = self->core;
    pthread_mutex_lock(&core->lock);
    if (core->phase != SAMPLER_RUNNING) {
        const char *why = core->phase == SAMPLER_STOPPING ? "is already stopping"
                                                          : "is not running (call start() first)";
        pthread_mutex_unlock(&core->lock);
        PyErr_Format(PyExc_RuntimeError, "Sampler.stop(): the sampler %s", why);
        return NULL;
    }
    core->phase = SAMPLER_STOPPING;
    int join = core->thread_joinable;
    core->thread_joinable = 0;
    pthread_mutex_unlock(&core->lock);
    if (join) {
        stop_thread(core, 1);
    }
    take_sample(core, 0); /* the last sample, at stop */
    pthread_mutex_lock(&core->lock);
    core->phase = SAMPLER_STOPPED;
    pthread_mutex_unlock(&core->lock);
    Py_RETURN_NONE;
}

static PyObject *
sampler_get_running(SamplerObject *self, void *Py_UNUSED(closure))
{
    pthread_mutex_lock(&self->core->lock);
    int running = self->core->phase == SAMPLER_RUNNING;
    pthread_mutex_unlock(&self->core->lock);
    return PyBool_FromLong(running);
}

static PyObject *
sampler_get_interval_ns(SamplerObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->core->interval_ns); /* immutable after construction */
}

static PyObject *
sampler_get_capacity(SamplerObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->core->capacity);
}

/* A consistent copy of the running totals, as a dict of ints (and one float). */
static PyObject *
sampler_totals(SamplerObject *self, PyObject *Py_UNUSED(ignored))
{
    sampler_core *core = self->core;
    pthread_mutex_lock(&core->lock);
    sampler_core copy = *core;
    pthread_mutex_unlock(&core->lock);
    if (copy.samples == 0) {
        copy.start_ns = copy.last_ns = 0;
        copy.start_rss_bytes = copy.last_rss_bytes = copy.peak_rss_bytes = 0;
        copy.start_cpu_ns = copy.last_cpu_ns = copy.own_cpu_ns = 0;
    }
    const char *phase = copy.phase == SAMPLER_IDLE      ? "idle"
                        : copy.phase == SAMPLER_RUNNING ? "running"
                        : copy.phase == SAMPLER_STOPPING ? "stopping"
                                                        : "stopped";
    return Py_BuildValue(
        "{s:s,s:K,s:K,s:L,s:L,s:L,s:L,s:L,s:d,s:L,s:L,s:L,s:i,s:L}", "phase", phase, "samples",
        (unsigned long long)copy.samples, "missed_samples", (unsigned long long)copy.missed_samples,
        "start_ns", (long long)copy.start_ns, "last_ns", (long long)copy.last_ns,
        "start_rss_bytes", (long long)copy.start_rss_bytes, "last_rss_bytes",
        (long long)copy.last_rss_bytes, "peak_rss_bytes", (long long)copy.peak_rss_bytes,
        "rss_sum_bytes", copy.rss_sum_bytes, "start_cpu_ns", (long long)copy.start_cpu_ns,
        "last_cpu_ns", (long long)copy.last_cpu_ns, "interval_ns", (long long)copy.interval_ns,
        "read_errno", copy.read_errno, "sampler_cpu_ns", (long long)copy.own_cpu_ns);
}

/* The samples still in the ring, oldest first, as three bytes objects of native int64. */
static PyObject *
sampler_series(SamplerObject *self, PyObject *Py_UNUSED(ignored))
{
    sampler_core *core = self->core;
    size_t ring_bytes = (size_t)core->capacity * 3 * sizeof(int64_t);
    int64_t *scratch = PyMem_RawMalloc(ring_bytes);
    if (scratch == NULL) {
        return PyErr_NoMemory();
    }
    pthread_mutex_lock(&core->lock);
    uint64_t samples = core->samples;
    memcpy(scratch, core->ring, ring_bytes);
    pthread_mutex_unlock(&core->lock);

    int64_t capacity = core->capacity;
    int64_t stored = samples < (uint64_t)capacity ? (int64_t)samples : capacity;
    int64_t oldest = samples < (uint64_t)capacity ? 0 : (int64_t)(samples % (uint64_t)capacity);
    PyObject *result = PyTuple_New(3);
    if (result == NULL) {
        PyMem_RawFree(scratch);
        return NULL;
    }
    for (int column = 0; column < 3; column++) {
        PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(stored * 8));
        if (bytes == NULL) {
            Py_DECREF(result);
            PyMem_RawFree(scratch);
            return NULL;
        }
        int64_t *out = (int64_t *)PyBytes_AS_STRING(bytes);
        const int64_t *in = scratch + column * capacity;
        int64_t first_run = capacity - oldest < stored ? capacity - oldest : stored;
        memcpy(out, in + oldest, (size_t)first_run * 8);
        memcpy(out + first_run, in, (size_t)(stored - first_run) * 8);
        PyTuple_SET_ITEM(result, column, bytes);
    }
    PyMem_RawFree(scratch);
    return result;
}

static PyMethodDef sampler_methods[] = {
    {"start", (PyCFunction)sampler_start, METH_NOARGS,
     "start() -> None\n--\n\nTake the first sample and start the sampler thread. RuntimeError if "
     "it is already running."},
    {"stop", (PyCFunction)sampler_stop, METH_NOARGS,
     "stop() -> None\n--\n\nStop and join the sampler thread (the GIL released), then take the "
     "last sample. RuntimeError if it is not running."},
    {"totals", (PyCFunction)sampler_totals, METH_NOARGS,
     "totals() -> dict\n--\n\nA consistent copy of the running totals: samples, missed_samples, "
     "first/last timestamps, RSS (first, last, peak, sum), process CPU ns less the sampler "
     "thread's own (start_cpu_ns, last_cpu_ns) and the sampler thread's own (sampler_cpu_ns)."},
    {"series", (PyCFunction)sampler_series, METH_NOARGS,
     "series() -> (bytes, bytes, bytes)\n--\n\nThe samples still in the ring, oldest first: "
     "timestamps (now_ns clock), RSS bytes and process CPU ns less the sampler thread's own, "
     "each as native int64."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sampler_getset[] = {
    {"running", (getter)sampler_get_running, NULL, "True while the sampler thread runs.", NULL},
    {"interval_ns", (getter)sampler_get_interval_ns, NULL, "Nanoseconds between samples.", NULL},
    {"capacity", (getter)sampler_get_capacity, NULL, "Samples the ring holds.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot sampler_slots[] = {
    {Py_tp_new, sampler_new},
    {Py_tp_dealloc, sampler_dealloc},
    {Py_tp_methods, sampler_methods},
    {Py_tp_getset, sampler_getset},
    {Py_tp_doc, "Sampler(interval_ns, capacity)\n--\n\nNative RSS and CPU sampler thread. Use "
                "pyagentbench.Sampler, which adds defaults and summaries."},
    {0, NULL},
};

static PyType_Spec sampler_spec = {
    .name = "pyagentbench._native.Sampler",
    .basicsize = sizeof(SamplerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = sampler_slots,
};

#endif /* PAB_HAVE_PROCFS_RSS */

/* ---- module functions: instantaneous RSS and the kernel's high-water mark ---- */

static PyObject *
rss_function(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    int64_t bytes = pab_rss_bytes();
    if (bytes < 0) {
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/proc/self/statm");
    }
    return PyLong_FromLongLong(bytes);
}

static PyObject *
status_field_function(PyObject *module, PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        return PyErr_Format(PyExc_TypeError, "status_field(): name must be a str, not %.100s",
                            Py_TYPE(arg)->tp_name);
    }
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) {
        return NULL;
    }
    int64_t bytes = pab_status_field_bytes(name);
    if (bytes < 0) {
        if (errno == ENOENT) {
            Py_RETURN_NONE;
        }
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/proc/self/status");
    }
    return PyLong_FromLongLong(bytes);
}

static PyObject *
reset_peak_rss_hwm(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    int status = pab_reset_peak_rss();
    if (status < 0) {
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/proc/self/clear_refs");
    }
    return PyBool_FromLong(status);
}

static PyObject *
trim_heap_function(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    int64_t before, after;
    int status;
    Py_BEGIN_ALLOW_THREADS
    before = pab_rss_bytes();
    status = pab_trim_heap();
    after = pab_rss_bytes();
    Py_END_ALLOW_THREADS
    int64_t released = 0;
    if (status >= 0 && before >= 0 && after >= 0 && before > after) {
        released = before - after;
    }
    return Py_BuildValue("(OL)", status >= 0 ? Py_True : Py_False, (long long)released);
}

static PyMethodDef rss_functions[] = {
    {"rss", rss_function, METH_NOARGS,
     "rss() -> int\n--\n\nResident set size in bytes, from /proc/self/statm."},
    {"status_field", status_field_function, METH_O,
     "status_field(name) -> int | None\n--\n\nA size field of /proc/self/status (e.g. 'VmHWM', "
     "'VmRSS') in bytes, or None if the kernel does not report it."},
    {"reset_peak_rss_hwm", reset_peak_rss_hwm, METH_NOARGS,
     "reset_peak_rss_hwm() -> bool\n--\n\nReset the kernel's RSS high-water mark (VmHWM). False "
     "where that is not permitted."},
    {"trim_heap", trim_heap_function, METH_NOARGS,
     "trim_heap() -> (bool, int)\n--\n\nHand the C heap's free memory back to the OS (glibc "
     "malloc_trim(0)), with the GIL released. Returns (ran, rss_bytes_released): ran is False, and "
     "nothing is done, where the C library has no malloc_trim; the bytes are the RSS drop seen "
     "in /proc/self/statm around the call (0 where statm cannot be read)."},
    {NULL, NULL, 0, NULL},
};

int
pab_sampler_exec(PyObject *module, pab_state *state)
{
    pab_clock_calibrate();
#if PAB_HAVE_PROCFS_RSS
    (void)pthread_once(&atfork_once, register_atfork);
    if (pab_add_type(module, &sampler_spec, NULL, &state->sampler_type) < 0) {
        return -1;
    }
#endif
    return PyModule_AddFunctions(module, rss_functions);
}

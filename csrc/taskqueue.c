/* TaskQueue: a thread-safe priority queue (lower priority first, FIFO among equals) with blocking
 * put/get that release the GIL, close(), task_done()/join() and per-item wait-time statistics.
 *
 * Locking: a pthread mutex guards every field below it in TaskQueueObject. A thread may take the
 * mutex with or without the GIL, but never waits for the GIL while holding the mutex, so the two
 * cannot deadlock. Items move between the heap and their caller under the mutex alone: a blocked
 * get() pops its item without the GIL and only touches reference counts once it has the GIL back.
 * Waits are cut into slices of WAIT_SLICE_NS so that Ctrl-C (PyErr_CheckSignals) is seen promptly.
 *
 * fork(): every live queue is in a process-wide registry. Fork handlers take each queue's mutex
 * before fork() (so no other thread is halfway through changing a queue), and in the child, where
 * only the forking thread survives, give each queue a fresh mutex and conditions and zero its
 * waiter counts: the inherited condition variables still account for waiters that no longer exist
 * (signalling them can block forever), and the counts would have put() and task_done() signal them.
 */
#include "histogram.h"
#include "clock.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#define WAIT_SLICE_NS INT64_C(20000000) /* 20 ms between signal checks while blocked */
#define WAIT_FOREVER INT64_MAX

/* A priority as (whole, frac), compared lexicographically, which orders ints and floats exactly as
 * Python compares them (a double alone rounds ints above 2**53: 2**53 + 1 came out before 2**53):
 *   - an int in int64: (value, 0.0);
 *   - a float d with -2**63 <= d < 2**63: (trunc(d), d - trunc(d)); the subtraction is exact, and
 *     the values with one `whole` k fill [k, k+1) for k > 0, (k-1, k] for k < 0 and (-1, 1) for 0,
 *     intervals ordered as k is;
 *   - a float (or an int a float holds exactly, such as 2**70) at or beyond +-2**63:
 *     (INT64_MAX, d) or (INT64_MIN, d): past every int64 on its side, ordered among themselves by d.
 * parse_priority refuses what this cannot hold exactly (NaN, other ints beyond int64). */
typedef struct {
    int64_t whole;
    double frac;
} queue_priority;

typedef struct {
    queue_priority priority;
    uint64_t seq;
    int64_t put_ns;
    PyObject *obj; /* strong reference */
} queue_item;

typedef struct TaskQueueObject {
    PyObject_HEAD
    pab_state *state; /* borrowed: the type (held by every instance) keeps the module alive */
    pthread_mutex_t mutex;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    pthread_cond_t all_done;
    int sync_ready; /* 1 once mutex and conditions exist */
    struct TaskQueueObject *registry_prev, *registry_next; /* guarded by registry_lock */
    /* guarded by mutex: */
    queue_item *heap;
    Py_ssize_t size;
    Py_ssize_t capacity;
    Py_ssize_t maxsize; /* 0: unbounded */
    uint64_t next_seq;
    int64_t unfinished;
    int closed;
    int waiting_getters;
    int waiting_putters;
    int waiting_joiners;
    uint64_t puts;
    uint64_t gets;
    Py_ssize_t max_depth;
    pab_hist wait_ns;
} TaskQueueObject;

/* ---- synchronisation objects and fork ---- */

/* Initialises the mutex and the three conditions (on CLOCK_MONOTONIC). 0, or an errno value with
 * nothing left initialised. */
static int
queue_sync_init(TaskQueueObject *self)
{
    int rc = pthread_mutex_init(&self->mutex, NULL);
    if (rc != 0) {
        return rc;
    }
    pthread_condattr_t attr;
    rc = pthread_condattr_init(&attr);
    if (rc != 0) {
        pthread_mutex_destroy(&self->mutex);
        return rc;
    }
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0) {
        rc = pthread_cond_init(&self->not_empty, &attr);
    }
    if (rc == 0 && (rc = pthread_cond_init(&self->not_full, &attr)) != 0) {
        pthread_cond_destroy(&self->not_empty);
    }
    if (rc == 0 && (rc = pthread_cond_init(&self->all_done, &attr)) != 0) {
        pthread_cond_destroy(&self->not_empty);
        pthread_cond_destroy(&self->not_full);
    }
    pthread_condattr_destroy(&attr);
    if (rc != 0) {
        pthread_mutex_destroy(&self->mutex);
    }
    return rc;
}

/* Every queue whose synchronisation objects exist. Process-wide by nature: threads and fork()
 * belong to the process, not to an interpreter. Lock order: registry_lock, then queue mutexes. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static TaskQueueObject *registry_head = NULL;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_status = 0;

static void
atfork_prepare(void)
{
    pthread_mutex_lock(&registry_lock);
    for (TaskQueueObject *q = registry_head; q != NULL; q = q->registry_next) {
        pthread_mutex_lock(&q->mutex); /* holders never wait for the GIL: this cannot deadlock */
    }
}

static void
atfork_parent(void)
{
    for (TaskQueueObject *q = registry_head; q != NULL; q = q->registry_next) {
        pthread_mutex_unlock(&q->mutex);
    }
    pthread_mutex_unlock(&registry_lock);
}

/* Only the forking thread lives on in the child, and it holds every queue mutex (taken by
 * atfork_prepare): no waiter survives, so fresh objects replace the inherited ones (never
 * destroyed: destroying a condition with waiters is undefined). Items, counts and stats stay. */
static void
atfork_child(void)
{
    for (TaskQueueObject *q = registry_head; q != NULL; q = q->registry_next) {
        q->waiting_getters = q->waiting_putters = q->waiting_joiners = 0;
        if (queue_sync_init(q) != 0) {
            /* Cannot happen for process-private objects with these attributes on glibc or musl
             * (they allocate nothing); keep the inherited objects, now waiter-free, usable. */
            pthread_mutex_unlock(&q->mutex);
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

static void
register_atfork(void)
{
    atfork_status = pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static void
registry_add(TaskQueueObject *q)
{
    pthread_mutex_lock(&registry_lock);
    q->registry_prev = NULL;
    q->registry_next = registry_head;
    if (registry_head != NULL) {
        registry_head->registry_prev = q;
    }
    registry_head = q;
    pthread_mutex_unlock(&registry_lock);
}

static void
registry_remove(TaskQueueObject *q)
{
    pthread_mutex_lock(&registry_lock);
    if (q->registry_prev != NULL) {
        q->registry_prev->registry_next = q->registry_next;
    }
    else {
        registry_head = q->registry_next;
    }
    if (q->registry_next != NULL) {
        q->registry_next->registry_prev = q->registry_prev;
    }
    pthread_mutex_unlock(&registry_lock);
}

/* ---- heap (callers hold the mutex) ---- */

static inline int
item_before(const queue_item *a, const queue_item *b)
{
    if (a->priority.whole != b->priority.whole) {
        return a->priority.whole < b->priority.whole;
    }
    if (a->priority.frac != b->priority.frac) {
        return a->priority.frac < b->priority.frac;
    }
    return a->seq < b->seq;
}

static int
heap_push(TaskQueueObject *self, queue_item item)
{
    if (self->size == self->capacity) {
        Py_ssize_t capacity = self->capacity ? self->capacity * 2 : 16;
        queue_item *heap = (queue_item *)PyMem_RawRealloc(self->heap, (size_t)capacity * sizeof(queue_item));
        if (heap == NULL) {
            return -1;
        }
        self->heap = heap;
        self->capacity = capacity;
    }
    queue_item *h = self->heap;
    Py_ssize_t i = self->size++;
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (!item_before(&item, &h[parent])) {
            break;
        }
        h[i] = h[parent];
        i = parent;
    }
    h[i] = item;
    return 0;
}

static queue_item
heap_pop(TaskQueueObject *self)
{
    queue_item *h = self->heap;
    queue_item top = h[0];
    queue_item last = h[--self->size];
    Py_ssize_t n = self->size, i = 0;
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= n) {
            break;
        }
        if (child + 1 < n && item_before(&h[child + 1], &h[child])) {
            child++;
        }
        if (!item_before(&h[child], &last)) {
            break;
        }
        h[i] = h[child];
        i = child;
    }
    if (n > 0) {
        h[i] = last;
    }
    return top;
}

/* Pops the first item and does the bookkeeping of a get. Mutex held. */
static inline queue_item
queue_take(TaskQueueObject *self)
{
    queue_item item = heap_pop(self);
    self->gets++;
    int64_t waited = pab_now_ns() - item.put_ns;
    if (waited < 0) {
        waited = 0;
    }
    /* One count per get: the int64 counts cannot overflow (2**63 gets). The histogram's counts
     * grow to the largest wait so far (allocated by the first get); if memory is short for that,
     * the wait goes unrecorded (wait_ns.count then falls short of gets): no exception can be
     * raised here, where the GIL may not be held. */
    int above = waited > self->wait_ns.highest;
    if (above) {
        waited = self->wait_ns.highest;
    }
    if (pab_hist_record_in_range(&self->wait_ns, waited, 1) == 0 && above) {
        pab_hist_count_clamped_above(&self->wait_ns, 1);
    }
    if (self->waiting_putters > 0) {
        pthread_cond_signal(&self->not_full);
    }
    return item;
}

static inline int
queue_is_full(const TaskQueueObject *self)
{
    return self->maxsize > 0 && self->size >= self->maxsize;
}

/* Adds an item (the caller gives its reference). Mutex held. -1 on memory failure. */
static inline int
queue_add(TaskQueueObject *self, PyObject *obj, queue_priority priority)
{
    queue_item item = {priority, self->next_seq, pab_now_ns(), obj};
    if (heap_push(self, item) < 0) {
        return -1;
    }
    self->next_seq++;
    self->puts++;
    self->unfinished++;
    if (self->size > self->max_depth) {
        self->max_depth = self->size;
    }
    if (self->waiting_getters > 0) {
        pthread_cond_signal(&self->not_empty);
    }
    return 0;
}

/* ---- waiting ---- */

static void
abs_deadline(int64_t deadline_ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(deadline_ns / 1000000000);
    ts->tv_nsec = (long)(deadline_ns % 1000000000);
}

static int64_t
slice_deadline(int64_t deadline_ns)
{
    int64_t slice = pab_monotonic_ns() + WAIT_SLICE_NS;
    return deadline_ns < slice ? deadline_ns : slice;
}

/* timeout argument: None -> WAIT_FOREVER, else a deadline on CLOCK_MONOTONIC. */
static int
parse_timeout(PyObject *obj, const char *where, int64_t *deadline_ns)
{
    if (obj == NULL || obj == Py_None) {
        *deadline_ns = WAIT_FOREVER;
        return 0;
    }
    double seconds = PyFloat_AsDouble(obj);
    if (seconds == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Format(PyExc_TypeError, "%s: timeout must be a number or None, not %.100s", where,
                         Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    if (!(seconds >= 0.0)) {
        PyErr_Format(PyExc_ValueError, "%s: timeout must be a non-negative number, got %R", where,
                     obj);
        return -1;
    }
    if (seconds > 1e9) {
        *deadline_ns = WAIT_FOREVER;
        return 0;
    }
    *deadline_ns = pab_monotonic_ns() + (int64_t)(seconds * 1e9);
    return 0;
}

/* Parses up to n arguments by position or keyword into out[] (NULL when absent). */
static int
parse_arguments(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                const char *const *names, Py_ssize_t n, Py_ssize_t required, PyObject **out)
{
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments (%zd given)", fname, n, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = i < nargs ? args[i] : NULL;
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = 0;
        while (i < n && PyUnicode_CompareWithASCIIString(name, names[i]) != 0) {
            i++;
        }
        if (i == n) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", fname, name);
            return -1;
        }
        if (out[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname, names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (Py_ssize_t i = 0; i < required; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
            return -1;
        }
    }
    return 0;
}

static int
parse_block(PyObject *obj, int *block)
{
    if (obj == NULL) {
        *block = 1;
        return 0;
    }
    int value = PyObject_IsTrue(obj);
    if (value < 0) {
        return -1;
    }
    *block = value;
    return 0;
}

static PyObject *
raise_closed(TaskQueueObject *self)
{
    PyErr_SetString(self->state->queue_closed_error, "the TaskQueue is closed");
    return NULL;
}

/* ---- get ---- */

static PyObject *
queue_get_impl(TaskQueueObject *self, int block, int64_t deadline_ns)
{
    queue_item item;
    pthread_mutex_lock(&self->mutex);
    if (self->size > 0) {
        item = queue_take(self);
        pthread_mutex_unlock(&self->mutex);
        return item.obj;
    }
    int closed = self->closed;
    pthread_mutex_unlock(&self->mutex);
    if (closed) {
        return raise_closed(self);
    }
    if (!block) {
        PyErr_SetNone(self->state->queue_empty_error);
        return NULL;
    }
    for (;;) {
        int got = 0, timed_out = 0;
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&self->mutex);
        struct timespec ts;
        abs_deadline(slice_deadline(deadline_ns), &ts);
        self->waiting_getters++;
        while (self->size == 0 && !self->closed) {
            if (pthread_cond_timedwait(&self->not_empty, &self->mutex, &ts) == ETIMEDOUT) {
                break;
            }
        }
        self->waiting_getters--;
        if (self->size > 0) {
            item = queue_take(self);
            got = 1;
        }
        closed = self->closed;
        timed_out = pab_monotonic_ns() >= deadline_ns;
        pthread_mutex_unlock(&self->mutex);
        Py_END_ALLOW_THREADS
        if (got) {
            return item.obj;
        }
        if (closed) {
            return raise_closed(self);
        }
        if (timed_out) {
            PyErr_SetNone(self->state->queue_empty_error);
            return NULL;
        }
        if (PyErr_CheckSignals() < 0) {
            return NULL;
        }
    }
}

static PyObject *
queue_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    TaskQueueObject *self = (TaskQueueObject *)op;
    if (nargs == 0 && kwnames == NULL) {
        return queue_get_impl(self, 1, WAIT_FOREVER);
    }
    static const char *const names[] = {"block", "timeout"};
    PyObject *values[2];
    int block;
    int64_t deadline_ns;
    if (parse_arguments("get", args, nargs, kwnames, names, 2, 0, values) < 0 ||
        parse_block(values[0], &block) < 0 || parse_timeout(values[1], "get()", &deadline_ns) < 0) {
        return NULL;
    }
    return queue_get_impl(self, block, deadline_ns);
}

static PyObject *
queue_get_nowait(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return queue_get_impl((TaskQueueObject *)op, 0, 0);
}

/* ---- put ---- */

static PyObject *
queue_put_impl(TaskQueueObject *self, PyObject *obj, queue_priority priority, int block,
               int64_t deadline_ns)
{
    Py_INCREF(obj);
    pthread_mutex_lock(&self->mutex);
    if (!self->closed && !queue_is_full(self)) {
        int rc = queue_add(self, obj, priority);
        pthread_mutex_unlock(&self->mutex);
        if (rc < 0) {
            Py_DECREF(obj);
            return PyErr_NoMemory();
        }
        Py_RETURN_NONE;
    }
    int closed = self->closed;
    pthread_mutex_unlock(&self->mutex);
    if (closed) {
        Py_DECREF(obj);
        return raise_closed(self);
    }
    if (!block) {
        Py_DECREF(obj);
        PyErr_SetNone(self->state->queue_full_error);
        return NULL;
    }
    for (;;) {
        int added = 0, failed = 0, timed_out = 0;
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&self->mutex);
        struct timespec ts;
        abs_deadline(slice_deadline(deadline_ns), &ts);
        self->waiting_putters++;
        while (queue_is_full(self) && !self->closed) {
            if (pthread_cond_timedwait(&self->not_full, &self->mutex, &ts) == ETIMEDOUT) {
                break;
            }
        }
        self->waiting_putters--;
        closed = self->closed;
        if (!closed && !queue_is_full(self)) {
            failed = queue_add(self, obj, priority) < 0;
            added = !failed;
        }
        timed_out = pab_monotonic_ns() >= deadline_ns;
        pthread_mutex_unlock(&self->mutex);
        Py_END_ALLOW_THREADS
        if (added) {
            Py_RETURN_NONE;
        }
        if (failed) {
            Py_DECREF(obj);
            return PyErr_NoMemory();
        }
        if (closed) {
            Py_DECREF(obj);
            return raise_closed(self);
        }
        if (timed_out) {
            Py_DECREF(obj);
            PyErr_SetNone(self->state->queue_full_error);
            return NULL;
        }
        if (PyErr_CheckSignals() < 0) {
            Py_DECREF(obj);
            return NULL;
        }
    }
}

/* A float (not NaN) as a priority; see queue_priority. */
static queue_priority
priority_from_double(double d)
{
    queue_priority p;
    if (d >= 9223372036854775808.0) { /* 2**63, exact as a double */
        p.whole = INT64_MAX;
        p.frac = d;
    }
    else if (d < -9223372036854775808.0) {
        p.whole = INT64_MIN;
        p.frac = d;
    }
    else {
        double whole = trunc(d);
        p.whole = (int64_t)whole; /* in range: -2**63 <= whole <= 2**63 - 1024 */
        p.frac = d - whole;       /* exact (Sterbenz); +-0.0 for integral d, equal either way */
    }
    return p;
}

/* An int beyond int64: accepted when a float holds it exactly (it then orders as that float),
 * refused otherwise, since its order against its neighbours could not be kept. */
static int
parse_big_int_priority(PyObject *obj, queue_priority *priority)
{
    double d = PyLong_AsDouble(obj);
    if (d == -1.0 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
    }
    else {
        PyObject *back = PyLong_FromDouble(d);
        if (back == NULL) {
            return -1;
        }
        int exact = PyObject_RichCompareBool(back, obj, Py_EQ);
        Py_DECREF(back);
        if (exact < 0) {
            return -1;
        }
        if (exact) {
            *priority = priority_from_double(d);
            return 0;
        }
    }
    PyObject *bits = PyObject_CallMethod(obj, "bit_length", NULL);
    if (bits == NULL) {
        return -1;
    }
    PyErr_Format(PyExc_ValueError,
                 "put(): priority is an int of %S bits, beyond int64 and not exactly a float, so "
                 "its order could not be kept exactly; use an int from -2**63 to 2**63 - 1, or a "
                 "float if rounding it is acceptable",
                 bits);
    Py_DECREF(bits);
    return -1;
}

static int
parse_priority(PyObject *obj, queue_priority *priority)
{
    if (obj == NULL) {
        priority->whole = 0;
        priority->frac = 0.0;
        return 0;
    }
    if (PyLong_Check(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (overflow) {
            return parse_big_int_priority(obj, priority);
        }
        priority->whole = (int64_t)v;
        priority->frac = 0.0;
        return 0;
    }
    if (!PyFloat_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "put(): priority must be an int or a float, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    double value = PyFloat_AS_DOUBLE(obj);
    if (isnan(value)) {
        PyErr_SetString(PyExc_ValueError, "put(): priority must not be NaN");
        return -1;
    }
    *priority = priority_from_double(value);
    return 0;
}

static PyObject *
queue_put(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    TaskQueueObject *self = (TaskQueueObject *)op;
    queue_priority priority;
    if (kwnames == NULL && (nargs == 1 || nargs == 2)) {
        if (parse_priority(nargs == 2 ? args[1] : NULL, &priority) < 0) {
            return NULL;
        }
        return queue_put_impl(self, args[0], priority, 1, WAIT_FOREVER);
    }
    static const char *const names[] = {"item", "priority", "block", "timeout"};
    PyObject *values[4];
    int block;
    int64_t deadline_ns;
    if (parse_arguments("put", args, nargs, kwnames, names, 4, 1, values) < 0 ||
        parse_priority(values[1], &priority) < 0 || parse_block(values[2], &block) < 0 ||
        parse_timeout(values[3], "put()", &deadline_ns) < 0) {
        return NULL;
    }
    return queue_put_impl(self, values[0], priority, block, deadline_ns);
}

static PyObject *
queue_put_nowait(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"item", "priority"};
    PyObject *values[2];
    queue_priority priority;
    if (parse_arguments("put_nowait", args, nargs, kwnames, names, 2, 1, values) < 0 ||
        parse_priority(values[1], &priority) < 0) {
        return NULL;
    }
    return queue_put_impl((TaskQueueObject *)op, values[0], priority, 0, 0);
}

/* ---- waits used by the asyncio adapter ---- */

/* Waits until pred holds or the queue closes or the deadline passes; GIL released in slices.
 * Returns 1 (ready or closed), 0 (timed out) or -1 (signal handler raised). */
static int
queue_wait_until(TaskQueueObject *self, int want_item, int64_t deadline_ns)
{
    for (;;) {
        int ready;
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&self->mutex);
        struct timespec ts;
        abs_deadline(slice_deadline(deadline_ns), &ts);
        for (;;) {
            ready = self->closed || (want_item ? self->size > 0 : !queue_is_full(self));
            if (ready) {
                break;
            }
            if (want_item) {
                self->waiting_getters++;
                int rc = pthread_cond_timedwait(&self->not_empty, &self->mutex, &ts);
                self->waiting_getters--;
                if (rc == ETIMEDOUT) {
                    break;
                }
            }
            else {
                self->waiting_putters++;
                int rc = pthread_cond_timedwait(&self->not_full, &self->mutex, &ts);
                self->waiting_putters--;
                if (rc == ETIMEDOUT) {
                    break;
                }
            }
        }
        /* A woken waiter that takes nothing passes the wake-up on. */
        if (ready && !self->closed) {
            pthread_cond_signal(want_item ? &self->not_empty : &self->not_full);
        }
        pthread_mutex_unlock(&self->mutex);
        Py_END_ALLOW_THREADS
        if (ready) {
            return 1;
        }
        if (pab_monotonic_ns() >= deadline_ns) {
            return 0;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

static PyObject *
queue_wait_method(PyObject *op, PyObject *const *args, Py_ssize_t nargs, int want_item,
                  const char *where)
{
    int64_t deadline_ns;
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "%s takes at most one argument (timeout)", where);
        return NULL;
    }
    if (parse_timeout(nargs ? args[0] : NULL, where, &deadline_ns) < 0) {
        return NULL;
    }
    int rc = queue_wait_until((TaskQueueObject *)op, want_item, deadline_ns);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static PyObject *
queue_wait_not_empty(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return queue_wait_method(op, args, nargs, 1, "wait_not_empty()");
}

static PyObject *
queue_wait_not_full(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return queue_wait_method(op, args, nargs, 0, "wait_not_full()");
}

/* ---- task tracking, close, introspection ---- */

static PyObject *
queue_task_done(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    TaskQueueObject *self = (TaskQueueObject *)op;
    pthread_mutex_lock(&self->mutex);
    if (self->unfinished <= 0) {
        pthread_mutex_unlock(&self->mutex);
        PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
        return NULL;
    }
    if (--self->unfinished == 0 && self->waiting_joiners > 0) {
        pthread_cond_broadcast(&self->all_done);
    }
    pthread_mutex_unlock(&self->mutex);
    Py_RETURN_NONE;
}

static PyObject *
queue_join(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    TaskQueueObject *self = (TaskQueueObject *)op;
    static const char *const names[] = {"timeout"};
    PyObject *values[1];
    int64_t deadline_ns;
    if (parse_arguments("join", args, nargs, kwnames, names, 1, 0, values) < 0 ||
        parse_timeout(values[0], "join()", &deadline_ns) < 0) {
        return NULL;
    }
    for (;;) {
        int done, closed;
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&self->mutex);
        struct timespec ts;
        abs_deadline(slice_deadline(deadline_ns), &ts);
        self->waiting_joiners++;
        while (self->unfinished > 0 && !self->closed) {
            if (pthread_cond_timedwait(&self->all_done, &self->mutex, &ts) == ETIMEDOUT) {
                break;
            }
        }
        self->waiting_joiners--;
        done = self->unfinished == 0;
        closed = self->closed;
        pthread_mutex_unlock(&self->mutex);
        Py_END_ALLOW_THREADS
        if (done) {
            Py_RETURN_TRUE;
        }
        if (closed || pab_monotonic_ns() >= deadline_ns) {
            Py_RETURN_FALSE;
        }
        if (PyErr_CheckSignals() < 0) {
            return NULL;
        }
    }
}

static PyObject *
queue_close(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    TaskQueueObject *self = (TaskQueueObject *)op;
    pthread_mutex_lock(&self->mutex);
    self->closed = 1;
    pthread_cond_broadcast(&self->not_empty);
    pthread_cond_broadcast(&self->not_full);
    pthread_cond_broadcast(&self->all_done);
    pthread_mutex_unlock(&self->mutex);
    Py_RETURN_NONE;
}

static PyObject *
queue_qsize(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    TaskQueueObject *self = (TaskQueueObject *)op;
    pthread_mutex_lock(&self->mutex);
    Py_ssize_t size = self->size;
    pthread_mutex_unlock(&self->mutex);
    return PyLong_FromSsize_t(size);
}

static PyObject *
queue_empty(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    TaskQueueObject *self = (TaskQueueObject *)op;
    pthread_mutex_lock(&self->mutex);
    int empty = self->size == 0;
    pthread_mutex_unlock(&self->mutex);
    return PyBool_FromLong(empty);
}

static PyObject *
queue_full(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    TaskQueueObject *self = (TaskQueueObject *)op;
    pthread_mutex_lock(&self->mutex);
    int full = queue_is_full(self);
    pthread_mutex_unlock(&self->mutex);
    return PyBool_FromLong(full);
}

static PyObject *
queue_stats(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    TaskQueueObject *self = (TaskQueueObject *)op;
    int64_t *counts;
    pthread_mutex_lock(&self->mutex); /* malloc needs no GIL: the lock rule holds */
    pab_hist snapshot = self->wait_ns;
    int copied = pab_hist_copy_counts(&self->wait_ns, &counts);
    unsigned long long puts = self->puts, gets = self->gets;
    Py_ssize_t depth = self->size, max_depth = self->max_depth;
    long long unfinished = self->unfinished;
    pthread_mutex_unlock(&self->mutex);
    if (copied < 0) {
        return PyErr_NoMemory();
    }
    snapshot.counts = counts;
    PyObject *histogram = pab_histogram_from_hist(self->state, &snapshot);
    free(counts);
    if (histogram == NULL) {
        return NULL;
    }
    return Py_BuildValue("{s:K,s:K,s:n,s:n,s:L,s:N}", "puts", puts, "gets", gets, "depth", depth,
                         "max_depth", max_depth, "unfinished", unfinished, "wait_ns", histogram);
}

static PyObject *
queue_get_maxsize(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(((TaskQueueObject *)op)->maxsize);
}

static PyObject *
queue_get_closed(PyObject *op, void *Py_UNUSED(closure))
{
    TaskQueueObject *self = (TaskQueueObject *)op;
    pthread_mutex_lock(&self->mutex);
    int closed = self->closed;
    pthread_mutex_unlock(&self->mutex);
    return PyBool_FromLong(closed);
}

/* ---- lifecycle ---- */

static void taskqueue_dealloc(PyObject *op);

static PyObject *
taskqueue_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"maxsize", NULL};
    PyObject *maxsize_obj = NULL;
    Py_ssize_t maxsize = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:TaskQueue", kwlist, &maxsize_obj)) {
        return NULL;
    }
    if (maxsize_obj != NULL) {
        /* Checked here rather than by "n" so that the message names the argument. */
        if (PyBool_Check(maxsize_obj) || !PyIndex_Check(maxsize_obj)) {
            PyErr_Format(PyExc_TypeError, "TaskQueue(): maxsize must be an int, not %.100s",
                         Py_TYPE(maxsize_obj)->tp_name);
            return NULL;
        }
        maxsize = PyNumber_AsSsize_t(maxsize_obj, NULL); /* clipped: a huge bound is no bound */
        if (maxsize == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (maxsize < 0) {
            PyErr_Format(PyExc_ValueError, "TaskQueue(): maxsize must be >= 0 (0: unbounded), got %R",
                         maxsize_obj);
            return NULL;
        }
    }
    /* The native base (created from our spec) knows the module; subclasses inherit from it. */
    PyTypeObject *base = type;
    while (base != NULL && base->tp_dealloc != taskqueue_dealloc) {
        base = base->tp_base;
    }
    if (base == NULL) {
        PyErr_SetString(PyExc_TypeError, "TaskQueue.__new__(): not a TaskQueue subtype");
        return NULL;
    }
    pab_state *state = (pab_state *)PyType_GetModuleState(base);
    if (state == NULL) {
        return NULL;
    }
    TaskQueueObject *self = (TaskQueueObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->state = state;
    self->maxsize = maxsize;
    /* Allocates no counts: they grow with the waits recorded (histogram.h). */
    if (pab_hist_init(&self->wait_ns, 1, INT64_C(3600000000000), 3, 1) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    if (atfork_status != 0) {
        Py_DECREF(self);
        errno = atfork_status;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    /* pthread functions return their error instead of setting errno. */
    int rc = queue_sync_init(self);
    if (rc != 0) {
        Py_DECREF(self);
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->sync_ready = 1;
    registry_add(self);
    return (PyObject *)self;
}

static int
taskqueue_traverse(PyObject *op, visitproc visit, void *arg)
{
    TaskQueueObject *self = (TaskQueueObject *)op;
    Py_VISIT(Py_TYPE(op));
    if (!self->sync_ready) {
        return 0;
    }
    pthread_mutex_lock(&self->mutex);
    for (Py_ssize_t i = 0; i < self->size; i++) {
        int rc = visit(self->heap[i].obj, arg);
        if (rc) {
            pthread_mutex_unlock(&self->mutex);
            return rc;
        }
    }
    pthread_mutex_unlock(&self->mutex);
    return 0;
}

static int
taskqueue_clear(PyObject *op)
{
    TaskQueueObject *self = (TaskQueueObject *)op;
    if (!self->sync_ready) {
        return 0;
    }
    /* Detach the items under the mutex, release them with it dropped (their finalisers may run
     * Python code that uses this queue). */
    pthread_mutex_lock(&self->mutex);
    queue_item *heap = self->heap;
    Py_ssize_t size = self->size;
    self->heap = NULL;
    self->size = 0;
    self->capacity = 0;
    pthread_mutex_unlock(&self->mutex);
    for (Py_ssize_t i = 0; i < size; i++) {
        Py_DECREF(heap[i].obj);
    }
    PyMem_RawFree(heap);
    return 0;
}

static void
taskqueue_dealloc(PyObject *op)
{
    TaskQueueObject *self = (TaskQueueObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)taskqueue_clear(op);
    if (self->sync_ready) {
        registry_remove(self);
        pthread_cond_destroy(&self->not_empty);
        pthread_cond_destroy(&self->not_full);
        pthread_cond_destroy(&self->all_done);
        pthread_mutex_destroy(&self->mutex);
    }
    pab_hist_free(&self->wait_ns);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef taskqueue_methods[] = {
    {"put", (PyCFunction)(void (*)(void))queue_put, METH_FASTCALL | METH_KEYWORDS,
     "put(item, priority=0, block=True, timeout=None) -> None\n--\n\nAdd item. Lower priority "
     "numbers come out first; equal priorities come out in put order. When the queue is full, "
     "wait (GIL released) up to timeout seconds, then raise queue.Full; with block=False raise "
     "queue.Full at once. Raises QueueClosed after close()."},
    {"put_nowait", (PyCFunction)(void (*)(void))queue_put_nowait, METH_FASTCALL | METH_KEYWORDS,
     "put_nowait(item, priority=0) -> None\n--\n\nput(item, priority, block=False)."},
    {"get", (PyCFunction)(void (*)(void))queue_get, METH_FASTCALL | METH_KEYWORDS,
     "get(block=True, timeout=None) -> item\n--\n\nRemove and return the first item. When the "
     "queue is empty, wait (GIL released, Ctrl-C honoured) up to timeout seconds, then raise "
     "queue.Empty; with block=False raise queue.Empty at once. After close(), return what is "
     "left, then raise QueueClosed."},
    {"get_nowait", queue_get_nowait, METH_NOARGS,
     "get_nowait() -> item\n--\n\nget(block=False)."},
    {"qsize", queue_qsize, METH_NOARGS, "qsize() -> int\n--\n\nNumber of items waiting."},
    {"empty", queue_empty, METH_NOARGS, "empty() -> bool\n--\n\nTrue if no item is waiting."},
    {"full", queue_full, METH_NOARGS,
     "full() -> bool\n--\n\nTrue if a bounded queue holds maxsize items."},
    {"task_done", queue_task_done, METH_NOARGS,
     "task_done() -> None\n--\n\nMark one item taken by get() as processed (for join()). "
     "ValueError if called more times than items were put."},
    {"join", (PyCFunction)(void (*)(void))queue_join, METH_FASTCALL | METH_KEYWORDS,
     "join(timeout=None) -> bool\n--\n\nWait until every item put has been marked task_done(). "
     "True when all are done; False on timeout or when the queue is closed first."},
    {"close", queue_close, METH_NOARGS,
     "close() -> None\n--\n\nRefuse further puts (QueueClosed) and wake every waiter; get() "
     "drains the items left, then raises QueueClosed."},
    {"stats", queue_stats, METH_NOARGS,
     "stats() -> dict\n--\n\nputs, gets, depth, max_depth, unfinished, and wait_ns: a Histogram "
     "of each item's time from put to get in nanoseconds (a snapshot)."},
    {"wait_not_empty", (PyCFunction)(void (*)(void))queue_wait_not_empty, METH_FASTCALL,
     "wait_not_empty(timeout=None) -> bool\n--\n\nWait (GIL released) until an item is waiting or "
     "the queue is closed, without taking it. False on timeout. Used by aget()."},
    {"wait_not_full", (PyCFunction)(void (*)(void))queue_wait_not_full, METH_FASTCALL,
     "wait_not_full(timeout=None) -> bool\n--\n\nWait (GIL released) until there is room or the "
     "queue is closed. False on timeout. Used by aput()."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef taskqueue_getset[] = {
    {"maxsize", queue_get_maxsize, NULL, "Capacity; 0 means unbounded.", NULL},
    {"closed", queue_get_closed, NULL, "True once close() has been called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot taskqueue_slots[] = {
    {Py_tp_new, taskqueue_new},
    {Py_tp_dealloc, taskqueue_dealloc},
    {Py_tp_traverse, taskqueue_traverse},
    {Py_tp_clear, taskqueue_clear},
    {Py_tp_methods, taskqueue_methods},
    {Py_tp_getset, taskqueue_getset},
    {Py_tp_doc,
     "TaskQueue(maxsize=0)\n--\n\nThread-safe priority queue: lower priority numbers first, FIFO "
     "among equal priorities. Blocking calls release the GIL; queue.Full / queue.Empty as in the "
     "standard library; close() wakes every waiter."},
    {0, NULL},
};

static PyType_Spec taskqueue_spec = {
    .name = "pyagentbench._native.TaskQueue",
    .basicsize = sizeof(TaskQueueObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = taskqueue_slots,
};

int
pab_taskqueue_exec(PyObject *module, pab_state *state)
{
    int rc = pthread_once(&atfork_once, register_atfork);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    PyObject *queue_module = PyImport_ImportModule("queue");
    if (queue_module == NULL) {
        return -1;
    }
    state->queue_full_error = PyObject_GetAttrString(queue_module, "Full");
    state->queue_empty_error = PyObject_GetAttrString(queue_module, "Empty");
    Py_DECREF(queue_module);
    if (state->queue_full_error == NULL || state->queue_empty_error == NULL) {
        return -1;
    }
    state->queue_closed_error = PyErr_NewExceptionWithDoc(
        "pyagentbench.QueueClosed",
        "Raised by TaskQueue.put() after close(), and by get() once a closed queue is drained.",
        PyExc_Exception, NULL);
    if (state->queue_closed_error == NULL ||
        PyModule_AddObjectRef(module, "QueueClosed", state->queue_closed_error) < 0) {
        return -1;
    }
    return pab_add_type(module, &taskqueue_spec, NULL, &state->taskqueue_type);
}

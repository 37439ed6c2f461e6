/* AllocCounter: counts allocations, frees, reallocations and requested bytes in the RAW, MEM and
 * OBJ domains through PyMem_SetAllocator hooks that chain to the allocator they replaced.
 *
 * Each active counter owns one alloc_hook per domain; the hook's context holds the previous
 * allocator and the counts. Counters nest: a counter started inside another installs on top and
 * chains to it, so both count. On stop a counter's hooks are removed only if they are still on top;
 * if something was installed after them (tracemalloc, memray, another counter) they stay in the chain
 * as pass-throughs, because that allocator calls them as its "previous" one.
 *
 * Counting rules, per domain:
 *   allocs    malloc, calloc, and realloc(NULL, n) (a realloc that allocates)
 *   frees     free of a non-NULL pointer
 *   reallocs  realloc of an existing block
 *   bytes     bytes requested by the allocations (calloc: nelem * elsize); reallocs add nothing
 * A RAW allocation made by the MEM or OBJ allocator itself (pymalloc hands blocks over 512 bytes to
 * PyMem_RawMalloc) is part of the MEM/OBJ allocation already counted and is not counted again. */
#include "module.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DOMAIN_COUNT 3
static const PyMemAllocatorDomain domains[DOMAIN_COUNT] = {PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM,
                                                           PYMEM_DOMAIN_OBJ};
static const char *const domain_names[DOMAIN_COUNT] = {"raw", "mem", "obj"};

/* One hook in one domain's allocator chain.
 *
 * Lifetime: a hook that may run without the GIL (RAW always; every domain on free-threaded builds)
 * is never freed once it has been installed. A thread may read the allocator just before the hook
 * is removed and then be preempted for any length of time before (or while) it reads the hook, so
 * no grace period is long enough. A removed hook goes on its domain's retired list instead, and a
 * later counter reuses it when it would chain to the very same allocator (`prev` compares equal):
 * then nothing a late thread reads changes except the atomic flag and counts, so at worst such a
 * thread's allocation is counted by the new counter. The retired lists therefore hold at most one
 * hook per (allocator it chains to, nesting depth) ever seen: bounded, however many counters run.
 * With a GIL, MEM and OBJ hooks run only under it and are freed as soon as they are unlinked. */
typedef struct alloc_hook {
    PyMemAllocatorEx prev; /* the allocator this hook replaced and calls; fixed while retired */
    int domain_index;
    atomic_int counting; /* 0: a pass-through left in the chain by a stopped counter */
    atomic_uint_fast64_t allocs, frees, reallocs, bytes;
    struct alloc_hook *retired_next; /* guarded by hooks_lock */
} alloc_hook;

/* How many MEM/OBJ hook calls this thread is inside: RAW hooks do not count while it is > 0. Per
 * thread and process-wide by nature, like the allocator hooks themselves. */
#if defined(__GNUC__) && !defined(__APPLE__)
static _Thread_local int hook_depth __attribute__((tls_model("initial-exec")));
#else
static _Thread_local int hook_depth;
#endif

/* Guards installing and removing hooks and the retired list. Process-wide by nature: the allocators
 * it protects belong to the process. */
static pthread_mutex_t hooks_lock = PTHREAD_MUTEX_INITIALIZER;
static alloc_hook *retired_head[DOMAIN_COUNT]; /* never freed: see alloc_hook */

/* Counter updates. The MEM and OBJ domains are called with the GIL held (on builds that have one),
 * so a relaxed load and store suffice there; RAW runs without the GIL and needs a read-modify-write. */
#ifdef Py_GIL_DISABLED
#define ADD_UNDER_GIL(field, n) atomic_fetch_add_explicit(&(field), (n), memory_order_relaxed)
#else
#define ADD_UNDER_GIL(field, n)                                                                   \
    atomic_store_explicit(&(field), atomic_load_explicit(&(field), memory_order_relaxed) + (n),     \
                          memory_order_relaxed)
#endif
#define ADD_ANY_THREAD(field, n) atomic_fetch_add_explicit(&(field), (n), memory_order_relaxed)

#define COUNTING(hook) atomic_load_explicit(&(hook)->counting, memory_order_relaxed)

/* ---- RAW hooks: no GIL, atomics, skipped inside a MEM/OBJ hook ---- */

static void *
raw_malloc(void *ctx, size_t size)
{
    alloc_hook *hook = ctx;
    if (hook_depth == 0 && COUNTING(hook)) {
        ADD_ANY_THREAD(hook->allocs, 1);
        ADD_ANY_THREAD(hook->bytes, size);
    }
    return hook->prev.malloc(hook->prev.ctx, size);
}

static void *
raw_calloc(void *ctx, size_t nelem, size_t elsize)
{
    alloc_hook *hook = ctx;
    if (hook_depth == 0 && COUNTING(hook)) {
        ADD_ANY_THREAD(hook->allocs, 1);
        ADD_ANY_THREAD(hook->bytes, (uint_fast64_t)nelem * elsize);
    }
    return hook->prev.calloc(hook->prev.ctx, nelem, elsize);
}

static void *
raw_realloc(void *ctx, void *ptr, size_t new_size)
{
    alloc_hook *hook = ctx;
    if (hook_depth == 0 && COUNTING(hook)) {
        if (ptr == NULL) {
            ADD_ANY_THREAD(hook->allocs, 1);
            ADD_ANY_THREAD(hook->bytes, new_size);
        }
        else {
            ADD_ANY_THREAD(hook->reallocs, 1);
        }
    }
    return hook->prev.realloc(hook->prev.ctx, ptr, new_size);
}

static void
raw_free(void *ctx, void *ptr)
{
    alloc_hook *hook = ctx;
    if (ptr != NULL && hook_depth == 0 && COUNTING(hook)) {
        ADD_ANY_THREAD(hook->frees, 1);
    }
    hook->prev.free(hook->prev.ctx, ptr);
}

/* ---- MEM and OBJ hooks: called with the GIL; mark this thread as inside while chaining ---- */

static void *
gil_malloc(void *ctx, size_t size)
{
    alloc_hook *hook = ctx;
    void *(*prev_malloc)(void *, size_t) = hook->prev.malloc;
    void *prev_ctx = hook->prev.ctx;
    if (COUNTING(hook)) {
        ADD_UNDER_GIL(hook->allocs, 1);
        ADD_UNDER_GIL(hook->bytes, size);
    }
    hook_depth++;
    void *ptr = prev_malloc(prev_ctx, size);
    hook_depth--;
    return ptr;
}

static void *
gil_calloc(void *ctx, size_t nelem, size_t elsize)
{
    alloc_hook *hook = ctx;
    void *(*prev_calloc)(void *, size_t, size_t) = hook->prev.calloc;
    void *prev_ctx = hook->prev.ctx;
    if (COUNTING(hook)) {
        ADD_UNDER_GIL(hook->allocs, 1);
        ADD_UNDER_GIL(hook->bytes, (uint_fast64_t)nelem * elsize);
    }
    hook_depth++;
    void *ptr = prev_calloc(prev_ctx, nelem, elsize);
    hook_depth--;
    return ptr;
}

static void *
gil_realloc(void *ctx, void *ptr, size_t new_size)
{
    alloc_hook *hook = ctx;
    void *(*prev_realloc)(void *, void *, size_t) = hook->prev.realloc;
    void *prev_ctx = hook->prev.ctx;
    if (COUNTING(hook)) {
        if (ptr == NULL) {
            ADD_UNDER_GIL(hook->allocs, 1);
            ADD_UNDER_GIL(hook->bytes, new_size);
        }
        else {
            ADD_UNDER_GIL(hook->reallocs, 1);
        }
    }
    hook_depth++;
    void *result = prev_realloc(prev_ctx, ptr, new_size);
    hook_depth--;
    return result;
}

static void
gil_free(void *ctx, void *ptr)
{
    alloc_hook *hook = ctx;
    void (*prev_free)(void *, void *) = hook->prev.free;
    void *prev_ctx = hook->prev.ctx;
    if (ptr != NULL && COUNTING(hook)) {
        ADD_UNDER_GIL(hook->frees, 1);
    }
    hook_depth++;
    prev_free(prev_ctx, ptr);
    hook_depth--;
}

static int
is_our_hook(const PyMemAllocatorEx *alloc)
{
    return alloc->malloc == raw_malloc || alloc->malloc == gil_malloc;
}

/* ---- installing and removing (caller holds hooks_lock and the GIL) ---- */

/* Puts an unlinked hook on its domain's retired list, for reuse (never freed: see alloc_hook). */
static void
retire_hook(alloc_hook *hook)
{
    hook->retired_next = retired_head[hook->domain_index];
    retired_head[hook->domain_index] = hook;
}

static int
same_allocator(const PyMemAllocatorEx *a, const PyMemAllocatorEx *b)
{
    return a->ctx == b->ctx && a->malloc == b->malloc && a->calloc == b->calloc &&
           a->realloc == b->realloc && a->free == b->free;
}

/* Takes off domain d's retired list a hook that chains to prev; NULL if there is none. */
static alloc_hook *
take_retired_hook(int d, const PyMemAllocatorEx *prev)
{
    for (alloc_hook **link = &retired_head[d]; *link != NULL; link = &(*link)->retired_next) {
        alloc_hook *hook = *link;
        if (same_allocator(&hook->prev, prev)) {
            *link = hook->retired_next;
            hook->retired_next = NULL;
            return hook;
        }
    }
    return NULL;
}

static int
install_hooks(alloc_hook *hooks[DOMAIN_COUNT])
{
    /* Find or make every hook before installing any, so a failure has nothing to undo. Nothing
     * else changes the allocators meanwhile: that takes the GIL, which the caller holds. */
    for (int d = 0; d < DOMAIN_COUNT; d++) {
        PyMemAllocatorEx current;
        PyMem_GetAllocator(domains[d], &current);
        hooks[d] = take_retired_hook(d, &current);
        if (hooks[d] == NULL) {
            hooks[d] = calloc(1, sizeof(alloc_hook));
            if (hooks[d] == NULL) {
                for (int j = 0; j < d; j++) {
                    /* Not installed by this call (a reused one was before): back to the list. */
                    atomic_store_explicit(&hooks[j]->counting, 0, memory_order_relaxed);
                    retire_hook(hooks[j]);
                    hooks[j] = NULL;
                }
                return -1;
            }
            hooks[d]->prev = current;
            hooks[d]->domain_index = d;
            atomic_init(&hooks[d]->counting, 0);
        }
        /* A late thread still in a reused hook may add to these: it is counted as this one's. */
        atomic_store_explicit(&hooks[d]->allocs, 0, memory_order_relaxed);
        atomic_store_explicit(&hooks[d]->frees, 0, memory_order_relaxed);
        atomic_store_explicit(&hooks[d]->reallocs, 0, memory_order_relaxed);
        atomic_store_explicit(&hooks[d]->bytes, 0, memory_order_relaxed);
        atomic_store_explicit(&hooks[d]->counting, 1, memory_order_relaxed);
    }
    for (int d = 0; d < DOMAIN_COUNT; d++) {
        PyMemAllocatorEx alloc = {.ctx = hooks[d]};
        if (d == 0) {
            alloc.malloc = raw_malloc;
            alloc.calloc = raw_calloc;
            alloc.realloc = raw_realloc;
            alloc.free = raw_free;
        }
        else {
            alloc.malloc = gil_malloc;
            alloc.calloc = gil_calloc;
            alloc.realloc = gil_realloc;
            alloc.free = gil_free;
        }
        PyMem_SetAllocator(domains[d], &alloc);
    }
    return 0;
}

/* Removes each hook that is still on top of its domain (and any pass-throughs of ours directly
 * beneath it); leaves the others in the chain as pass-throughs. */
static void
remove_hooks(alloc_hook *hooks[DOMAIN_COUNT])
{
    for (int d = DOMAIN_COUNT - 1; d >= 0; d--) {
        alloc_hook *hook = hooks[d];
        hooks[d] = NULL;
        atomic_store_explicit(&hook->counting, 0, memory_order_relaxed);
        PyMemAllocatorEx current;
        PyMem_GetAllocator(domains[d], &current);
        if (current.ctx != hook || !is_our_hook(&current)) {
            continue; /* someone installed after us and calls us: stay as a pass-through */
        }
        PyMemAllocatorEx restore = hook->prev;
        alloc_hook *unlinked = hook;
        hook->retired_next = NULL;
        while (is_our_hook(&restore) && !COUNTING((alloc_hook *)restore.ctx)) {
            alloc_hook *pass_through = restore.ctx;
            restore = pass_through->prev;
            pass_through->retired_next = unlinked;
            unlinked = pass_through;
        }
        PyMem_SetAllocator(domains[d], &restore);
        while (unlinked != NULL) {
            alloc_hook *next = unlinked->retired_next;
#ifndef Py_GIL_DISABLED
            if (d != 0) {
                free(unlinked); /* MEM/OBJ hooks run only with the GIL, which we hold: none is
                                 * inside this one now */
                unlinked = next;
                continue;
            }
#endif
            retire_hook(unlinked);
            unlinked = next;
        }
    }
}

/* ---- the Python type ---- */

typedef struct {
    uint64_t allocs, frees, reallocs, bytes;
} alloc_counts;

typedef struct {
    PyObject_HEAD
    alloc_hook *hooks[DOMAIN_COUNT]; /* non-NULL while active; guarded by hooks_lock */
    alloc_counts final[DOMAIN_COUNT];
} AllocCounterObject;

static void
read_counts(AllocCounterObject *self, alloc_counts out[DOMAIN_COUNT])
{
    pthread_mutex_lock(&hooks_lock);
    for (int d = 0; d < DOMAIN_COUNT; d++) {
        alloc_hook *hook = self->hooks[d];
        if (hook == NULL) {
            out[d] = self->final[d];
        }
        else {
            out[d].allocs = atomic_load_explicit(&hook->allocs, memory_order_relaxed);
            out[d].frees = atomic_load_explicit(&hook->frees, memory_order_relaxed);
            out[d].reallocs = atomic_load_explicit(&hook->reallocs, memory_order_relaxed);
            out[d].bytes = atomic_load_explicit(&hook->bytes, memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&hooks_lock);
}

/* Caller holds hooks_lock; self is active. */
static void
stop_locked(AllocCounterObject *self)
{
    for (int d = 0; d < DOMAIN_COUNT; d++) {
        alloc_hook *hook = self->hooks[d];
        atomic_store_explicit(&hook->counting, 0, memory_order_relaxed);
        self->final[d].allocs = atomic_load_explicit(&hook->allocs, memory_order_relaxed);
        self->final[d].frees = atomic_load_explicit(&hook->frees, memory_order_relaxed);
        self->final[d].reallocs = atomic_load_explicit(&hook->reallocs, memory_order_relaxed);
        self->final[d].bytes = atomic_load_explicit(&hook->bytes, memory_order_relaxed);
    }
    remove_hooks(self->hooks);
}

static PyObject *
alloc_counter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "AllocCounter() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0); /* zeroed: inactive, all counts 0 */
}

static PyObject *
alloc_counter_start(AllocCounterObject *self, PyObject *Py_UNUSED(ignored))
{
    pthread_mutex_lock(&hooks_lock);
    if (self->hooks[0] != NULL) {
        pthread_mutex_unlock(&hooks_lock);
        PyErr_SetString(PyExc_RuntimeError, "AllocCounter.start(): the counter is already active");
        return NULL;
    }
    memset(self->final, 0, sizeof(self->final));
    int status = install_hooks(self->hooks);
    pthread_mutex_unlock(&hooks_lock);
    if (status < 0) {
        return PyErr_NoMemory();
    }
    return Py_NewRef((PyObject *)self);
}

static PyObject *
alloc_counter_stop(AllocCounterObject *self, PyObject *Py_UNUSED(ignored))
{
    pthread_mutex_lock(&hooks_lock);
    if (self->hooks[0] == NULL) {
        pthread_mutex_unlock(&hooks_lock);
        PyErr_SetString(PyExc_RuntimeError,
                        "AllocCounter.stop(): the counter is not active (call start() first)");
        return NULL;
    }
    stop_locked(self);
    pthread_mutex_unlock(&hooks_lock);
    return Py_NewRef((PyObject *)self);
}

static PyObject *
alloc_counter_exit(AllocCounterObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *result = alloc_counter_stop(self, NULL);
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_FALSE;
}

static void
alloc_counter_dealloc(AllocCounterObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    pthread_mutex_lock(&hooks_lock);
    if (self->hooks[0] != NULL) {
        stop_locked(self);
    }
    pthread_mutex_unlock(&hooks_lock);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

enum { FIELD_ALLOCS, FIELD_FREES, FIELD_REALLOCS, FIELD_BYTES };

static PyObject *
alloc_counter_get_field(AllocCounterObject *self, void *closure)
{
    alloc_counts counts[DOMAIN_COUNT];
    read_counts(self, counts);
    uint64_t total = 0;
    for (int d = 0; d < DOMAIN_COUNT; d++) {
        switch ((int)(intptr_t)closure) {
        case FIELD_ALLOCS: total += counts[d].allocs; break;
        case FIELD_FREES: total += counts[d].frees; break;
        case FIELD_REALLOCS: total += counts[d].reallocs; break;
        default: total += counts[d].bytes; break;
        }
    }
    return PyLong_FromUnsignedLongLong(total);
}

static PyObject *
alloc_counter_get_active(AllocCounterObject *self, void *Py_UNUSED(closure))
{
    pthread_mutex_lock(&hooks_lock);
    int active = self->hooks[0] != NULL;
    pthread_mutex_unlock(&hooks_lock);
    return PyBool_FromLong(active);
}

static PyObject *
alloc_counter_by_domain(AllocCounterObject *self, PyObject *Py_UNUSED(ignored))
{
    alloc_counts counts[DOMAIN_COUNT];
    read_counts(self, counts);
    PyObject *result = PyDict_New();
    if (result == NULL) {
        return NULL;
    }
    for (int d = 0; d < DOMAIN_COUNT; d++) {
        PyObject *entry = Py_BuildValue(
            "{s:K,s:K,s:K,s:K}", "allocs", (unsigned long long)counts[d].allocs, "frees",
            (unsigned long long)counts[d].frees, "reallocs", (unsigned long long)counts[d].reallocs,
            "bytes", (unsigned long long)counts[d].bytes);
        if (entry == NULL || PyDict_SetItemString(result, domain_names[d], entry) < 0) {
            Py_XDECREF(entry);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(entry);
    }
    return result;
}

static PyMethodDef alloc_counter_methods[] = {
    {"start", (PyCFunction)alloc_counter_start, METH_NOARGS,
     "start() -> self\n--\n\nInstall the counting hooks on top of the current allocators, counts "
     "reset to zero. RuntimeError if already active."},
    {"stop", (PyCFunction)alloc_counter_stop, METH_NOARGS,
     "stop() -> self\n--\n\nStop counting; remove the hooks if still on top, else leave them as "
     "pass-throughs. RuntimeError if not active."},
    {"__enter__", (PyCFunction)alloc_counter_start, METH_NOARGS, "Same as start()."},
    {"__exit__", (PyCFunction)(void (*)(void))alloc_counter_exit, METH_FASTCALL,
     "Same as stop(); does not suppress exceptions."},
    {"by_domain", (PyCFunction)alloc_counter_by_domain, METH_NOARGS,
     "by_domain() -> dict\n--\n\nThe counts per allocator domain: {'raw'|'mem'|'obj': {'allocs', "
     "'frees', 'reallocs', 'bytes'}}."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef alloc_counter_getset[] = {
    {"allocs", (getter)alloc_counter_get_field, NULL,
     "Allocations: malloc, calloc and realloc(NULL, n), over all domains.",
     (void *)(intptr_t)FIELD_ALLOCS},
    {"frees", (getter)alloc_counter_get_field, NULL, "Frees of non-NULL pointers.",
     (void *)(intptr_t)FIELD_FREES},
    {"reallocs", (getter)alloc_counter_get_field, NULL, "Reallocations of existing blocks.",
     (void *)(intptr_t)FIELD_REALLOCS},
    {"bytes", (getter)alloc_counter_get_field, NULL, "Bytes requested by the allocations.",
     (void *)(intptr_t)FIELD_BYTES},
    {"active", (getter)alloc_counter_get_active, NULL, "True while counting.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot alloc_counter_slots[] = {
    {Py_tp_new, alloc_counter_new},
    {Py_tp_dealloc, alloc_counter_dealloc},
    {Py_tp_methods, alloc_counter_methods},
    {Py_tp_getset, alloc_counter_getset},
    {Py_tp_doc, "AllocCounter()\n--\n\nCounts allocations in the RAW, MEM and OBJ domains while "
                "active. Use pyagentbench.AllocCounter."},
    {0, NULL},
};

static PyType_Spec alloc_counter_spec = {
    .name = "pyagentbench._native.AllocCounter",
    .basicsize = sizeof(AllocCounterObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = alloc_counter_slots,
};

int
pab_allocs_exec(PyObject *module, pab_state *state)
{
    return pab_add_type(module, &alloc_counter_spec, NULL, &state->alloc_counter_type);
}

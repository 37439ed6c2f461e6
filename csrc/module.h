/* Shared declarations for the pyagentbench._native extension.
 *
 * Each component (clock.c, runner.c, histogram.c, ...) keeps its Python-visible objects in the module
 * state below and registers its types and functions from its own *_exec() function, called by module
 * init in module.c. Components add their state fields to PAB_STATE_OBJECTS in their own block; module.c
 * traverses and clears every field listed there, so nothing else needs to change.
 */
#ifndef PYAGENTBENCH_MODULE_H
#define PYAGENTBENCH_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Every strong reference the module state holds: X(C type, field name). */
#define PAB_STATE_OBJECTS(X)                                                                      \
    /* clock.c */                                                                                 \
    X(PyTypeObject, timer_type)                                                                   \
    /* histogram.c */                                                                             \
    X(PyTypeObject, histogram_type)                                                               \
    /* taskqueue.c */                                                                             \
    X(PyTypeObject, taskqueue_type)                                                               \
    X(PyObject, queue_full_error)      /* queue.Full */                                           \
    X(PyObject, queue_empty_error)     /* queue.Empty */                                          \
    X(PyObject, queue_closed_error)    /* pyagentbench.QueueClosed */                             \
    /* cache.c */                                                                                 \
    X(PyTypeObject, cache_type)                                                                   \
    X(PyTypeObject, cache_entry_type)                                                             \
    X(PyTypeObject, cached_function_type)                                                         \
    X(PyObject, cache_kwd_mark)        /* separates positional from keyword parts of a key */     \
    /* sampler.c */                                                                               \
    X(PyTypeObject, sampler_type)                                                                 \
    /* allocs.c */                                                                                \
    X(PyTypeObject, alloc_counter_type)

#define PAB_DECLARE_FIELD(type, name) type *name;

typedef struct {
    PAB_STATE_OBJECTS(PAB_DECLARE_FIELD)
} pab_state;

#undef PAB_DECLARE_FIELD

static inline pab_state *
pab_module_state(PyObject *module)
{
    return (pab_state *)PyModule_GetState(module);
}

/* Adds a heap type created from spec to module and stores a strong reference in *slot.
 * base may be NULL. Returns 0 on success, -1 with an exception set. */
int pab_add_type(PyObject *module, PyType_Spec *spec, PyObject *base, PyTypeObject **slot);

/* Component initialisers, called in this order from module exec. Each returns 0 or -1 with an
 * exception set. */
int pab_clock_exec(PyObject *module, pab_state *state);
int pab_runner_exec(PyObject *module, pab_state *state);
int pab_histogram_exec(PyObject *module, pab_state *state);
int pab_taskqueue_exec(PyObject *module, pab_state *state);
int pab_cache_exec(PyObject *module, pab_state *state);
int pab_sampler_exec(PyObject *module, pab_state *state);
int pab_allocs_exec(PyObject *module, pab_state *state);
int pab_callgrind_exec(PyObject *module, pab_state *state);

#if PY_VERSION_HEX < 0x030A00F0
static inline PyObject *
pab_new_ref(PyObject *obj)
{
    Py_INCREF(obj);
    return obj;
}
#define Py_NewRef(obj) pab_new_ref((PyObject *)(obj))

static inline int
PyModule_AddObjectRef(PyObject *module, const char *name, PyObject *value)
{
    Py_XINCREF(value);
    int rc = PyModule_AddObject(module, name, value); /* steals only on success */
    if (rc < 0) {
        Py_XDECREF(value);
    }
    return rc;
}
#endif

/* 3.9 has no flag to forbid instantiation from Python; there such types stay constructible. */
#ifndef Py_TPFLAGS_DISALLOW_INSTANTIATION
#define Py_TPFLAGS_DISALLOW_INSTANTIATION 0
#endif

/* Heap types are immutable where the running CPython supports it (3.10+). */
#ifdef Py_TPFLAGS_IMMUTABLETYPE
#define PAB_TPFLAGS_IMMUTABLE Py_TPFLAGS_IMMUTABLETYPE
#else
#define PAB_TPFLAGS_IMMUTABLE 0
#endif

#endif /* PYAGENTBENCH_MODULE_H */

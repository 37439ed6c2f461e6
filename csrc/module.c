/* Module init for pyagentbench._native: multi-phase initialisation (PEP 489) with per-module state.
 * The components register their own types and functions; see module.h. */
#include "module.h"

int
pab_add_type(PyObject *module, PyType_Spec *spec, PyObject *base, PyTypeObject **slot)
{
    PyObject *type = PyType_FromModuleAndSpec(module, spec, base);
    if (type == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, (PyTypeObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    *slot = (PyTypeObject *)type;
    return 0;
}

static int
native_exec(PyObject *module)
{
    pab_state *state = pab_module_state(module);
    if (pab_clock_exec(module, state) < 0 || pab_runner_exec(module, state) < 0 ||
        pab_histogram_exec(module, state) < 0 || pab_taskqueue_exec(module, state) < 0 ||
        pab_cache_exec(module, state) < 0 || pab_sampler_exec(module, state) < 0 ||
        pab_allocs_exec(module, state) < 0 || pab_callgrind_exec(module, state) < 0) {
        return -1;
    }
    return 0;
}

#define PAB_VISIT_FIELD(type, name) Py_VISIT(state->name);
#define PAB_CLEAR_FIELD(type, name) Py_CLEAR(state->name);

static int
native_traverse(PyObject *module, visitproc visit, void *arg)
{
    pab_state *state = pab_module_state(module);
    PAB_STATE_OBJECTS(PAB_VISIT_FIELD)
    return 0;
}

static int
native_clear(PyObject *module)
{
    pab_state *state = pab_module_state(module);
    PAB_STATE_OBJECTS(PAB_CLEAR_FIELD)
    return 0;
}

static void
native_free(void *module)
{
    (void)native_clear((PyObject *)module);
}

static PyModuleDef_Slot native_slots[] = {
    {Py_mod_exec, native_exec},
#ifdef Py_mod_gil
    /* The module needs the GIL: Cache and CachedFunction (cache.c, a dict plus a linked list that
     * key __hash__/__eq__ can re-enter) have no lock of their own and rely on it. Histogram takes a
     * PyMutex on free-threaded builds (histogram.h), and TaskQueue, the Sampler and AllocCounter keep
     * their shared state under their own mutexes or atomics, but none of that has been built or tested
     * on a free-threaded CPython. So 3.13t and later turn the GIL back on when this module is imported
     * (with a RuntimeWarning) rather than run the Cache unlocked. */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyagentbench._native",
    .m_doc = "Native core of pyagentbench: clocks, the timing loop, resource sampling, allocation "
             "counting and the agent runtime's data structures.",
    .m_size = sizeof(pab_state),
    .m_slots = native_slots,
    .m_traverse = native_traverse,
    .m_clear = native_clear,
    .m_free = native_free,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&native_module);
}

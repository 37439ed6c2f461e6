/* Cache: an LRU cache with per-entry TTL, and CachedFunction, the native wrapper behind cached().
 *
 * Layout (as functools.lru_cache): a dict holds one small CacheEntry object per key, and the
 * entries form a doubly linked list in recency order (least recent after the root, most recent
 * before it). The dict owns the entries; the list links are borrowed and an entry unlinks itself
 * when it is freed, so the list never points at a dead entry whatever path drops it.
 *
 * Each entry is its own dict key (and value), and keeps the hash its key had when it was stored.
 * functools.lru_cache does the same with the private _PyDict_*_KnownHash calls; here the entry
 * type's tp_hash returns the stored hash and its tp_richcompare
 *   - against a plain object (a lookup with the caller's key) compares the stored key with it;
 *   - against a probe entry (a store looking for an equal key, hash already computed) compares the
 *     two keys;
 *   - against another stored entry is identity.
 * So a lookup with the caller's key finds its entry as a plain dict would (one __hash__, __eq__ on
 * hash matches), and a removal, which looks the entry up by itself, needs neither the key's
 * __hash__ nor its __eq__: a key whose hash changed after it was stored (a mutated
 * dataclass(unsafe_hash=True)) is still evicted, removed and counted correctly, and no Python code
 * runs while an entry leaves the dict. A store computes the key's hash once, into the probe.
 *
 * Thread safety comes from the GIL: every operation runs without releasing it except inside a key's
 * own __hash__/__eq__ (and the test clock), around which the code holds a reference to the entry
 * it works on and re-checks that the entry is still linked. The module does not declare
 * Py_mod_gil, so free-threaded CPython keeps the GIL enabled while it is imported.
 *
 * Linked is what makes an entry live: an entry is linked right after it enters the dict and
 * unlinked right after it leaves it, with no Python code in between; every path that finds an
 * entry in the dict still treats one that is not linked as absent.
 *
 * Recursion: CPython's tuple hash recurses into the items in C with no depth check, so hashing a
 * tuple nested a few hundred thousand deep overflows the C stack (hash(), dicts and lru_cache all
 * crash on it). Every key is checked first (cache_check_key_depth) and a tuple nested deeper than
 * the recursion limit raises RecursionError. Comparisons and reprs are guarded by CPython itself.
 */
#include "module.h"
#include "clock.h"

#include <math.h>
#include <stddef.h>
#include "structmember.h"

#define NO_EXPIRY INT64_MAX

typedef struct CacheEntry {
    PyObject_HEAD
    struct CacheEntry *prev; /* NULL while unlinked */
    struct CacheEntry *next;
    PyObject *key;
    PyObject *value;     /* NULL in a probe */
    int64_t expires_ns;  /* NO_EXPIRY: never */
    Py_hash_t hash;      /* the key's hash when the entry was made */
    int probe;           /* 1: a store's lookup of its key, never in the dict; 0: stored */
} CacheEntry;

typedef struct {
    PyObject_HEAD
    pab_state *state;     /* borrowed: the type, held by every instance, keeps the module alive */
    PyObject *dict;       /* CacheEntry -> the same CacheEntry (see the top of the file) */
    CacheEntry root;      /* list sentinel; only prev/next are used */
    Py_ssize_t maxsize;   /* -1: unbounded */
    int64_t ttl_ns;       /* default TTL; NO_EXPIRY: none */
    PyObject *clock;      /* NULL, or a callable returning monotonic seconds (tests) */
    int has_expiring;     /* 1 once an entry with a TTL was stored (until clear()) */
    unsigned long long hits;
    unsigned long long misses;
    unsigned long long evictions;
    unsigned long long expirations;
} CacheObject;

/* ---- list ---- */

static inline void
entry_unlink(CacheEntry *e)
{
    if (e->prev != NULL) {
        e->prev->next = e->next;
        e->next->prev = e->prev;
        e->prev = e->next = NULL;
    }
}

static inline void
entry_link_last(CacheObject *self, CacheEntry *e)
{
    CacheEntry *last = self->root.prev;
    e->prev = last;
    e->next = &self->root;
    last->next = e;
    self->root.prev = e;
}

static inline void
entry_move_last(CacheObject *self, CacheEntry *e)
{
    if (e->next != &self->root) {
        e->prev->next = e->next;
        e->next->prev = e->prev;
        entry_link_last(self, e);
    }
}

/* Unlinks every entry so none refers to this cache any more. */
static void
cache_detach_all(CacheObject *self)
{
    CacheEntry *e = self->root.next;
    while (e != &self->root) {
        CacheEntry *next = e->next;
        e->prev = e->next = NULL;
        e = next;
    }
    self->root.prev = self->root.next = &self->root;
}

/* ---- entries ---- */

static void
entry_dealloc(PyObject *op)
{
    CacheEntry *e = (CacheEntry *)op;
    PyTypeObject *tp = Py_TYPE(op);
    entry_unlink(e);
    Py_XDECREF(e->key);
    Py_XDECREF(e->value);
    PyObject_Free(op);
    Py_DECREF(tp);
}

static Py_hash_t
entry_hash(PyObject *op)
{
    return ((CacheEntry *)op)->hash;
}

/* The dict's key comparison: see the top of the file. */
static PyObject *
entry_richcompare(PyObject *op, PyObject *other, int cmp)
{
    if (cmp != Py_EQ && cmp != Py_NE) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    CacheEntry *self = (CacheEntry *)op;
    PyObject *other_key = other;
    if (Py_TYPE(other) == Py_TYPE(op)) {
        CacheEntry *entry = (CacheEntry *)other;
        if (!self->probe && !entry->probe) {
            return PyBool_FromLong((self == entry) == (cmp == Py_EQ));
        }
        other_key = entry->key;
    }
    if (self->key == other_key) {
        return PyBool_FromLong(cmp == Py_EQ);
    }
    /* self->key stays alive: the dict holds self while it compares. */
    return PyObject_RichCompare(self->key, other_key, cmp);
}

static PyType_Slot entry_slots[] = {
    {Py_tp_dealloc, entry_dealloc},
    {Py_tp_hash, entry_hash},
    {Py_tp_richcompare, entry_richcompare},
    {Py_tp_doc, "Internal: one Cache entry."},
    {0, NULL},
};

/* Not GC-tracked: the owning Cache visits each entry's key and value itself. */
static PyType_Spec entry_spec = {
    .name = "pyagentbench._native._CacheEntry",
    .basicsize = sizeof(CacheEntry),
    .flags = Py_TPFLAGS_DEFAULT | PAB_TPFLAGS_IMMUTABLE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = entry_slots,
};

/* ---- time ---- */

/* The cache's clock in ns: the test clock when one is set, else the package's monotonic clock.
 * -1 with an exception set if the test clock fails. */
static int64_t
cache_clock_ns(CacheObject *self)
{
    if (self->clock == NULL) {
        return pab_now_ns();
    }
    PyObject *result = PyObject_CallNoArgs(self->clock);
    if (result == NULL) {
        return -1;
    }
    double seconds = PyFloat_AsDouble(result);
    if (seconds == -1.0 && PyErr_Occurred()) {
        Py_DECREF(result);
        return -1;
    }
    /* Converting a double outside int64's range is undefined behaviour: reject it, and NaN and
     * the infinities with it (every comparison with NaN is false). 2**63 is exact as a double. */
    double ns = seconds * 1e9;
    if (!(ns >= -9223372036854775808.0 && ns < 9223372036854775808.0)) {
        PyErr_Format(PyExc_ValueError,
                     "Cache clock must return a finite number of seconds within +-9.2e9, got %R",
                     result);
        Py_DECREF(result);
        return -1;
    }
    Py_DECREF(result);
    return (int64_t)ns;
}

/* ttl in seconds (None -> none) to nanoseconds. */
static int
parse_ttl(PyObject *obj, const char *where, int64_t *ttl_ns)
{
    if (obj == NULL || obj == Py_None) {
        *ttl_ns = NO_EXPIRY;
        return 0;
    }
    if (!PyLong_Check(obj) && !PyFloat_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: ttl must be a number of seconds or None, not %.100s",
                     where, Py_TYPE(obj)->tp_name);
        return -1;
    }
    double seconds = PyFloat_AsDouble(obj);
    if (seconds == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (!(seconds > 0.0) || !isfinite(seconds)) {
        PyErr_Format(PyExc_ValueError, "%s: ttl must be a positive finite number of seconds, got %R",
                     where, obj);
        return -1;
    }
    *ttl_ns = seconds > 9e9 ? NO_EXPIRY : (int64_t)(seconds * 1e9);
    return 0;
}

/* ---- core operations ---- */

/* Raises RecursionError (returns -1) for a tuple key nested deeper than the recursion limit, which
 * CPython's tuple hash would follow down the C stack (see the top of the file); 0 otherwise.
 * Each nested tuple level counts one recursive call; a flat tuple key costs one type check per
 * item, any other key nothing. */
static int
check_nested_tuple_depth(PyObject *tuple)
{
    if (Py_EnterRecursiveCall(" while hashing a Cache key")) {
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple) && rc == 0; i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (PyTuple_Check(item)) {
            rc = check_nested_tuple_depth(item);
        }
    }
    Py_LeaveRecursiveCall();
    return rc;
}

static inline int
cache_check_key_depth(PyObject *key)
{
    if (!PyTuple_Check(key)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(key); i++) {
        PyObject *item = PyTuple_GET_ITEM(key, i);
        if (PyTuple_Check(item) && check_nested_tuple_depth(item) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Removes e from dict and list: 1 if this call removed it, 0 if it was already gone, -1 with an
 * exception if the dict deletion failed, in which case e stays in both dict and list.
 *
 * The dict finds e by its stored hash and by identity: no Python code runs (and a key whose hash
 * changed since it was stored is removed all the same). */
static int
cache_remove(CacheObject *self, CacheEntry *e)
{
    if (e->prev == NULL) {
        return 0;
    }
    Py_INCREF(e); /* the dict's references go first; e's key and value are released last */
    int rc = PyDict_DelItem(self->dict, (PyObject *)e);
    if (rc == 0) {
        entry_unlink(e);
        rc = 1;
    }
    else if (PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear(); /* not in the dict: cannot happen while linked; treat as gone */
        entry_unlink(e);
        rc = 0;
    }
    Py_DECREF(e);
    return rc;
}

/* The live entry for key, as a new reference, or NULL (with an exception set only on error).
 * An entry in the dict but not linked is absent. Expired entries are removed and counted. */
static CacheEntry *
cache_find(CacheObject *self, PyObject *key)
{
    if (cache_check_key_depth(key) < 0) {
        return NULL;
    }
    int64_t now_ns = 0;
    if (self->clock != NULL) {
        now_ns = cache_clock_ns(self);
        if (now_ns == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    CacheEntry *e = (CacheEntry *)PyDict_GetItemWithError(self->dict, key);
    if (e == NULL || e->prev == NULL) {
        return NULL;
    }
    if (e->expires_ns != NO_EXPIRY) {
        if (self->clock == NULL) {
            now_ns = pab_now_ns();
        }
        if (now_ns >= e->expires_ns) {
            int rc = cache_remove(self, e);
            if (rc > 0) {
                self->expirations++;
            }
            return NULL; /* with the exception if the removal failed */
        }
    }
    return (CacheEntry *)Py_NewRef(e);
}

/* Hit: a new reference to the value, moved to most recent; miss: NULL without an exception. */
static inline PyObject *
cache_lookup(CacheObject *self, PyObject *key)
{
    if (self->clock == NULL) {
        /* Fast path: no Python code runs between the dict lookup and the return. */
        if (cache_check_key_depth(key) < 0) {
            return NULL;
        }
        CacheEntry *e = (CacheEntry *)PyDict_GetItemWithError(self->dict, key);
        if (e != NULL && e->prev != NULL &&
            (e->expires_ns == NO_EXPIRY || pab_now_ns() < e->expires_ns)) {
            entry_move_last(self, e);
            self->hits++;
            return Py_NewRef(e->value);
        }
        if (e == NULL && PyErr_Occurred()) {
            return NULL;
        }
    }
    CacheEntry *e = cache_find(self, key);
    if (e == NULL) {
        if (!PyErr_Occurred()) {
            self->misses++;
        }
        return NULL;
    }
    PyObject *value = NULL;
    if (e->prev != NULL) {
        entry_move_last(self, e);
        self->hits++;
        value = Py_NewRef(e->value);
    }
    else {
        self->misses++;
    }
    Py_DECREF(e);
    return value;
}

/* Removes least recently used entries while the cache holds more than maxsize. 0, or -1 with an
 * exception (the entry that failed to go stays, still least recent, for the next eviction). */
static int
cache_evict(CacheObject *self)
{
    while (self->maxsize >= 0 && PyDict_GET_SIZE(self->dict) > self->maxsize &&
           self->root.next != &self->root) {
        int rc = cache_remove(self, self->root.next);
        if (rc < 0) {
            return -1;
        }
        self->evictions += (unsigned long long)rc;
    }
    return 0;
}

/* Stores value under key with the given TTL (NO_EXPIRY: none). 0, or -1 with an exception.
 *
 * The new entry is made first, as a probe holding the key and its hash (the key's __hash__ runs
 * once), and looks for an equal key in the dict (its __eq__ runs on hash matches). An existing
 * live entry takes the value; otherwise the probe becomes the stored entry and enters the dict,
 * which compares it with other entries by identity only: no Python code runs between the lookup
 * and the insertion, so two live entries never hold equal keys. */
static int
cache_store(CacheObject *self, PyObject *key, PyObject *value, int64_t ttl_ns)
{
    int64_t expires_ns = NO_EXPIRY;
    if (ttl_ns != NO_EXPIRY) {
        int64_t now_ns = cache_clock_ns(self);
        if (now_ns == -1 && PyErr_Occurred()) {
            return -1;
        }
        expires_ns = now_ns > NO_EXPIRY - ttl_ns ? NO_EXPIRY - 1 : now_ns + ttl_ns;
    }
    if (cache_check_key_depth(key) < 0) {
        return -1;
    }
    if (self->maxsize == 0) {
        return PyObject_Hash(key) == -1 ? -1 : 0;
    }
    CacheEntry *probe = PyObject_New(CacheEntry, self->state->cache_entry_type);
    if (probe == NULL) {
        return -1;
    }
    probe->prev = probe->next = NULL;
    probe->key = Py_NewRef(key);
    probe->value = NULL;
    probe->expires_ns = expires_ns;
    probe->probe = 1;
    probe->hash = PyObject_Hash(key);
    if (probe->hash == -1) {
        Py_DECREF(probe);
        return -1;
    }
    CacheEntry *e = (CacheEntry *)PyDict_GetItemWithError(self->dict, (PyObject *)probe);
    if (e != NULL && e->prev != NULL) {
        Py_INCREF(e);
        PyObject *old = e->value;
        e->value = Py_NewRef(value);
        e->expires_ns = expires_ns;
        entry_move_last(self, e);
        if (expires_ns != NO_EXPIRY) {
            self->has_expiring = 1;
        }
        Py_DECREF(probe);
        Py_DECREF(old);
        Py_DECREF(e);
        return 0;
    }
    if (e == NULL && PyErr_Occurred()) {
        Py_DECREF(probe);
        return -1;
    }
    /* Absent (an entry in the dict but unlinked, which cannot happen, would count as absent and
     * stay beside the new one until it is freed). */
    e = probe;
    e->probe = 0;
    e->value = Py_NewRef(value);
    if (PyDict_SetItem(self->dict, (PyObject *)e, (PyObject *)e) < 0) {
        Py_DECREF(e);
        return -1;
    }
    entry_link_last(self, e);
    Py_DECREF(e); /* the dict holds it */
    if (expires_ns != NO_EXPIRY) {
        self->has_expiring = 1;
    }
    return cache_evict(self);
}

/* Removes every expired entry; returns how many, or -1 with an exception. */
static Py_ssize_t
cache_expire(CacheObject *self)
{
    if (!self->has_expiring) {
        return 0;
    }
    int64_t now_ns = cache_clock_ns(self);
    if (now_ns == -1 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *expired = PyList_New(0);
    if (expired == NULL) {
        return -1;
    }
    int any_left = 0;
    for (CacheEntry *e = self->root.next; e != &self->root; e = e->next) {
        if (e->expires_ns == NO_EXPIRY) {
            continue;
        }
        if (now_ns >= e->expires_ns) {
            if (PyList_Append(expired, (PyObject *)e) < 0) {
                Py_DECREF(expired);
                return -1;
            }
        }
        else {
            any_left = 1;
        }
    }
    Py_ssize_t n = PyList_GET_SIZE(expired), removed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        CacheEntry *e = (CacheEntry *)PyList_GET_ITEM(expired, i);
        int rc = cache_remove(self, e);
        if (rc < 0) {
            Py_DECREF(expired);
            return -1; /* has_expiring stays set: the entry is still there */
        }
        self->expirations += (unsigned long long)rc;
        removed += rc;
    }
    Py_DECREF(expired);
    if (!any_left) {
        self->has_expiring = 0;
    }
    return removed;
}

static void cache_dealloc(PyObject *op);

static inline int
is_cache(PyObject *op)
{
    PyTypeObject *t = Py_TYPE(op);
    while (t != NULL && t->tp_dealloc != cache_dealloc) {
        t = t->tp_base;
    }
    return t != NULL;
}

/* ---- Cache methods ---- */

static PyObject *
cache_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "get() takes a key and an optional default (%zd given)", nargs);
        return NULL;
    }
    PyObject *value = cache_lookup((CacheObject *)op, args[0]);
    if (value != NULL || PyErr_Occurred()) {
        return value;
    }
    return Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

static PyObject *
cache_set(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    CacheObject *self = (CacheObject *)op;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *ttl = nargs == 3 ? args[2] : NULL;
    if (nargs < 2 || nargs > 3 || nkw > 1 || (nkw == 1 && nargs == 3)) {
        PyErr_SetString(PyExc_TypeError, "set() takes key, value and an optional ttl");
        return NULL;
    }
    if (nkw == 1) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "ttl") != 0) {
            PyErr_Format(PyExc_TypeError, "set() got an unexpected keyword argument %R",
                         PyTuple_GET_ITEM(kwnames, 0));
            return NULL;
        }
        ttl = args[2];
    }
    int64_t ttl_ns = self->ttl_ns;
    if (ttl != NULL && ttl != Py_None && parse_ttl(ttl, "Cache.set()", &ttl_ns) < 0) {
        return NULL;
    }
    if (cache_store(self, args[0], args[1], ttl_ns) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
cache_pop(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    CacheObject *self = (CacheObject *)op;
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "pop() takes a key and an optional default (%zd given)", nargs);
        return NULL;
    }
    CacheEntry *e = cache_find(self, args[0]);
    if (e == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        if (nargs == 2) {
            return Py_NewRef(args[1]);
        }
        PyErr_SetObject(PyExc_KeyError, args[0]);
        return NULL;
    }
    PyObject *value = Py_NewRef(e->value);
    int rc = cache_remove(self, e);
    Py_DECREF(e);
    if (rc > 0) {
        return value;
    }
    Py_DECREF(value);
    if (rc < 0) {
        return NULL;
    }
    /* Removed by someone else while this removal ran: it was not this pop's to return. */
    if (nargs == 2) {
        return Py_NewRef(args[1]);
    }
    PyErr_SetObject(PyExc_KeyError, args[0]);
    return NULL;
}

static PyObject *
cache_clear_method(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    CacheObject *self = (CacheObject *)op;
    cache_detach_all(self);
    self->has_expiring = 0;
    PyDict_Clear(self->dict);
    Py_RETURN_NONE;
}

static PyObject *
cache_keys(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    CacheObject *self = (CacheObject *)op;
    if (cache_expire(self) < 0) {
        return NULL;
    }
    PyObject *keys = PyList_New(PyDict_GET_SIZE(self->dict));
    if (keys == NULL) {
        return NULL;
    }
    Py_ssize_t i = 0;
    for (CacheEntry *e = self->root.next; e != &self->root && i < PyList_GET_SIZE(keys); e = e->next) {
        PyList_SET_ITEM(keys, i++, Py_NewRef(e->key));
    }
    if (i < PyList_GET_SIZE(keys) && PyList_SetSlice(keys, i, PyList_GET_SIZE(keys), NULL) < 0) {
        Py_DECREF(keys);
        return NULL;
    }
    return keys;
}

static PyObject *
cache_expire_method(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t removed = cache_expire((CacheObject *)op);
    return removed < 0 ? NULL : PyLong_FromSsize_t(removed);
}

static PyObject *
cache_stats(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    CacheObject *self = (CacheObject *)op;
    if (cache_expire(self) < 0) {
        return NULL;
    }
    unsigned long long lookups = self->hits + self->misses;
    double hit_rate = lookups ? (double)self->hits / (double)lookups : 0.0;
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:n,s:d}", "hits", self->hits, "misses", self->misses,
                         "evictions", self->evictions, "expirations", self->expirations, "size",
                         PyDict_GET_SIZE(self->dict), "hit_rate", hit_rate);
}

static PyObject *
cache_reset_stats(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    CacheObject *self = (CacheObject *)op;
    self->hits = self->misses = self->evictions = self->expirations = 0;
    Py_RETURN_NONE;
}

/* ---- mapping protocol ---- */

static Py_ssize_t
cache_length(PyObject *op)
{
    CacheObject *self = (CacheObject *)op;
    if (cache_expire(self) < 0) {
        return -1;
    }
    return PyDict_GET_SIZE(self->dict);
}

static PyObject *
cache_subscript(PyObject *op, PyObject *key)
{
    PyObject *value = cache_lookup((CacheObject *)op, key);
    if (value == NULL && !PyErr_Occurred()) {
        PyErr_SetObject(PyExc_KeyError, key);
    }
    return value;
}

static int
cache_ass_subscript(PyObject *op, PyObject *key, PyObject *value)
{
    CacheObject *self = (CacheObject *)op;
    if (value != NULL) {
        return cache_store(self, key, value, self->ttl_ns);
    }
    CacheEntry *e = cache_find(self, key);
    if (e == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, key);
        }
        return -1;
    }
    int rc = cache_remove(self, e);
    Py_DECREF(e);
    if (rc == 0) {
        PyErr_SetObject(PyExc_KeyError, key); /* removed by someone else meanwhile */
        return -1;
    }
    return rc < 0 ? -1 : 0;
}

static int
cache_contains(PyObject *op, PyObject *key)
{
    CacheEntry *e = cache_find((CacheObject *)op, key);
    if (e == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    int linked = e->prev != NULL;
    Py_DECREF(e);
    return linked;
}

/* ---- lifecycle ---- */

static PyObject *
cache_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"maxsize", "ttl", "clock", NULL};
    PyObject *maxsize_obj = NULL, *ttl_obj = Py_None, *clock = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO$O:Cache", kwlist, &maxsize_obj, &ttl_obj,
                                     &clock)) {
        return NULL;
    }
    Py_ssize_t maxsize = 1024;
    if (maxsize_obj == Py_None) {
        maxsize = -1;
    }
    else if (maxsize_obj != NULL) {
        if (!PyLong_Check(maxsize_obj)) {
            return PyErr_Format(PyExc_TypeError, "Cache(): maxsize must be an int or None, not %.100s",
                                Py_TYPE(maxsize_obj)->tp_name);
        }
        maxsize = PyLong_AsSsize_t(maxsize_obj);
        if (maxsize == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (maxsize < 0) {
            return PyErr_Format(PyExc_ValueError, "Cache(): maxsize must be >= 0 or None, got %zd",
                                maxsize);
        }
    }
    int64_t ttl_ns;
    if (parse_ttl(ttl_obj, "Cache()", &ttl_ns) < 0) {
        return NULL;
    }
    if (clock != Py_None && !PyCallable_Check(clock)) {
        return PyErr_Format(PyExc_TypeError, "Cache(): clock must be callable or None, not %.100s",
                            Py_TYPE(clock)->tp_name);
    }
    PyTypeObject *base = type;
    while (base != NULL && base->tp_dealloc != cache_dealloc) {
        base = base->tp_base;
    }
    if (base == NULL) {
        PyErr_SetString(PyExc_TypeError, "Cache.__new__(): not a Cache subtype");
        return NULL;
    }
    pab_state *state = (pab_state *)PyType_GetModuleState(base);
    if (state == NULL) {
        return NULL;
    }
    CacheObject *self = (CacheObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->state = state;
    self->root.prev = self->root.next = &self->root;
    self->maxsize = maxsize;
    self->ttl_ns = ttl_ns;
    self->clock = clock == Py_None ? NULL : Py_NewRef(clock);
    self->dict = PyDict_New();
    if (self->dict == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
cache_traverse(PyObject *op, visitproc visit, void *arg)
{
    CacheObject *self = (CacheObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->dict);
    Py_VISIT(self->clock);
    if (self->root.next != NULL) {
        for (CacheEntry *e = self->root.next; e != &self->root; e = e->next) {
            Py_VISIT(e->key);
            Py_VISIT(e->value);
        }
    }
    return 0;
}

static int
cache_clear(PyObject *op)
{
    CacheObject *self = (CacheObject *)op;
    if (self->root.next != NULL) {
        cache_detach_all(self);
    }
    if (self->dict != NULL) {
        PyDict_Clear(self->dict);
    }
    Py_CLEAR(self->clock);
    return 0;
}

static void
cache_dealloc(PyObject *op)
{
    CacheObject *self = (CacheObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->root.next != NULL) {
        cache_detach_all(self);
    }
    Py_CLEAR(self->dict);
    Py_CLEAR(self->clock);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *
cache_get_maxsize(PyObject *op, void *Py_UNUSED(closure))
{
    CacheObject *self = (CacheObject *)op;
    return self->maxsize < 0 ? Py_NewRef(Py_None) : PyLong_FromSsize_t(self->maxsize);
}

static PyObject *
cache_get_ttl(PyObject *op, void *Py_UNUSED(closure))
{
    CacheObject *self = (CacheObject *)op;
    return self->ttl_ns == NO_EXPIRY ? Py_NewRef(Py_None) : PyFloat_FromDouble((double)self->ttl_ns / 1e9);
}

static PyMethodDef cache_methods[] = {
    {"get", (PyCFunction)(void (*)(void))cache_get, METH_FASTCALL,
     "get(key, default=None, /) -> value\n--\n\nThe value for key (now the most recently used) "
     "or default. Counts a hit or a miss; an expired entry is removed and is a miss."},
    {"set", (PyCFunction)(void (*)(void))cache_set, METH_FASTCALL | METH_KEYWORDS,
     "set(key, value, ttl=None) -> None\n--\n\nStore value under key as the most recently used "
     "entry, evicting the least recently used beyond maxsize. ttl (seconds) overrides the cache's "
     "default TTL for this entry."},
    {"pop", (PyCFunction)(void (*)(void))cache_pop, METH_FASTCALL,
     "pop(key, default=<no default>, /) -> value\n--\n\nRemove key and return its value; default, "
     "or KeyError without one, if it is absent or expired."},
    {"clear", cache_clear_method, METH_NOARGS,
     "clear() -> None\n--\n\nRemove every entry (stats are kept; see reset_stats())."},
    {"keys", cache_keys, METH_NOARGS,
     "keys() -> list\n--\n\nThe live keys, least recently used first."},
    {"expire", cache_expire_method, METH_NOARGS,
     "expire() -> int\n--\n\nRemove every expired entry now; return how many."},
    {"stats", cache_stats, METH_NOARGS,
     "stats() -> dict\n--\n\nhits, misses, evictions, expirations, size (live entries) and "
     "hit_rate (hits / lookups, 0.0 before any lookup)."},
    {"reset_stats", cache_reset_stats, METH_NOARGS,
     "reset_stats() -> None\n--\n\nZero hits, misses, evictions and expirations."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cache_getset[] = {
    {"maxsize", cache_get_maxsize, NULL, "Most entries kept; None: unbounded.", NULL},
    {"ttl", cache_get_ttl, NULL, "Default time to live in seconds; None: entries never expire.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot cache_slots[] = {
    {Py_tp_new, cache_new},
    {Py_tp_dealloc, cache_dealloc},
    {Py_tp_traverse, cache_traverse},
    {Py_tp_clear, cache_clear},
    {Py_tp_methods, cache_methods},
    {Py_tp_getset, cache_getset},
    {Py_mp_length, cache_length},
    {Py_mp_subscript, cache_subscript},
    {Py_mp_ass_subscript, cache_ass_subscript},
    {Py_sq_contains, cache_contains},
    {Py_tp_hash, PyObject_HashNotImplemented},
    {Py_tp_doc,
     "Cache(maxsize=1024, ttl=None, *, clock=None)\n--\n\nLRU cache with optional time to live. "
     "Any hashable key. maxsize=None: unbounded. ttl: default seconds an entry lives after it is "
     "set (None: forever). clock: a callable returning monotonic seconds, for tests; by default "
     "the package's monotonic clock."},
    {0, NULL},
};

static PyType_Spec cache_spec = {
    .name = "pyagentbench._native.Cache",
    .basicsize = sizeof(CacheObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = cache_slots,
};

/* ---- CachedFunction ---- */

typedef struct {
    PyObject_HEAD
    PyObject *func;
    PyObject *cache; /* a Cache */
    PyObject *key_func; /* NULL: lru_cache-style keys */
    PyObject *kwd_mark;
    PyObject *dict;
    PyObject *weakreflist;
    vectorcallfunc vectorcall;
} CachedFunctionObject;

/* lru_cache's key: a single str/int positional is its own key; otherwise a tuple of the
 * positionals, then (if any) the keyword mark and each keyword name and value. */
static PyObject *
cached_make_key(CachedFunctionObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (self->key_func != NULL) {
        return PyObject_Vectorcall(self->key_func, args, (size_t)nargs, kwnames);
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nkw == 0 && nargs == 1 && (PyUnicode_CheckExact(args[0]) || PyLong_CheckExact(args[0]))) {
        return Py_NewRef(args[0]);
    }
    PyObject *key = PyTuple_New(nargs + (nkw ? 1 + 2 * nkw : 0));
    if (key == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyTuple_SET_ITEM(key, i, Py_NewRef(args[i]));
    }
    if (nkw) {
        PyTuple_SET_ITEM(key, nargs, Py_NewRef(self->kwd_mark));
        for (Py_ssize_t k = 0; k < nkw; k++) {
            PyTuple_SET_ITEM(key, nargs + 1 + 2 * k, Py_NewRef(PyTuple_GET_ITEM(kwnames, k)));
            PyTuple_SET_ITEM(key, nargs + 2 + 2 * k, Py_NewRef(args[nargs + k]));
        }
    }
    return key;
}

static PyObject *
cached_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    CachedFunctionObject *self = (CachedFunctionObject *)op;
    if (self->func == NULL) {
        /* tp_clear ran (the GC breaking a cycle) and something still reached the object. Checked
         * here, not in tp_call: every call, PyObject_Call's included, lands here. */
        PyErr_SetString(PyExc_RuntimeError, "CachedFunction was cleared");
        return NULL;
    }
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *key = cached_make_key(self, args, nargs, kwnames);
    if (key == NULL) {
        return NULL;
    }
    CacheObject *cache = (CacheObject *)self->cache;
    PyObject *value = cache_lookup(cache, key);
    if (value != NULL || PyErr_Occurred()) {
        Py_DECREF(key);
        return value;
    }
    /* A cached function that calls itself recurses through this C frame on every level (as the
     * C lru_cache's does): counted, so deep recursion ends in RecursionError, not a crash. */
    if (Py_EnterRecursiveCall(" in a cached function")) {
        Py_DECREF(key);
        return NULL;
    }
    value = PyObject_Vectorcall(self->func, args, nargsf, kwnames);
    Py_LeaveRecursiveCall();
    if (value != NULL && cache_store(cache, key, value, cache->ttl_ns) < 0) {
        Py_CLEAR(value);
    }
    Py_DECREF(key);
    return value;
}

static PyObject *
cached_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"func", "cache", "key", NULL};
    PyObject *func, *cache, *key_func = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:CachedFunction", kwlist, &func, &cache,
                                     &key_func)) {
        return NULL;
    }
    if (!PyCallable_Check(func)) {
        return PyErr_Format(PyExc_TypeError, "CachedFunction(): func must be callable, not %.100s",
                            Py_TYPE(func)->tp_name);
    }
    if (!is_cache(cache)) {
        return PyErr_Format(PyExc_TypeError, "CachedFunction(): cache must be a Cache, not %.100s",
                            Py_TYPE(cache)->tp_name);
    }
    if (key_func != Py_None && !PyCallable_Check(key_func)) {
        return PyErr_Format(PyExc_TypeError,
                            "CachedFunction(): key must be callable or None, not %.100s",
                            Py_TYPE(key_func)->tp_name);
    }
    CachedFunctionObject *self = (CachedFunctionObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->func = Py_NewRef(func);
    self->cache = Py_NewRef(cache);
    self->key_func = key_func == Py_None ? NULL : Py_NewRef(key_func);
    self->kwd_mark = Py_NewRef(((CacheObject *)cache)->state->cache_kwd_mark);
    self->vectorcall = cached_vectorcall;
    return (PyObject *)self;
}

static int
cached_traverse(PyObject *op, visitproc visit, void *arg)
{
    CachedFunctionObject *self = (CachedFunctionObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->func);
    Py_VISIT(self->cache);
    Py_VISIT(self->key_func);
    Py_VISIT(self->kwd_mark);
    Py_VISIT(self->dict);
    return 0;
}

static int
cached_clear(PyObject *op)
{
    CachedFunctionObject *self = (CachedFunctionObject *)op;
    Py_CLEAR(self->func);
    Py_CLEAR(self->key_func);
    Py_CLEAR(self->dict);
    /* cache and kwd_mark stay: a call after clear still finds valid objects. */
    return 0;
}

static void
cached_dealloc(PyObject *op)
{
    CachedFunctionObject *self = (CachedFunctionObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    (void)cached_clear(op);
    Py_CLEAR(self->cache);
    Py_CLEAR(self->kwd_mark);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *
cached_descr_get(PyObject *op, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(op);
    }
    return PyMethod_New(op, obj);
}

static PyObject *
cached_get_cache(PyObject *op, void *Py_UNUSED(closure))
{
    return Py_NewRef(((CachedFunctionObject *)op)->cache);
}

static PyObject *
cached_cache_clear(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return cache_clear_method(((CachedFunctionObject *)op)->cache, NULL);
}

static PyMethodDef cached_methods[] = {
    {"cache_clear", cached_cache_clear, METH_NOARGS,
     "cache_clear() -> None\n--\n\nRemove every cached result."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cached_getset[] = {
    {"cache", cached_get_cache, NULL, "The Cache holding this function's results.", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef cached_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(CachedFunctionObject, vectorcall), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(CachedFunctionObject, dict), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(CachedFunctionObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot cached_slots[] = {
    {Py_tp_new, cached_new},
    {Py_tp_dealloc, cached_dealloc},
    {Py_tp_traverse, cached_traverse},
    {Py_tp_clear, cached_clear},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, cached_descr_get},
    {Py_tp_methods, cached_methods},
    {Py_tp_getset, cached_getset},
    {Py_tp_members, cached_members},
    {Py_tp_doc,
     "CachedFunction(func, cache, key=None)\n--\n\nCalls func(*args, **kwargs) through cache: "
     "keyed like functools.lru_cache, or by key(*args, **kwargs). Made by cached()."},
    {0, NULL},
};

static PyType_Spec cached_spec = {
    .name = "pyagentbench._native.CachedFunction",
    .basicsize = sizeof(CachedFunctionObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_METHOD_DESCRIPTOR | PAB_TPFLAGS_IMMUTABLE,
    .slots = cached_slots,
};

int
pab_cache_exec(PyObject *module, pab_state *state)
{
    state->cache_kwd_mark = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (state->cache_kwd_mark == NULL) {
        return -1;
    }
    if (pab_add_type(module, &entry_spec, NULL, &state->cache_entry_type) < 0 ||
        pab_add_type(module, &cache_spec, NULL, &state->cache_type) < 0) {
        return -1;
    }
    return pab_add_type(module, &cached_spec, NULL, &state->cached_function_type);
}

/* HDR-style log-linear latency histogram, shared by the Histogram type and the task queue.
 *
 * The value range [0, highest] is split into buckets of doubling width; each bucket holds
 * sub_bucket_half_count linear sub-buckets, so every recorded value lands in a sub-bucket whose width
 * is at most value / 10^significant_figures.
 *
 * Memory follows what is recorded: a value's index depends on the value alone (not on highest), so
 * the counts are a prefix of the whole layout (counts_len entries), allocated up to the half-bucket
 * holding the largest value recorded (counts_alloc entries; none while nothing is recorded). A
 * value beyond the prefix grows it (pab_hist_grow, at most once per half-bucket: 33 times for the
 * defaults); every other record touches no allocator. Entries past counts_alloc are zero.
 */
#ifndef PYAGENTBENCH_HISTOGRAM_H
#define PYAGENTBENCH_HISTOGRAM_H

#include "module.h"

#include <stdint.h>

/* Per-object locks for free-threaded CPython. With the GIL, the GIL already serialises every method
 * of these types (none of them runs Python code or releases the GIL while touching its structure),
 * so the lock compiles to nothing; without the GIL each object owns a PyMutex. */
#ifdef Py_GIL_DISABLED
#define PAB_OBJECT_LOCK_FIELD PyMutex object_lock;
#define PAB_OBJECT_LOCK(obj) PyMutex_Lock(&(obj)->object_lock)
#define PAB_OBJECT_UNLOCK(obj) PyMutex_Unlock(&(obj)->object_lock)
#else
#define PAB_OBJECT_LOCK_FIELD
#define PAB_OBJECT_LOCK(obj) ((void)0)
#define PAB_OBJECT_UNLOCK(obj) ((void)0)
#endif

typedef struct {
    int64_t lowest;
    int64_t highest;
    int significant_figures;
    int clamp;                  /* 1: out-of-range values are clamped and counted; 0: ValueError */
    int unit_magnitude;
    int sub_bucket_half_count_magnitude;
    int32_t sub_bucket_count;
    int32_t sub_bucket_half_count;
    int64_t sub_bucket_mask;
    int32_t bucket_count;
    int32_t counts_len;         /* entries of the whole layout, [0, highest] */
    int32_t counts_alloc;       /* entries allocated: a prefix of counts_len, 0 while empty */
    int64_t total_count;
    int64_t min;                /* exact; INT64_MAX while empty */
    int64_t max;                /* exact; 0 while empty */
    int64_t clamped_count;      /* values recorded outside [0, highest] and clamped into it */
    int64_t clamped_above_count; /* of those, the ones clamped down from above highest: what a
                                  * merge into a narrower histogram must not count again */
    int64_t clamped_above_at;   /* the lowest value those are held at (highest, unless a merge
                                 * brought them from a narrower histogram); 0 while there are none */
    double mean;                /* running mean and sum of squared deviations (Welford / Chan) */
    double m2;
    int64_t *counts;            /* counts_alloc entries; NULL while counts_alloc is 0 */
} pab_hist;

/* Sets up h for the given range, with no counts allocated yet. Returns 0, or -1 with ValueError
 * set. */
int pab_hist_init(pab_hist *h, int64_t lowest, int64_t highest, int significant_figures, int clamp);
void pab_hist_free(pab_hist *h);
/* Forgets every value; keeps the counts allocated. */
void pab_hist_reset(pab_hist *h);

/* Grows the counts to hold index (< counts_len), zeroing the new entries. Returns 0, or -1 with
 * nothing changed if memory is short (no exception set: needs no Python API, safe without the GIL
 * under the owner's lock). */
int pab_hist_grow(pab_hist *h, int32_t index);

/* A copy of h's allocated counts into *out (NULL when h has none). 0, or -1 if memory is short
 * (no exception set). Needs no Python API. */
int pab_hist_copy_counts(const pab_hist *h, int64_t **out);

static inline int32_t
pab_hist_index(const pab_hist *h, int64_t value)
{
    int pow2ceiling = 64 - __builtin_clzll((uint64_t)(value | h->sub_bucket_mask));
    int32_t bucket = pow2ceiling - h->unit_magnitude - (h->sub_bucket_half_count_magnitude + 1);
    int32_t sub_bucket = (int32_t)(value >> (bucket + h->unit_magnitude));
    return ((bucket + 1) << h->sub_bucket_half_count_magnitude) +
           (sub_bucket - h->sub_bucket_half_count);
}

/* Records count occurrences of value, which must already be within [0, highest]. Returns 0; -1
 * without changing anything if a count would overflow int64 (the caller raises OverflowError);
 * -2 without changing anything if growing the counts to the value failed (MemoryError). Needs no
 * Python API (safe without the GIL under the owner's lock). */
static inline int
pab_hist_record_in_range(pab_hist *h, int64_t value, int64_t count)
{
    int32_t index = pab_hist_index(h, value);
    if (index >= h->counts_alloc && pab_hist_grow(h, index) < 0) {
        return -2;
    }
    int64_t bucket, n;
    if (__builtin_add_overflow(h->counts[index], count, &bucket) ||
        __builtin_add_overflow(h->total_count, count, &n)) {
        return -1;
    }
    h->counts[index] = bucket;
    double delta = (double)value - h->mean;
    h->mean += delta * (double)count / (double)n;
    h->m2 += delta * ((double)value - h->mean) * (double)count;
    h->total_count = n;
    if (value < h->min) {
        h->min = value;
    }
    if (value > h->max) {
        h->max = value;
    }
    return 0;
}

/* Counts count values clamped down to highest from above; the caller records them at highest
 * and has checked that clamped_count + count fits (clamped_above_count <= clamped_count). */
static inline void
pab_hist_count_clamped_above(pab_hist *h, int64_t count)
{
    if (h->clamped_above_count == 0) {
        h->clamped_above_at = h->highest;
    }
    h->clamped_count += count;
    h->clamped_above_count += count;
}

/* A new Histogram object holding a copy of h; NULL with an exception set on failure. */
PyObject *pab_histogram_from_hist(pab_state *state, const pab_hist *h);

/* For other components' native loops (runner.c): 1 if op is a Histogram object, else 0. */
int pab_histogram_check(PyObject *op);

/* Records value once into the Histogram object op (which must pass pab_histogram_check) under its
 * lock, with its out-of-range policy, as Histogram.record(value) would. Returns 0, or -1 with
 * ValueError (outside the range with clamp=False) or OverflowError set. Needs the GIL. */
int pab_histogram_record_value(PyObject *op, int64_t value);

#endif /* PYAGENTBENCH_HISTOGRAM_H */

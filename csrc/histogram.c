/* Histogram: an HDR-style latency histogram whose memory follows the largest value recorded (see
 * histogram.h for the layout). Recording is a clz, a shift and an add; percentiles walk the counts
 * once. */
#include "histogram.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HIST_DEFAULT_HIGHEST INT64_C(3600000000000) /* one hour in nanoseconds */

/* ---- the C structure ---- */

int
pab_hist_init(pab_hist *h, int64_t lowest, int64_t highest, int significant_figures, int clamp)
{
    memset(h, 0, sizeof(*h));
    if (lowest < 1) {
        PyErr_Format(PyExc_ValueError, "Histogram(): lowest must be >= 1, got %lld",
                     (long long)lowest);
        return -1;
    }
    if (lowest > highest / 2) { /* highest < 2 * lowest, without overflowing for lowest > 2**62 */
        PyErr_Format(PyExc_ValueError, "Histogram(): highest must be >= 2 * lowest, got %lld",
                     (long long)highest);
        return -1;
    }
    if (significant_figures < 1 || significant_figures > 5) {
        PyErr_Format(PyExc_ValueError,
                     "Histogram(): significant_figures must be between 1 and 5, got %d",
                     significant_figures);
        return -1;
    }
    int64_t single_unit_resolution = 2;
    for (int i = 0; i < significant_figures; i++) {
        single_unit_resolution *= 10;
    }
    int sub_bucket_count_magnitude = 0;
    while ((INT64_C(1) << sub_bucket_count_magnitude) < single_unit_resolution) {
        sub_bucket_count_magnitude++;
    }
    h->lowest = lowest;
    h->highest = highest;
    h->significant_figures = significant_figures;
    h->clamp = clamp;
    h->unit_magnitude = 63 - __builtin_clzll((uint64_t)lowest);
    h->sub_bucket_half_count_magnitude = sub_bucket_count_magnitude - 1;
    if (h->unit_magnitude + h->sub_bucket_half_count_magnitude + 1 > 62) {
        PyErr_SetString(PyExc_ValueError,
                        "Histogram(): lowest and significant_figures leave no room for the range");
        return -1;
    }
    h->sub_bucket_count = (int32_t)1 << (h->sub_bucket_half_count_magnitude + 1);
    h->sub_bucket_half_count = h->sub_bucket_count / 2;
    h->sub_bucket_mask = ((int64_t)h->sub_bucket_count - 1) << h->unit_magnitude;
    int64_t smallest_untrackable = (int64_t)h->sub_bucket_count << h->unit_magnitude;
    int32_t buckets = 1;
    while (smallest_untrackable <= highest) {
        if (smallest_untrackable > INT64_MAX / 2) {
            buckets++;
            break;
        }
        smallest_untrackable <<= 1;
        buckets++;
    }
    h->bucket_count = buckets;
    h->counts_len = (buckets + 1) * h->sub_bucket_half_count;
    h->counts_alloc = 0; /* allocated by the first record (pab_hist_grow) */
    h->counts = NULL;
    h->min = INT64_MAX;
    return 0;
}

int
pab_hist_grow(pab_hist *h, int32_t index)
{
    /* To the end of index's half-bucket, within the layout. calloc and a copy rather than realloc:
     * a large calloc gets pages the kernel zeroes on first touch, so the part no value has reached
     * yet takes address space but no RSS; realloc would leave the new part to be zeroed here. */
    int32_t half = h->sub_bucket_half_count;
    int32_t len = (index / half + 1) * half;
    if (len > h->counts_len) {
        len = h->counts_len;
    }
    if (len <= h->counts_alloc) {
        return 0;
    }
    int64_t *counts = (int64_t *)calloc((size_t)len, sizeof(int64_t));
    if (counts == NULL) {
        return -1;
    }
    if (h->counts_alloc > 0) {
        memcpy(counts, h->counts, (size_t)h->counts_alloc * sizeof(int64_t));
    }
    free(h->counts);
    h->counts = counts;
    h->counts_alloc = len;
    return 0;
}

int
pab_hist_copy_counts(const pab_hist *h, int64_t **out)
{
    *out = NULL;
    if (h->counts_alloc == 0) {
        return 0;
    }
    *out = (int64_t *)malloc((size_t)h->counts_alloc * sizeof(int64_t));
    if (*out == NULL) {
        return -1;
    }
    memcpy(*out, h->counts, (size_t)h->counts_alloc * sizeof(int64_t));
    return 0;
}

void
pab_hist_free(pab_hist *h)
{
    free(h->counts);
    h->counts = NULL;
    h->counts_alloc = 0;
}

void
pab_hist_reset(pab_hist *h)
{
    if (h->counts_alloc > 0) {
        memset(h->counts, 0, (size_t)h->counts_alloc * sizeof(int64_t));
    }
    h->total_count = 0;
    h->min = INT64_MAX;
    h->max = 0;
    h->clamped_count = 0;
    h->clamped_above_count = 0;
    h->clamped_above_at = 0;
    h->mean = 0.0;
    h->m2 = 0.0;
}

static int64_t
hist_value_at_index(const pab_hist *h, int32_t index)
{
    int32_t bucket = (index >> h->sub_bucket_half_count_magnitude) - 1;
    int32_t sub_bucket = (index & (h->sub_bucket_half_count - 1)) + h->sub_bucket_half_count;
    if (bucket < 0) {
        sub_bucket -= h->sub_bucket_half_count;
        bucket = 0;
    }
    return (int64_t)sub_bucket << (bucket + h->unit_magnitude);
}

/* The largest value that lands in index's sub-bucket. The top sub-bucket of a range reaching
 * 2**63 - 1 ends exactly at 2**63 - 1, so the sum is formed in uint64 (start + width overflows
 * int64 there) and saturated. */
static int64_t
hist_highest_equivalent(const pab_hist *h, int32_t index)
{
    int32_t bucket = (index >> h->sub_bucket_half_count_magnitude) - 1;
    if (bucket < 0) {
        bucket = 0;
    }
    uint64_t width_minus_one = (UINT64_C(1) << (bucket + h->unit_magnitude)) - 1;
    uint64_t top = (uint64_t)hist_value_at_index(h, index) + width_minus_one;
    return top > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)top;
}

/* Value at percentile p (0..100): the highest value equivalent to the nearest-rank sample, kept
 * within the exact [min, max]. 0 when empty. */
static int64_t
hist_percentile(const pab_hist *h, double p)
{
    if (h->total_count == 0) {
        return 0;
    }
    /* (double)total_count rounds up to 2**63 near the int64 maximum: compare before converting,
     * since converting a double of 2**63 or more to int64 is undefined. */
    double wanted = ceil(p / 100.0 * (double)h->total_count);
    int64_t rank = wanted < 1.0                        ? 1
                   : wanted >= (double)h->total_count ? h->total_count
                                                      : (int64_t)wanted;
    int64_t seen = 0;
    /* Every count lies at or below max's index; a dict from from_dict() may claim a max beyond
     * its counts, whose index is then past the allocation. */
    int32_t last = pab_hist_index(h, h->max);
    if (last >= h->counts_alloc) {
        last = h->counts_alloc - 1;
    }
    for (int32_t i = 0; i <= last; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            int64_t value = hist_highest_equivalent(h, i);
            if (value > h->max) {
                value = h->max;
            }
            if (value < h->min) {
                value = h->min;
            }
            return value;
        }
    }
    return h->max;
}

/* Adds count values, all equal to value, to the moments (n, mean, m2). */
static inline void
moments_add(double *n, double *mean, double *m2, double count, double value)
{
    double total = *n + count;
    double delta = value - *mean;
    *mean += delta * count / total;
    *m2 += delta * delta * *n * count / total;
    *n = total;
}

/* Adds src into dst (same layout or not); Chan's formula combines the moments. Returns 0; -1
 * without changing dst if a count would overflow int64; -2 without changing dst's values if its
 * counts could not grow to src's (MemoryError). Needs no Python API.
 *
 * From another layout, each of src's sub-buckets is re-recorded at its lowest value, and one that
 * starts above dst->highest is clamped to dst->highest. Those values ("re-clamped") are counted in
 * clamped once: src's own clamped_above values among them were counted by src already. They are
 * all among the re-clamped when the lowest value they are held at (clamped_above_at: src's
 * highest, for a histogram that recorded them itself) is re-clamped; when it is not (src got some
 * of them from a narrower histogram by an earlier merge), the count assumes as few of them are
 * re-clamped as can be.
 *
 * The moments follow the values: when some of src's values are re-clamped, src contributes them at
 * dst->highest and its other values at their sub-bucket midpoints (within src's exact min and
 * max), so mean and stddev describe the values the merged histogram holds, within the precision
 * of src's buckets; when none are, src's exact moments are used. Finally the mean is kept within
 * [min, max] and m2 within its bounds, which rounding could otherwise leave by a hair. */
static int
hist_merge(pab_hist *dst, const pab_hist *src)
{
    if (src->total_count == 0) {
        return 0;
    }
    int same = dst->lowest == src->lowest && dst->highest == src->highest &&
               dst->significant_figures == src->significant_figures;
    /* Check every sum before changing anything. Each bucket count is at most its histogram's
     * total, so when the totals' sum fits, so does every bucket's. */
    int64_t n;
    if (__builtin_add_overflow(dst->total_count, src->total_count, &n)) {
        return -1;
    }
    int64_t reclamped = 0;        /* src values in sub-buckets starting above dst->highest */
    int64_t already_clamped = 0;  /* of those, the ones src had clamped from above itself */
    if (!same && src->highest > dst->highest) {
        for (int32_t i = 0; i < src->counts_alloc; i++) {
            if (src->counts[i] != 0 && hist_value_at_index(src, i) > dst->highest) {
                reclamped += src->counts[i]; /* <= src->total_count: cannot overflow */
            }
        }
        if (src->clamped_above_count > 0) {
            int32_t at = pab_hist_index(src, src->clamped_above_at);
            already_clamped = src->clamped_above_count;
            if (hist_value_at_index(src, at) <= dst->highest) {
                already_clamped -= src->counts[at]; /* at most that many are held there */
                if (already_clamped < 0) {
                    already_clamped = 0;
                }
            }
            if (already_clamped > reclamped) {
                already_clamped = reclamped;
            }
        }
    }
    /* clamped_above <= clamped and each count is at most its histogram's total: when the sum for
     * clamped fits, so does the one for clamped_above. */
    int64_t clamped, newly_clamped = reclamped - already_clamped;
    if (newly_clamped > src->total_count - src->clamped_count) {
        newly_clamped = src->total_count - src->clamped_count; /* never more than src's values */
    }
    if (__builtin_add_overflow(dst->clamped_count, src->clamped_count, &clamped) ||
        __builtin_add_overflow(clamped, newly_clamped, &clamped)) {
        return -1;
    }
    int64_t clamped_above = dst->clamped_above_count + src->clamped_above_count + newly_clamped;
    int64_t clamped_above_at = dst->clamped_above_count > 0 ? dst->clamped_above_at : INT64_MAX;
    if (src->clamped_above_count > 0) {
        int64_t lands_at =
            same ? src->clamped_above_at
                 : hist_value_at_index(src, pab_hist_index(src, src->clamped_above_at));
        lands_at = lands_at > dst->highest ? dst->highest : lands_at;
        clamped_above_at = lands_at < clamped_above_at ? lands_at : clamped_above_at;
    }
    if (newly_clamped > 0 && dst->highest < clamped_above_at) {
        clamped_above_at = dst->highest;
    }
    if (clamped_above == 0) {
        clamped_above_at = 0;
    }
    /* Room in dst for src's largest value (re-recorded at its sub-bucket's start, within dst's
     * range, from another layout): the last change that can fail, made before any other. */
    int32_t src_last = src->counts_alloc - 1;
    while (src_last >= 0 && src->counts[src_last] == 0) {
        src_last--;
    }
    if (src_last >= 0) {
        int32_t dst_last = src_last;
        if (!same) {
            int64_t value = hist_value_at_index(src, src_last);
            dst_last = pab_hist_index(dst, value > dst->highest ? dst->highest : value);
        }
        if (dst_last >= dst->counts_alloc && pab_hist_grow(dst, dst_last) < 0) {
            return -2;
        }
    }
    /* src's moments, as the values it contributes. */
    double src_mean = src->mean, src_m2 = src->m2;
    if (reclamped == src->total_count) {
        src_mean = (double)dst->highest;
        src_m2 = 0.0;
    }
    else if (reclamped > 0) {
        double lo = (double)src->min;
        double hi = (double)(src->max < dst->highest ? src->max : dst->highest);
        double k = 0.0;
        src_mean = src_m2 = 0.0;
        for (int32_t i = 0; i < src->counts_alloc; i++) {
            if (src->counts[i] == 0 || hist_value_at_index(src, i) > dst->highest) {
                continue;
            }
            double low = (double)hist_value_at_index(src, i);
            double mid = low + ((double)hist_highest_equivalent(src, i) - low) / 2.0;
            mid = mid < lo ? lo : mid > hi ? hi : mid;
            moments_add(&k, &src_mean, &src_m2, (double)src->counts[i], mid);
        }
        moments_add(&k, &src_mean, &src_m2, (double)reclamped, (double)dst->highest);
    }
    for (int32_t i = 0; i < src->counts_alloc; i++) {
        int64_t c = src->counts[i];
        if (c == 0) {
            continue;
        }
        if (same) {
            dst->counts[i] += c;
        }
        else {
            int64_t value = hist_value_at_index(src, i);
            if (value > dst->highest) {
                value = dst->highest;
            }
            dst->counts[pab_hist_index(dst, value)] += c;
        }
    }
    double delta = src_mean - dst->mean;
    dst->m2 += src_m2 + delta * delta * (double)dst->total_count * (double)src->total_count / (double)n;
    dst->mean += delta * (double)src->total_count / (double)n;
    dst->total_count = n;
    int64_t src_min = src->min > dst->highest ? dst->highest : src->min;
    int64_t src_max = src->max > dst->highest ? dst->highest : src->max;
    if (src_min < dst->min) {
        dst->min = src_min;
    }
    if (src_max > dst->max) {
        dst->max = src_max;
    }
    dst->clamped_count = clamped;
    dst->clamped_above_count = clamped_above;
    dst->clamped_above_at = clamped_above_at;
    /* The mean of values in [min, max] lies in it; their m2 is at most n * (max - min)**2 / 4. */
    double min = (double)dst->min, max = (double)dst->max;
    dst->mean = dst->mean < min ? min : dst->mean > max ? max : dst->mean;
    double m2_bound = (max - min) * (max - min) / 4.0 * (double)n;
    dst->m2 = !(dst->m2 > 0.0) ? 0.0 : dst->m2 > m2_bound ? m2_bound : dst->m2;
    return 0;
}

/* ---- the Python type ---- */

typedef struct {
    PyObject_HEAD
    PAB_OBJECT_LOCK_FIELD
    pab_hist hist;
} HistogramObject;

static void histogram_dealloc(PyObject *op);

static inline int
is_histogram(PyObject *op)
{
    /* Histogram is final (no subclasses), so its dealloc identifies it. */
    return Py_TYPE(op)->tp_dealloc == histogram_dealloc;
}

static PyObject *
histogram_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"lowest", "highest", "significant_figures", "clamp", NULL};
    long long lowest = 1, highest = HIST_DEFAULT_HIGHEST;
    int significant_figures = 3, clamp = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|LLip:Histogram", kwlist, &lowest, &highest,
                                     &significant_figures, &clamp)) {
        return NULL;
    }
    HistogramObject *self = (HistogramObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    if (pab_hist_init(&self->hist, lowest, highest, significant_figures, clamp) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
histogram_dealloc(PyObject *op)
{
    HistogramObject *self = (HistogramObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    pab_hist_free(&self->hist);
    tp->tp_free(op);
    Py_DECREF(tp);
}

PyObject *
pab_histogram_from_hist(pab_state *state, const pab_hist *h)
{
    PyTypeObject *type = state->histogram_type;
    HistogramObject *self = (HistogramObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->hist = *h;
    self->hist.counts = NULL;
    self->hist.counts_alloc = 0; /* what dealloc frees, should the copy fail */
    int64_t *counts;
    if (pab_hist_copy_counts(h, &counts) < 0) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->hist.counts = counts;
    self->hist.counts_alloc = h->counts_alloc;
    return (PyObject *)self;
}

/* Sets OverflowError for a count beyond int64 in method `where`; returns NULL. */
static PyObject *
hist_overflow(const char *where)
{
    PyErr_Format(PyExc_OverflowError, "Histogram.%s: counts would overflow int64", where);
    return NULL;
}

/* Converts a recorded value: int (any size) or float (rounded). Sets *out; -1 with an error. */
static int
hist_convert_value(PyObject *obj, int64_t *out, const char *where)
{
    if (PyLong_Check(obj)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        *out = overflow > 0 ? INT64_MAX : overflow < 0 ? INT64_MIN : (int64_t)v;
        return 0;
    }
    if (PyFloat_Check(obj)) {
        double d = PyFloat_AS_DOUBLE(obj);
        if (isnan(d)) {
            PyErr_Format(PyExc_ValueError, "%s: value must not be NaN", where);
            return -1;
        }
        *out = d >= 9.2e18 ? INT64_MAX : d <= -9.2e18 ? INT64_MIN : (int64_t)llround(d);
        return 0;
    }
    PyObject *index = PyNumber_Index(obj);
    if (index == NULL) {
        PyErr_Format(PyExc_TypeError, "%s: value must be an int or a float, not %.100s", where,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    int rc = hist_convert_value(index, out, where);
    Py_DECREF(index);
    return rc;
}

/* Records value count times, applying the out-of-range policy. Returns -2 (no error set, nothing
 * changed) for a value outside [0, highest] with clamp=False: the caller reports it with
 * hist_out_of_range() once the object lock is released. -1 with OverflowError or MemoryError (and
 * nothing changed) if a count would overflow int64 or the counts could not grow to the value. */
static inline int
hist_record_checked(pab_hist *h, int64_t value, int64_t count)
{
    int64_t clamped = h->clamped_count;
    int above = 0;
    if (value < 0 || value > h->highest) {
        if (!h->clamp) {
            return -2;
        }
        if (__builtin_add_overflow(clamped, count, &clamped)) {
            hist_overflow("record()");
            return -1;
        }
        above = value > h->highest;
        value = value < 0 ? 0 : h->highest;
    }
    int rc = count > 0 ? pab_hist_record_in_range(h, value, count) : 0;
    if (rc < 0) {
        if (rc == -2) {
            PyErr_NoMemory();
        }
        else {
            hist_overflow("record()");
        }
        return -1;
    }
    if (above) {
        pab_hist_count_clamped_above(h, count);
    }
    else {
        h->clamped_count = clamped;
    }
    return 0;
}

/* Sets the ValueError of a value outside [0, highest] with clamp=False; returns -1. `passed` is
 * the object the caller gave (reported as is, since a huge int or float was saturated to an int64
 * on conversion), or NULL to report the int64 `value` read from a buffer. */
static int
hist_out_of_range(int64_t highest, int64_t value, PyObject *passed, const char *where)
{
    if (passed != NULL) {
        PyErr_Format(PyExc_ValueError, "%s: value %R is outside [0, %lld] (clamp=False)", where,
                     passed, (long long)highest);
    }
    else {
        PyErr_Format(PyExc_ValueError, "%s: value %lld is outside [0, %lld] (clamp=False)", where,
                     (long long)value, (long long)highest);
    }
    return -1;
}

int
pab_histogram_check(PyObject *op)
{
    return is_histogram(op);
}

int
pab_histogram_record_value(PyObject *op, int64_t value)
{
    HistogramObject *self = (HistogramObject *)op;
    PAB_OBJECT_LOCK(self);
    int64_t highest = self->hist.highest;
    int rc = hist_record_checked(&self->hist, value, 1);
    PAB_OBJECT_UNLOCK(self);
    if (rc == -2) {
        rc = hist_out_of_range(highest, value, NULL, "Histogram.record()");
    }
    return rc < 0 ? -1 : 0;
}

static PyObject *
histogram_record(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    HistogramObject *self = (HistogramObject *)op;
    int64_t value, count = 1;
    PyObject *count_obj = NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs + nkw < 1 || nargs + nkw > 2) {
        PyErr_Format(PyExc_TypeError, "record() takes a value and an optional count (%zd given)",
                     nargs + nkw);
        return NULL;
    }
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "record(): value must be passed by position");
        return NULL;
    }
    if (nargs == 2) {
        count_obj = args[1];
    }
    else if (nkw == 1) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "count") != 0) {
            PyErr_Format(PyExc_TypeError, "record() got an unexpected keyword argument %R",
                         PyTuple_GET_ITEM(kwnames, 0));
            return NULL;
        }
        count_obj = args[1];
    }
    if (hist_convert_value(args[0], &value, "Histogram.record()") < 0) {
        return NULL;
    }
    if (count_obj != NULL) {
        long long c = PyLong_AsLongLong(count_obj);
        if (c == -1 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Format(PyExc_TypeError, "record(): count must be an int, not %.100s",
                             Py_TYPE(count_obj)->tp_name);
            }
            return NULL;
        }
        if (c < 0) {
            PyErr_Format(PyExc_ValueError, "record(): count must be >= 0, got %lld", c);
            return NULL;
        }
        count = c;
    }
    PAB_OBJECT_LOCK(self);
    int64_t highest = self->hist.highest;
    int rc = hist_record_checked(&self->hist, value, count);
    PAB_OBJECT_UNLOCK(self);
    if (rc == -2) {
        rc = hist_out_of_range(highest, value, args[0], "Histogram.record()");
    }
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
buffer_format_is(const char *format, char code)
{
    if (format == NULL) {
        return code == 'B';
    }
    if (format[0] == '@' || format[0] == '=') {
        format++;
    }
    return format[0] == code && format[1] == '\0';
}

static PyObject *
histogram_record_many(PyObject *op, PyObject *values)
{
    HistogramObject *self = (HistogramObject *)op;
    if (PyObject_CheckBuffer(values) && !PyBytes_Check(values) && !PyByteArray_Check(values)) {
        Py_buffer view;
        if (PyObject_GetBuffer(values, &view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) {
            return NULL;
        }
        Py_ssize_t n = view.itemsize > 0 ? view.len / view.itemsize : 0;
        int kind = 0; /* 1 int64, 2 uint64, 3 int32, 4 double */
        if (view.itemsize == 8 && (buffer_format_is(view.format, 'q') || buffer_format_is(view.format, 'l'))) {
            kind = 1;
        }
        else if (view.itemsize == 8 && (buffer_format_is(view.format, 'Q') || buffer_format_is(view.format, 'L'))) {
            kind = 2;
        }
        else if (view.itemsize == 4 && buffer_format_is(view.format, 'i')) {
            kind = 3;
        }
        else if (view.itemsize == 8 && buffer_format_is(view.format, 'd')) {
            kind = 4;
        }
        if (kind == 0) {
            PyErr_Format(PyExc_TypeError,
                         "record_many(): values buffer must hold int64, uint64, int32 or float64, "
                         "not format %s",
                         view.format ? view.format : "B");
            PyBuffer_Release(&view);
            return NULL;
        }
        int rc = 0;
        int64_t v = 0;
        uint64_t big = 0; /* a uint64 value beyond int64, to report as it was */
        PAB_OBJECT_LOCK(self);
        int64_t highest = self->hist.highest;
        for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
            switch (kind) {
            case 1:
                v = ((const int64_t *)view.buf)[i];
                break;
            case 2: {
                uint64_t u = ((const uint64_t *)view.buf)[i];
                big = u > (uint64_t)INT64_MAX ? u : 0;
                v = u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
                break;
            }
            case 3:
                v = ((const int32_t *)view.buf)[i];
                break;
            default: {
                double d = ((const double *)view.buf)[i];
                if (isnan(d)) {
                    PyErr_SetString(PyExc_ValueError, "record_many(): values must not be NaN");
                    rc = -1;
                    continue;
                }
                v = d >= 9.2e18 ? INT64_MAX : d <= -9.2e18 ? INT64_MIN : (int64_t)llround(d);
            }
            }
            rc = hist_record_checked(&self->hist, v, 1);
        }
        PAB_OBJECT_UNLOCK(self);
        PyBuffer_Release(&view);
        if (rc == -2) {
            PyObject *passed = big ? PyLong_FromUnsignedLongLong(big) : NULL;
            if (big && passed == NULL) {
                return NULL;
            }
            rc = hist_out_of_range(highest, v, passed, "Histogram.record_many()");
            Py_XDECREF(passed);
        }
        if (rc < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *iterator = PyObject_GetIter(values);
    if (iterator == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Format(PyExc_TypeError,
                         "record_many(): values must be an iterable or a buffer, not %.100s",
                         Py_TYPE(values)->tp_name);
        }
        return NULL;
    }
    PyObject *item;
    while ((item = PyIter_Next(iterator)) != NULL) {
        int64_t v;
        int rc = hist_convert_value(item, &v, "Histogram.record_many()");
        if (rc == 0) {
            PAB_OBJECT_LOCK(self);
            int64_t highest = self->hist.highest;
            rc = hist_record_checked(&self->hist, v, 1);
            PAB_OBJECT_UNLOCK(self);
            if (rc == -2) {
                rc = hist_out_of_range(highest, v, item, "Histogram.record_many()");
            }
        }
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(iterator);
            return NULL;
        }
    }
    Py_DECREF(iterator);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
parse_percentile(PyObject *obj, double *p)
{
    double value = PyFloat_AsDouble(obj);
    if (value == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Format(PyExc_TypeError, "percentile(): p must be a number, not %.100s",
                         Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    if (!(value >= 0.0 && value <= 100.0)) {
        PyErr_Format(PyExc_ValueError, "percentile(): p must be between 0 and 100, got %R", obj);
        return -1;
    }
    *p = value;
    return 0;
}

static int64_t
locked_percentile(HistogramObject *self, double p)
{
    PAB_OBJECT_LOCK(self);
    int64_t value = hist_percentile(&self->hist, p);
    PAB_OBJECT_UNLOCK(self);
    return value;
}

static PyObject *
histogram_percentile(PyObject *op, PyObject *arg)
{
    HistogramObject *self = (HistogramObject *)op;
    double p;
    if (parse_percentile(arg, &p) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(locked_percentile(self, p));
}

static PyObject *
histogram_percentiles(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    HistogramObject *self = (HistogramObject *)op;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "percentiles() takes at most one argument");
        return NULL;
    }
    PyObject *ps = nargs == 1 ? Py_NewRef(args[0]) : Py_BuildValue("(iidd)", 50, 95, 99.0, 99.9);
    if (ps == NULL) {
        return NULL;
    }
    /* A tuple snapshot: it holds its items, which a p's __float__ cannot take away (it could
     * empty a list being iterated, freeing the very item in use). */
    PyObject *seq = PySequence_Tuple(ps);
    Py_DECREF(ps);
    if (seq == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_SetString(PyExc_TypeError, "percentiles(): ps must be an iterable of numbers");
        }
        return NULL;
    }
    PyObject *result = PyDict_New();
    if (result == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(seq); i++) {
        PyObject *key = PyTuple_GET_ITEM(seq, i);
        double p;
        if (parse_percentile(key, &p) < 0) {
            goto error;
        }
        PyObject *value = PyLong_FromLongLong(locked_percentile(self, p));
        if (value == NULL) {
            goto error;
        }
        int rc = PyDict_SetItem(result, key, value);
        Py_DECREF(value);
        if (rc < 0) {
            goto error;
        }
    }
    Py_DECREF(seq);
    return result;
error:
    Py_DECREF(seq);
    Py_DECREF(result);
    return NULL;
}

static PyObject *
histogram_merge(PyObject *op, PyObject *other)
{
    HistogramObject *self = (HistogramObject *)op;
    if (!is_histogram(other)) {
        return PyErr_Format(PyExc_TypeError, "merge(): other must be a Histogram, not %.100s",
                            Py_TYPE(other)->tp_name);
    }
    HistogramObject *src = (HistogramObject *)other;
    int rc;
    if (src == self) {
        /* A snapshot of the histogram, taken under the same lock as the merge. */
        PAB_OBJECT_LOCK(self);
        pab_hist copy = self->hist;
        rc = pab_hist_copy_counts(&self->hist, &copy.counts) < 0 ? -2 : hist_merge(&self->hist, &copy);
        PAB_OBJECT_UNLOCK(self);
        free(copy.counts);
    }
    else {
        /* Lock in address order so two threads merging a into b and b into a cannot deadlock. */
        HistogramObject *first = self < src ? self : src, *second = self < src ? src : self;
        PAB_OBJECT_LOCK(first);
        PAB_OBJECT_LOCK(second);
        (void)first;
        (void)second;
        rc = hist_merge(&self->hist, &src->hist);
        PAB_OBJECT_UNLOCK(second);
        PAB_OBJECT_UNLOCK(first);
    }
    if (rc == -2) {
        return PyErr_NoMemory();
    }
    if (rc < 0) {
        return hist_overflow("merge()");
    }
    Py_RETURN_NONE;
}

static PyObject *
histogram_reset(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    HistogramObject *self = (HistogramObject *)op;
    PAB_OBJECT_LOCK(self);
    pab_hist_reset(&self->hist);
    PAB_OBJECT_UNLOCK(self);
    Py_RETURN_NONE;
}

static PyObject *
histogram_copy(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    HistogramObject *self = (HistogramObject *)op;
    PyTypeObject *type = Py_TYPE(op);
    HistogramObject *copy = (HistogramObject *)type->tp_alloc(type, 0);
    if (copy == NULL) {
        return NULL;
    }
    int64_t *counts;
    PAB_OBJECT_LOCK(self);
    pab_hist snapshot = self->hist;
    int rc = pab_hist_copy_counts(&self->hist, &counts);
    PAB_OBJECT_UNLOCK(self);
    if (rc < 0) {
        Py_DECREF(copy); /* its counts are NULL (tp_alloc zeroes): nothing to free */
        return PyErr_NoMemory();
    }
    copy->hist = snapshot;
    copy->hist.counts = counts;
    return (PyObject *)copy;
}

static PyObject *
histogram_to_dict(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    HistogramObject *self = (HistogramObject *)op;
    const pab_hist *h = &self->hist;
    PyObject *counts = PyList_New(0);
    if (counts == NULL) {
        return NULL;
    }
    for (int32_t i = 0; i < h->counts_alloc; i++) {
        if (h->counts[i] == 0) {
            continue;
        }
        PyObject *pair = Py_BuildValue("[iL]", (int)i, (long long)h->counts[i]);
        if (pair == NULL || PyList_Append(counts, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(counts);
            return NULL;
        }
        Py_DECREF(pair);
    }
    return Py_BuildValue("{s:i,s:L,s:L,s:i,s:O,s:L,s:L,s:L,s:L,s:L,s:L,s:d,s:d,s:N}", "version", 1,
                         "lowest", (long long)h->lowest, "highest", (long long)h->highest,
                         "significant_figures", h->significant_figures, "clamp",
                         h->clamp ? Py_True : Py_False, "count", (long long)h->total_count, "min",
                         (long long)(h->total_count ? h->min : 0), "max", (long long)h->max,
                         "clamped", (long long)h->clamped_count, "clamped_above",
                         (long long)h->clamped_above_count, "clamped_above_at",
                         (long long)h->clamped_above_at, "mean", h->mean, "m2", h->m2,
                         "counts", counts);
}

static int
dict_int64(PyObject *d, const char *name, int64_t *out)
{
    PyObject *v = PyDict_GetItemString(d, name);
    if (v == NULL || !PyLong_Check(v)) {
        PyErr_Format(PyExc_ValueError, "from_dict(): %s must be an int", name);
        return -1;
    }
    long long value = PyLong_AsLongLong(v);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = value;
    return 0;
}

static int
dict_double(PyObject *d, const char *name, double *out)
{
    PyObject *v = PyDict_GetItemString(d, name);
    if (v == NULL || !(PyFloat_Check(v) || PyLong_Check(v))) {
        PyErr_Format(PyExc_ValueError, "from_dict(): %s must be a number", name);
        return -1;
    }
    *out = PyFloat_AsDouble(v);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *
histogram_from_dict(PyObject *cls, PyObject *data)
{
    if (!PyDict_Check(data)) {
        return PyErr_Format(PyExc_TypeError, "from_dict(): data must be a dict, not %.100s",
                            Py_TYPE(data)->tp_name);
    }
    int64_t lowest, highest, sf, count, min, max, clamped;
    double mean, m2;
    if (dict_int64(data, "lowest", &lowest) < 0 || dict_int64(data, "highest", &highest) < 0 ||
        dict_int64(data, "significant_figures", &sf) < 0 || dict_int64(data, "count", &count) < 0 ||
        dict_int64(data, "min", &min) < 0 || dict_int64(data, "max", &max) < 0 ||
        dict_int64(data, "clamped", &clamped) < 0 || dict_double(data, "mean", &mean) < 0 ||
        dict_double(data, "m2", &m2) < 0) {
        return NULL;
    }
    PyObject *clamp_obj = PyDict_GetItemString(data, "clamp");
    int clamp = clamp_obj == NULL ? 1 : PyObject_IsTrue(clamp_obj);
    if (clamp < 0) {
        return NULL;
    }
    if (sf < 1 || sf > 5) { /* validated as read: a cast to int first would wrap 2**32 + 3 to 3 */
        PyErr_Format(PyExc_ValueError,
                     "from_dict(): significant_figures must be between 1 and 5, got %lld",
                     (long long)sf);
        return NULL;
    }
    /* A tuple snapshot of counts: the dict's list is borrowed, and Python code run below (an
     * entry's __index__, a list subclass's __getitem__) could drop it or its entries. */
    PyObject *counts = PyDict_GetItemString(data, "counts");
    if (counts == NULL || !PyList_Check(counts)) {
        PyErr_SetString(PyExc_ValueError, "from_dict(): counts must be a list of [index, count]");
        return NULL;
    }
    Py_INCREF(counts); /* a list subclass's __iter__ could drop it from data while copied */
    Py_SETREF(counts, PySequence_Tuple(counts));
    if (counts == NULL) {
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)cls;
    HistogramObject *self = (HistogramObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(counts);
        return NULL;
    }
    if (pab_hist_init(&self->hist, lowest, highest, (int)sf, clamp) < 0) {
        goto error;
    }
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(counts); i++) {
        PyObject *pair = PyTuple_GET_ITEM(counts, i); /* held by the tuple */
        if (!(PyList_Check(pair) || PyTuple_Check(pair)) || PySequence_Size(pair) != 2) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError,
                                "from_dict(): counts must be a list of [index, count]");
            }
            goto error;
        }
        PyObject *a = PySequence_GetItem(pair, 0);
        if (a == NULL) {
            goto error;
        }
        PyObject *b = PySequence_GetItem(pair, 1);
        if (b == NULL) {
            Py_DECREF(a);
            goto error;
        }
        long long index = PyLong_AsLongLong(a);
        long long c = index == -1 && PyErr_Occurred() ? -1 : PyLong_AsLongLong(b);
        Py_DECREF(a);
        Py_DECREF(b);
        if (PyErr_Occurred()) {
            goto error;
        }
        if (index < 0 || index >= self->hist.counts_len || c < 0) {
            PyErr_Format(PyExc_ValueError, "from_dict(): bad counts entry [%lld, %lld]", index, c);
            goto error;
        }
        if (index >= self->hist.counts_alloc && pab_hist_grow(&self->hist, (int32_t)index) < 0) {
            PyErr_NoMemory();
            goto error;
        }
        int64_t bucket;
        if (__builtin_add_overflow(self->hist.counts[index], (int64_t)c, &bucket) ||
            __builtin_add_overflow(total, (int64_t)c, &total)) {
            hist_overflow("from_dict()");
            goto error;
        }
        self->hist.counts[index] = bucket;
    }
    Py_CLEAR(counts);
    if (total != count || (count > 0 && (min > max || min < 0 || max > highest))) {
        PyErr_SetString(PyExc_ValueError, "from_dict(): count, min and max disagree with counts");
        goto error;
    }
    /* clamped_above and clamped_above_at, absent from dicts written before they existed, are
     * inferred: none unless max reached the sub-bucket of highest; else all the clamped values
     * if none can have been clamped up to 0 (min > 0), else as many as that sub-bucket holds, at
     * most; held at highest. */
    int64_t clamped_above, clamped_above_at;
    if (PyDict_GetItemString(data, "clamped_above") != NULL) {
        if (dict_int64(data, "clamped_above", &clamped_above) < 0 ||
            dict_int64(data, "clamped_above_at", &clamped_above_at) < 0) {
            goto error;
        }
    }
    else if (count == 0 || pab_hist_index(&self->hist, max) != pab_hist_index(&self->hist, highest)) {
        clamped_above = clamped_above_at = 0;
    }
    else {
        int64_t top_count = self->hist.counts[pab_hist_index(&self->hist, highest)];
        clamped_above = min > 0 || clamped < top_count ? clamped : top_count;
        clamped_above_at = clamped_above > 0 ? highest : 0;
    }
    if (clamped < 0 || clamped > count || clamped_above < 0 || clamped_above > clamped ||
        clamped_above_at < 0 || clamped_above_at > highest ||
        (clamped_above_at == 0) != (clamped_above == 0)) {
        PyErr_SetString(PyExc_ValueError,
                        "from_dict(): clamped, clamped_above and clamped_above_at disagree with "
                        "count and highest");
        goto error;
    }
    self->hist.total_count = count;
    self->hist.min = count ? min : INT64_MAX;
    self->hist.max = count ? max : 0;
    self->hist.clamped_count = clamped;
    self->hist.clamped_above_count = clamped_above;
    self->hist.clamped_above_at = clamped_above_at;
    self->hist.mean = mean;
    self->hist.m2 = m2;
    return (PyObject *)self;
error:
    Py_XDECREF(counts);
    Py_DECREF(self);
    return NULL;
}

static PyObject *
histogram_repr(PyObject *op)
{
    HistogramObject *self = (HistogramObject *)op;
    return PyUnicode_FromFormat("<Histogram count=%lld min=%lld max=%lld>",
                                (long long)self->hist.total_count,
                                (long long)(self->hist.total_count ? self->hist.min : 0),
                                (long long)self->hist.max);
}

#define HIST_INT_GETTER(name, expr)                                                                \
    static PyObject *histogram_get_##name(PyObject *op, void *Py_UNUSED(closure))                 \
    {                                                                                              \
        const pab_hist *h = &((HistogramObject *)op)->hist;                                        \
        return PyLong_FromLongLong((long long)(expr));                                             \
    }

HIST_INT_GETTER(count, h->total_count)
HIST_INT_GETTER(min, h->total_count ? h->min : 0)
HIST_INT_GETTER(max, h->max)
HIST_INT_GETTER(clamped, h->clamped_count)
HIST_INT_GETTER(lowest, h->lowest)
HIST_INT_GETTER(highest, h->highest)
HIST_INT_GETTER(significant_figures, h->significant_figures)
HIST_INT_GETTER(memory_bytes, (int64_t)sizeof(HistogramObject) + (int64_t)h->counts_alloc * 8)

static PyObject *
histogram_get_mean(PyObject *op, void *Py_UNUSED(closure))
{
    const pab_hist *h = &((HistogramObject *)op)->hist;
    return PyFloat_FromDouble(h->total_count ? h->mean : 0.0);
}

static PyObject *
histogram_get_stddev(PyObject *op, void *Py_UNUSED(closure))
{
    const pab_hist *h = &((HistogramObject *)op)->hist;
    return PyFloat_FromDouble(h->total_count ? sqrt(h->m2 / (double)h->total_count) : 0.0);
}

static PyObject *
histogram_get_clamp(PyObject *op, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((HistogramObject *)op)->hist.clamp);
}

static PyGetSetDef histogram_getset[] = {
    {"count", histogram_get_count, NULL, "Number of values recorded.", NULL},
    {"min", histogram_get_min, NULL, "Smallest value recorded (exact); 0 when empty.", NULL},
    {"max", histogram_get_max, NULL, "Largest value recorded (exact); 0 when empty.", NULL},
    {"mean", histogram_get_mean, NULL, "Mean of the values recorded; 0.0 when empty.", NULL},
    {"stddev", histogram_get_stddev, NULL,
     "Population standard deviation of the values recorded; 0.0 when empty.", NULL},
    {"clamped", histogram_get_clamped, NULL,
     "How many recorded values lay outside [0, highest] and were clamped into it.", NULL},
    {"lowest", histogram_get_lowest, NULL, "Lowest discernible value (the resolution unit).", NULL},
    {"highest", histogram_get_highest, NULL, "Highest trackable value.", NULL},
    {"significant_figures", histogram_get_significant_figures, NULL,
     "Decimal digits of precision kept for every value.", NULL},
    {"clamp", histogram_get_clamp, NULL,
     "True: out-of-range values are clamped and counted; False: they raise ValueError.", NULL},
    {"memory_bytes", histogram_get_memory_bytes, NULL,
     "Bytes this histogram holds now: the object and the counts up to the bucket of the largest "
     "value recorded (a fresh histogram holds no counts; reset() keeps them).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef histogram_methods[] = {
    {"record", (PyCFunction)(void (*)(void))histogram_record, METH_FASTCALL | METH_KEYWORDS,
     "record(value, /, count=1) -> None\n--\n\nRecord value (an int, or a float rounded to the "
     "nearest int) count times. Values outside [0, highest] are clamped and counted in `clamped` "
     "(or raise ValueError when clamp=False)."},
    {"record_many", histogram_record_many, METH_O,
     "record_many(values, /) -> None\n--\n\nRecord every value of an iterable, or of a buffer of "
     "int64, uint64, int32 or float64 (array.array('q'), numpy arrays) without creating Python "
     "objects."},
    {"percentile", histogram_percentile, METH_O,
     "percentile(p, /) -> int\n--\n\nThe value at percentile p (0..100), nearest-rank, within a "
     "relative error of 10**-significant_figures; 0 when empty."},
    {"percentiles", (PyCFunction)(void (*)(void))histogram_percentiles, METH_FASTCALL,
     "percentiles(ps=(50, 95, 99.0, 99.9), /) -> dict\n--\n\nA dict mapping each p in ps to "
     "percentile(p)."},
    {"merge", histogram_merge, METH_O,
     "merge(other, /) -> None\n--\n\nAdd every value recorded in other (a Histogram) to this one. "
     "Histograms of another range are re-recorded at bucket resolution; values above this "
     "histogram's highest are clamped (counted once in clamped, and in mean and stddev at "
     "highest)."},
    {"reset", histogram_reset, METH_NOARGS, "reset() -> None\n--\n\nForget every recorded value."},
    {"copy", histogram_copy, METH_NOARGS, "copy() -> Histogram\n--\n\nAn independent copy."},
    {"to_dict", histogram_to_dict, METH_NOARGS,
     "to_dict() -> dict\n--\n\nA JSON-ready dict (non-zero counts by bucket index) that "
     "from_dict() turns back into an equal Histogram."},
    {"from_dict", histogram_from_dict, METH_O | METH_CLASS,
     "from_dict(data, /) -> Histogram\n--\n\nRebuild a Histogram from to_dict()'s output; "
     "ValueError if data is inconsistent."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot histogram_slots[] = {
    {Py_tp_new, histogram_new},
    {Py_tp_dealloc, histogram_dealloc},
    {Py_tp_repr, histogram_repr},
    {Py_tp_methods, histogram_methods},
    {Py_tp_getset, histogram_getset},
    {Py_tp_doc,
     "Histogram(lowest=1, highest=3_600_000_000_000, significant_figures=3, clamp=True)\n--\n\n"
     "Latency histogram (HDR-style log-linear buckets). Tracks integer values in [0, highest] "
     "(default: one hour in nanoseconds) with significant_figures decimal digits of precision; "
     "min and max are exact. Its memory follows the largest value recorded: a record() that "
     "reaches a new half-bucket grows the counts to it, any other record() never allocates."},
    {0, NULL},
};

static PyType_Spec histogram_spec = {
    .name = "pyagentbench._native.Histogram",
    .basicsize = sizeof(HistogramObject),
    .flags = Py_TPFLAGS_DEFAULT | PAB_TPFLAGS_IMMUTABLE,
    .slots = histogram_slots,
};

int
pab_histogram_exec(PyObject *module, pab_state *state)
{
    return pab_add_type(module, &histogram_spec, NULL, &state->histogram_type);
}

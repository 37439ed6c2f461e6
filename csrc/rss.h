/* Reading the process's resident set size (RSS) and its high-water mark from procfs (Linux), and
 * handing the C heap's free memory back to the OS before a measurement starts.
 *
 * Shared by sampler.c (the sampler thread reads RSS without the GIL) and the module-level rss(),
 * peak_rss(), reset_peak_rss() and trim_heap() functions. Nothing here touches the Python API. */
#ifndef PYAGENTBENCH_RSS_H
#define PYAGENTBENCH_RSS_H

#include <stdint.h>

#if defined(__linux__)
#define PAB_HAVE_PROCFS_RSS 1
#else
#define PAB_HAVE_PROCFS_RSS 0
#endif

/* Opens /proc/self/statm for repeated pread()s (close-on-exec). Returns the descriptor, or -1 with
 * errno set. The descriptor names this process: after fork() a child must open its own. */
int pab_statm_open(void);

/* Resident bytes from an open statm descriptor (resident pages x page size), or -1 with errno set. */
int64_t pab_statm_rss_bytes(int fd);

/* Resident bytes of this process through a descriptor kept open per process (reopened after fork),
 * or -1 with errno set. Thread-safe; never blocks on anything but the read itself. */
int64_t pab_rss_bytes(void);

/* A "Name:  <n> kB" field of /proc/self/status (e.g. "VmHWM", "VmRSS") in bytes, or -1 with errno
 * set (ENOENT when the field is missing). */
int64_t pab_status_field_bytes(const char *name);

/* Resets the kernel's RSS high-water mark (VmHWM) by writing "5" to /proc/self/clear_refs.
 * Returns 1 on success, 0 where the kernel or its configuration does not permit it, -1 with errno set
 * on any other failure. */
int pab_reset_peak_rss(void);

/* Hands the C heap's free memory back to the OS: glibc's malloc_trim(0), which shrinks the top of
 * the main heap and madvise(MADV_DONTNEED)s every whole free page inside each malloc arena, so memory
 * that earlier code freed stops counting in RSS. Returns 1 if it released something, 0 if it ran
 * and found nothing to release, -1 where the allocator has no such call (not glibc). Takes the
 * allocator's arena locks, never the GIL: call it with the GIL released. */
int pab_trim_heap(void);

#endif /* PYAGENTBENCH_RSS_H */

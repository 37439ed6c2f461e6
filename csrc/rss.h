/* Reading the process's resident set size (RSS) and its high-water mark from procfs (Linux).
 *
 * Shared by sampler.c (the sampler thread reads RSS without the GIL) and the module-level rss(),
 * peak_rss() and reset_peak_rss() functions. Nothing here touches the Python API. */
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

#endif /* PYAGENTBENCH_RSS_H */

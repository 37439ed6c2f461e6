/* RSS from procfs: statm with pread on a descriptor kept open, VmHWM from status, clear_refs; and
 * malloc_trim() where the C library is glibc. */
#ifndef _GNU_SOURCE /* Python.h's pyconfig.h defines it too */
#define _GNU_SOURCE 1
#endif
#include "rss.h"

#include <errno.h>
#include <string.h>

/* <errno.h> pulls in <features.h> on glibc, which defines __GLIBC__; musl and the BSD and macOS
 * libcs have no malloc_trim(). */
#if defined(__GLIBC__)
#include <malloc.h>
#define PAB_HAVE_MALLOC_TRIM 1
#else
#define PAB_HAVE_MALLOC_TRIM 0
#endif

int
pab_trim_heap(void)
{
#if PAB_HAVE_MALLOC_TRIM
    return malloc_trim(0) ? 1 : 0;
#else
    return -1;
#endif
}

#if PAB_HAVE_PROCFS_RSS
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

int
pab_statm_open(void)
{
    int fd;
    do {
        fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    return fd;
}

/* Parses the n-th (0-based) space-separated unsigned decimal field of text. */
static int64_t
nth_field(const char *text, int n)
{
    const char *p = text;
    for (int i = 0; i < n; i++) {
        while (*p >= '0' && *p <= '9') {
            p++;
        }
        if (*p != ' ') {
            return -1;
        }
        p++;
    }
    if (*p < '0' || *p > '9') {
        return -1;
    }
    int64_t value = 0;
    while (*p >= '0' && *p <= '9') {
        value = value * 10 + (*p - '0');
        p++;
    }
    return value;
}

int64_t
pab_statm_rss_bytes(int fd)
{
    /* statm is seven numbers of at most 20 digits each. */
    char buf[192];
    ssize_t n;
    do {
        n = pread(fd, buf, sizeof(buf) - 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        if (n == 0) {
            errno = EIO;
        }
        return -1;
    }
    buf[n] = '\0';
    int64_t pages = nth_field(buf, 1);
    if (pages < 0) {
        errno = EIO;
        return -1;
    }
    return pages * (int64_t)sysconf(_SC_PAGESIZE);
}

/* The descriptor behind pab_rss_bytes(): process-wide by nature (it names this process), opened on
 * first use. A fork handler closes it in the child, where it would read the parent's statm, so the
 * next call there opens the child's own; the hot path is one atomic load and one pread. */
static atomic_int rss_fd = -1;
static pthread_once_t rss_atfork_once = PTHREAD_ONCE_INIT;

static void
rss_atfork_child(void)
{
    int fd = atomic_exchange(&rss_fd, -1); /* the child is single-threaded here */
    if (fd >= 0) {
        close(fd);
    }
}

static void
rss_register_atfork(void)
{
    (void)pthread_atfork(NULL, NULL, rss_atfork_child);
}

int64_t
pab_rss_bytes(void)
{
    int fd = atomic_load_explicit(&rss_fd, memory_order_acquire);
    if (fd < 0) {
        (void)pthread_once(&rss_atfork_once, rss_register_atfork);
        int opened = pab_statm_open();
        if (opened < 0) {
            return -1;
        }
        int expected = -1;
        if (atomic_compare_exchange_strong(&rss_fd, &expected, opened)) {
            fd = opened;
        }
        else {
            close(opened); /* another thread opened one first */
            fd = expected;
        }
    }
    return pab_statm_rss_bytes(fd);
}

int64_t
pab_status_field_bytes(const char *name)
{
    int fd;
    do {
        fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        return -1;
    }
    char buf[8192];
    size_t used = 0;
    for (;;) {
        ssize_t n = read(fd, buf + used, sizeof(buf) - 1 - used);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
        if (n == 0 || used + (size_t)n >= sizeof(buf) - 1) {
            used += (size_t)n;
            break;
        }
        used += (size_t)n;
    }
    close(fd);
    buf[used] = '\0';
    size_t name_len = strlen(name);
    const char *line = buf;
    while (line != NULL && *line != '\0') {
        if (strncmp(line, name, name_len) == 0 && line[name_len] == ':') {
            const char *p = line + name_len + 1;
            while (*p == ' ' || *p == '\t') {
                p++;
            }
            if (*p < '0' || *p > '9') {
                break;
            }
            int64_t kib = 0;
            while (*p >= '0' && *p <= '9') {
                kib = kib * 10 + (*p - '0');
                p++;
            }
            return kib * 1024;
        }
        line = strchr(line, '\n');
        if (line != NULL) {
            line++;
        }
    }
    errno = ENOENT;
    return -1;
}

int
pab_reset_peak_rss(void)
{
    int fd;
    do {
        fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        return (errno == EACCES || errno == EPERM || errno == ENOENT || errno == EROFS) ? 0 : -1;
    }
    ssize_t n;
    do {
        n = write(fd, "5", 1);
    } while (n < 0 && errno == EINTR);
    int saved = errno;
    close(fd);
    if (n == 1) {
        return 1;
    }
    errno = saved;
    /* Kernels before 4.0 reject "5" with EINVAL; sandboxes may refuse with EPERM/EACCES. */
    return (saved == EINVAL || saved == EACCES || saved == EPERM) ? 0 : -1;
}

#else /* !PAB_HAVE_PROCFS_RSS */

int pab_statm_open(void) { errno = ENOSYS; return -1; }
int64_t pab_statm_rss_bytes(int fd) { (void)fd; errno = ENOSYS; return -1; }
int64_t pab_rss_bytes(void) { errno = ENOSYS; return -1; }
int64_t pab_status_field_bytes(const char *name) { (void)name; errno = ENOSYS; return -1; }
int pab_reset_peak_rss(void) { return 0; }

#endif

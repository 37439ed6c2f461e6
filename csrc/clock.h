/* Clocks shared by every component: monotonic nanoseconds, CPU time and the cycle counter. */
#ifndef PYAGENTBENCH_CLOCK_H
#define PYAGENTBENCH_CLOCK_H

#include <stdint.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define PAB_HAVE_CYCLE_COUNTER 1
#elif defined(__aarch64__)
#define PAB_HAVE_CYCLE_COUNTER 1
#else
#define PAB_HAVE_CYCLE_COUNTER 0
#endif

/* How now_ns() turns the cycle counter into nanoseconds. Filled once per process by
 * pab_clock_calibrate(): the counter's rate is a property of the machine, not of an interpreter, so
 * this is process-wide state by nature, written before any reader can run and never changed after. */
typedef struct {
    int counter_is_clock;   /* 1: now_ns() scales the counter; 0: now_ns() calls clock_gettime */
    uint64_t base_cycles;   /* counter value at base_ns */
    int64_t base_ns;        /* CLOCK_MONOTONIC at calibration */
    uint64_t mult;          /* nanoseconds per cycle, 32.32 fixed point */
    double ns_per_cycle;
    double cycles_per_second;
} pab_clock_calibration;

extern pab_clock_calibration pab_clock;

static inline int64_t
pab_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The raw cycle counter; 0 where there is none (PAB_HAVE_CYCLE_COUNTER == 0). */
static inline uint64_t
pab_cycles(void)
{
#if defined(__x86_64__) || defined(__i386__)
    return __rdtsc();
#elif defined(__aarch64__)
    uint64_t value;
    __asm__ __volatile__("isb\n\tmrs %0, cntvct_el0" : "=r"(value)::"memory");
    return value;
#else
    return 0;
#endif
}

/* The package's monotonic clock in nanoseconds: the cycle counter scaled to CLOCK_MONOTONIC's rate
 * where the kernel itself keeps time with that counter, else CLOCK_MONOTONIC. */
static inline int64_t
pab_now_ns(void)
{
#if defined(__SIZEOF_INT128__) && PAB_HAVE_CYCLE_COUNTER
    if (pab_clock.counter_is_clock) {
        uint64_t delta = pab_cycles() - pab_clock.base_cycles;
        return pab_clock.base_ns + (int64_t)(((unsigned __int128)delta * pab_clock.mult) >> 32);
    }
#endif
    return pab_monotonic_ns();
}

static inline int64_t
pab_cpu_clock_ns(clockid_t clock)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0) {
        return -1;
    }
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t
pab_thread_cpu_ns(void)
{
    return pab_cpu_clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

static inline int64_t
pab_process_cpu_ns(void)
{
    return pab_cpu_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
}

/* Calibrates the cycle counter against CLOCK_MONOTONIC once per process (later calls return at once).
 * Needs no Python API; safe to call without the GIL. */
void pab_clock_calibrate(void);

#endif /* PYAGENTBENCH_CLOCK_H */

/* _shims/wait.h: bounded waits without the GIL (wait.c): spin, futex sleep,
 * deadlines, and the adaptive spin a device learns from its latencies. The
 * Python layer waits in slices of at most PYSPDK_WAIT_SLICE_NS nanoseconds,
 * so signals and timeouts reach it. */
#ifndef PYSPDK_SHIMS_WAIT_H
#define PYSPDK_SHIMS_WAIT_H

#include "spdk/stdinc.h"

/* cffi begin */
#define PYSPDK_WAIT_SLICE_NS 50000000
/* Adaptive spins stay within these bounds (nanoseconds). */
#define PYSPDK_ADAPT_MIN_SPIN_NS 3000
#define PYSPDK_ADAPT_MAX_SPIN_NS 100000
/* CPUs SPDK reactors busy-poll, where adaptive waits do not spin. */
void pyspdk_mark_polled_cpu(int cpu, bool polled);
bool pyspdk_on_polled_cpu(void);
/* cffi end */

static inline void
pyspdk_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

static inline int64_t
pyspdk_now_ns(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/* Wake every thread asleep on *word. */
void pyspdk_futex_wake_all(uint32_t *word);
/* *ts = now + timeout_ns (CLOCK_MONOTONIC). */
void pyspdk_deadline(struct timespec *ts, int64_t timeout_ns);
/* Nanoseconds until `deadline` (<= 0 once past it). */
int64_t pyspdk_ns_left(const struct timespec *deadline);
/* Sleep on *word while it holds `value`, at most until `deadline`. 0 after a
 * wake-up (spurious ones included), -EINTR for a signal, -ETIMEDOUT once past it. */
int pyspdk_futex_sleep(uint32_t *word, uint32_t value, const struct timespec *deadline);
/* The CPUs this thread may run on (asked once per thread). */
int pyspdk_thread_cpus(void);
/* Spin while *word == busy, at most spin_ns; see wait.c. */
void pyspdk_spin_while(uint32_t *word, uint32_t busy, int64_t spin_ns, int *spinners,
		       int64_t lend_ns);
/* Wait until *word != busy: spin, then sleep, at most timeout_ns in all. 0,
 * -ETIMEDOUT or -EINTR. */
int pyspdk_wait_word(uint32_t *word, uint32_t busy, int64_t spin_ns, int64_t timeout_ns,
		     int *spinners, int64_t lend_ns);

/* What a device learns of its completion latency, for adaptive spins. */
struct pyspdk_adapt {
	int64_t latency_ns;      /* smoothed (1/8 weight) completion latency */
	int64_t p99_ns;          /* running estimate of its 99th percentile */
};

/* Resolve a caller's spin: spin_ns < 0 asks `adapt` (0 on a polled CPU).
 * Returns the time the spin may lend to other threads. */
int64_t pyspdk_adapt_spin(struct pyspdk_adapt *adapt, int64_t *spin_ns);
/* A request submitted at submitted_ns was completed at done_ns. */
void pyspdk_adapt_learn(struct pyspdk_adapt *adapt, int64_t submitted_ns, int64_t done_ns);

#endif /* PYSPDK_SHIMS_WAIT_H */

/* Waiting without the GIL: spin, futex sleep and deadlines (declared in wait.h).
 *
 * Every wait here is bounded by a deadline the caller gives. The Python layer
 * waits in slices of at most PYSPDK_WAIT_SLICE_NS and runs between them, so
 * a signal handler (KeyboardInterrupt) or a timeout is never held up by a
 * request SPDK has not finished.
 */
#include <linux/futex.h>
#include <sys/syscall.h>

#define PYSPDK_WAIT_SLICE_NS 50000000

static inline void
pyspdk_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

static long
pyspdk_futex(uint32_t *word, int op, uint32_t value, const struct timespec *timeout)
{
	return syscall(SYS_futex, word, op | FUTEX_PRIVATE_FLAG, value, timeout, NULL, 0);
}

static void
pyspdk_futex_wake_all(uint32_t *word)
{
	pyspdk_futex(word, FUTEX_WAKE, INT_MAX, NULL);
}

static void
pyspdk_deadline(struct timespec *ts, int64_t timeout_ns)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += timeout_ns / 1000000000;
	ts->tv_nsec += timeout_ns % 1000000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

static int64_t
pyspdk_ns_left(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)(deadline->tv_sec - now.tv_sec) * 1000000000 +
	       (deadline->tv_nsec - now.tv_nsec);
}

/* Sleep on *word while it holds `value`, at most until `deadline`. 0 after a
 * wake-up (spurious ones and signals included), -ETIMEDOUT once past it. */
static int
pyspdk_futex_sleep(uint32_t *word, uint32_t value, const struct timespec *deadline)
{
	struct timespec rel;
	int64_t left = pyspdk_ns_left(deadline);

	if (left <= 0) {
		return -ETIMEDOUT;
	}
	rel.tv_sec = left / 1000000000;
	rel.tv_nsec = left % 1000000000;
	if (pyspdk_futex(word, FUTEX_WAIT, value, &rel) != 0 && errno == EINTR) {
		return -EINTR;
	}
	return 0;
}

/* Wait until *word != busy: spin for spin_ns, then sleep, for at most
 * timeout_ns in all (>= 0). 0 when it changed; -ETIMEDOUT or -EINTR (a signal
 * arrived: let Python run its handler) otherwise. `spinners`, when not NULL,
 * counts the threads spinning now: with others spinning too, yield instead of
 * pausing, as the thread holding the GIL needs the core more. */
static int
pyspdk_wait_word(uint32_t *word, uint32_t busy, int64_t spin_ns, int64_t timeout_ns,
		 int *spinners)
{
	struct timespec spin_end, deadline;
	uint32_t seen;
	int rc;

	if (timeout_ns < 0) {
		timeout_ns = 0;
	}
	if (spin_ns > timeout_ns) {
		spin_ns = timeout_ns;
	}
	if (spin_ns > 0 && __atomic_load_n(word, __ATOMIC_ACQUIRE) == busy) {
		pyspdk_deadline(&spin_end, spin_ns);
		if (spinners) {
			__atomic_add_fetch(spinners, 1, __ATOMIC_RELAXED);
		}
		while (__atomic_load_n(word, __ATOMIC_ACQUIRE) == busy &&
		       pyspdk_ns_left(&spin_end) > 0) {
			if (spinners && __atomic_load_n(spinners, __ATOMIC_RELAXED) > 1) {
				sched_yield();
			} else {
				pyspdk_cpu_relax();
			}
		}
		if (spinners) {
			__atomic_sub_fetch(spinners, 1, __ATOMIC_RELAXED);
		}
	}
	pyspdk_deadline(&deadline, timeout_ns);
	while ((seen = __atomic_load_n(word, __ATOMIC_ACQUIRE)) == busy) {
		rc = pyspdk_futex_sleep(word, seen, &deadline);
		if (rc != 0) {
			return __atomic_load_n(word, __ATOMIC_ACQUIRE) == busy ? rc : 0;
		}
	}
	return 0;
}

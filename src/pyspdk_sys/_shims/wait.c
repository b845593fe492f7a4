/* Waiting without the GIL: spin, futex sleep and deadlines (declared in wait.h).
 *
 * Every wait here is bounded by a deadline the caller gives. The Python layer
 * waits in slices of at most PYSPDK_WAIT_SLICE_NS and runs between them, so
 * a signal handler (KeyboardInterrupt) or a timeout is never held up by a
 * request SPDK has not finished.
 */
#include "wait.h"

#include <linux/futex.h>
#include <sys/syscall.h>

static long
pyspdk_futex(uint32_t *word, int op, uint32_t value, const struct timespec *timeout)
{
	return syscall(SYS_futex, word, op | FUTEX_PRIVATE_FLAG, value, timeout, NULL, 0);
}

void
pyspdk_futex_wake_all(uint32_t *word)
{
	pyspdk_futex(word, FUTEX_WAKE, INT_MAX, NULL);
}

void
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

int64_t
pyspdk_ns_left(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)(deadline->tv_sec - now.tv_sec) * 1000000000 +
	       (deadline->tv_nsec - now.tv_nsec);
}

/* Sleep on *word while it holds `value`, at most until `deadline`. 0 after a
 * wake-up (spurious ones and signals included), -ETIMEDOUT once past it. */
int
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

/* The CPUs this thread may run on (asked once per thread). */
int
pyspdk_thread_cpus(void)
{
	static __thread int cpus;
	cpu_set_t set;

	if (cpus == 0) {
		cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
		if (cpus < 1) {
			cpus = 1;
		}
	}
	return cpus;
}

/* A yield that returns later than this ran another thread meanwhile. */
#define PYSPDK_LENT_NS 2000

/* Spin while *word == busy, for at most spin_ns. `spinners`, when not NULL,
 * counts the threads spinning now: with others spinning too, or with one CPU
 * for this thread, yield instead of pausing, as the thread holding the GIL
 * may need the core more. With `lend_ns`, time a yield lent to other threads
 * does not count against spin_ns, up to lend_ns in all: while other threads
 * keep the core busy, spinning costs them nothing and spares a wake-up. */
void
pyspdk_spin_while(uint32_t *word, uint32_t busy, int64_t spin_ns, int *spinners, int64_t lend_ns)
{
	int64_t now, end, lent = 0, before;

	if (spin_ns <= 0 || __atomic_load_n(word, __ATOMIC_ACQUIRE) != busy) {
		return;
	}
	if (spinners) {
		__atomic_add_fetch(spinners, 1, __ATOMIC_RELAXED);
	}
	now = pyspdk_now_ns();
	end = now + spin_ns;
	while (__atomic_load_n(word, __ATOMIC_ACQUIRE) == busy && now < end) {
		if (spinners && (__atomic_load_n(spinners, __ATOMIC_RELAXED) > 1 ||
				 pyspdk_thread_cpus() == 1)) {
			before = now;
			sched_yield();
			now = pyspdk_now_ns();
			if (now - before > PYSPDK_LENT_NS && lent < lend_ns) {
				end += now - before;
				lent += now - before;
			}
		} else {
			pyspdk_cpu_relax();
			now = pyspdk_now_ns();
		}
	}
	if (spinners) {
		__atomic_sub_fetch(spinners, 1, __ATOMIC_RELAXED);
	}
}

/* Wait until *word != busy: spin for spin_ns (as pyspdk_spin_while), then
 * sleep, for at most timeout_ns in all (>= 0). 0 when it changed; -ETIMEDOUT
 * or -EINTR (a signal arrived: let Python run its handler) otherwise. */
int
pyspdk_wait_word(uint32_t *word, uint32_t busy, int64_t spin_ns, int64_t timeout_ns,
		 int *spinners, int64_t lend_ns)
{
	struct timespec deadline;
	uint32_t seen;
	int rc;

	if (timeout_ns < 0) {
		timeout_ns = 0;
	}
	pyspdk_spin_while(word, busy, spin_ns < timeout_ns ? spin_ns : timeout_ns, spinners,
			  lend_ns);
	pyspdk_deadline(&deadline, timeout_ns);
	while ((seen = __atomic_load_n(word, __ATOMIC_ACQUIRE)) == busy) {
		rc = pyspdk_futex_sleep(word, seen, &deadline);
		if (rc != 0) {
			return __atomic_load_n(word, __ATOMIC_ACQUIRE) == busy ? rc : 0;
		}
	}
	return 0;
}

/* Adaptive spinning. A waiter that passes spin_ns < 0 lets the request's
 * device choose from the completion latency it has shown lately, measured
 * from submission to the engine's completion (so not inflated by waiters
 * that wait for a core or the GIL):
 * - while the typical latency is short, spin long enough to cover nearly all
 *   of them, twice its 99th percentile and at least PYSPDK_ADAPT_FLOOR_NS: a
 *   spin that ends too early costs a sleep and a wake-up, tens of
 *   microseconds, while one that is longer than needed ends at the completion;
 * - while it is long, spin only PYSPDK_ADAPT_MIN_SPIN_NS.
 * Either way the time a yield lends to other threads (the thread holding the
 * GIL, say) is not counted, up to PYSPDK_ADAPT_MAX_LEND_NS: when Python
 * threads keep the core busy a spinner costs nothing and spares the wake-up,
 * and when they do not it gives up quickly. The state is a hint shared
 * without locks: a lost update costs one wait's tuning, never correctness. */
#define PYSPDK_ADAPT_FLOOR_NS 20000
#define PYSPDK_ADAPT_MAX_LEND_NS 250000

/* How long this wait should spin on its own CPU time, in ns. */
static int64_t
pyspdk_adapt_budget(struct pyspdk_adapt *adapt)
{
	int64_t budget;

	if (__atomic_load_n(&adapt->latency_ns, __ATOMIC_RELAXED) * 2 > PYSPDK_ADAPT_MAX_SPIN_NS) {
		return PYSPDK_ADAPT_MIN_SPIN_NS;
	}
	budget = 2 * __atomic_load_n(&adapt->p99_ns, __ATOMIC_RELAXED);
	budget = budget > PYSPDK_ADAPT_FLOOR_NS ? budget : PYSPDK_ADAPT_FLOOR_NS;
	return budget < PYSPDK_ADAPT_MAX_SPIN_NS ? budget : PYSPDK_ADAPT_MAX_SPIN_NS;
}

/* CPUs an SPDK reactor busy-polls: this process's reactors, and other SPDK
 * processes' as last seen (a count per CPU, as several owners may mark one).
 * An adaptive waiter that finds itself on one of them does not spin: every
 * cycle it spins, and every yield it lends, goes to or from a reactor that
 * never sleeps, and a futex wake-up preempts that reactor at once instead. */
#define PYSPDK_MAX_CPUS 1024

static uint16_t g_pyspdk_polled_cpus[PYSPDK_MAX_CPUS];

/* Mark (or, with polled false, unmark) one CPU as a reactor's. */
void
pyspdk_mark_polled_cpu(int cpu, bool polled)
{
	if (cpu < 0 || cpu >= PYSPDK_MAX_CPUS) {
		return;
	}
	if (polled) {
		__atomic_add_fetch(&g_pyspdk_polled_cpus[cpu], 1, __ATOMIC_RELAXED);
	} else if (__atomic_load_n(&g_pyspdk_polled_cpus[cpu], __ATOMIC_RELAXED) > 0) {
		__atomic_sub_fetch(&g_pyspdk_polled_cpus[cpu], 1, __ATOMIC_RELAXED);
	}
}

/* Whether the calling thread runs on a CPU a reactor polls, now. */
bool
pyspdk_on_polled_cpu(void)
{
	int cpu = sched_getcpu();

	return cpu >= 0 && cpu < PYSPDK_MAX_CPUS &&
	       __atomic_load_n(&g_pyspdk_polled_cpus[cpu], __ATOMIC_RELAXED) > 0;
}

/* Resolve a caller's spin: spin_ns < 0 asks `adapt`, and is 0 on a polled
 * CPU. Returns the time the spin may lend to other threads (0 for a fixed
 * spin). */
int64_t
pyspdk_adapt_spin(struct pyspdk_adapt *adapt, int64_t *spin_ns)
{
	if (*spin_ns >= 0) {
		return 0;
	}
	if (pyspdk_on_polled_cpu()) {
		*spin_ns = 0;
		return 0;
	}
	*spin_ns = pyspdk_adapt_budget(adapt);
	return PYSPDK_ADAPT_MAX_LEND_NS;
}

/* A request (or job) submitted at submitted_ns was completed at done_ns. The
 * percentile moves up by 99 steps when a latency lies above it and down by
 * one otherwise, so it settles where 1 in 100 lie above; a step is 1/64 of
 * it (at least 16 ns), so it follows a change within a few hundred I/Os. */
void
pyspdk_adapt_learn(struct pyspdk_adapt *adapt, int64_t submitted_ns, int64_t done_ns)
{
	int64_t seen = done_ns - submitted_ns;
	int64_t latency = __atomic_load_n(&adapt->latency_ns, __ATOMIC_RELAXED);
	int64_t p99 = __atomic_load_n(&adapt->p99_ns, __ATOMIC_RELAXED);
	int64_t step = p99 / 64 > 16 ? p99 / 64 : 16;

	latency += (seen - latency) / 8;
	p99 += seen > p99 ? 99 * step : -step;
	__atomic_store_n(&adapt->latency_ns, latency > 0 ? latency : 0, __ATOMIC_RELAXED);
	__atomic_store_n(&adapt->p99_ns, p99 > 0 ? p99 : 0, __ATOMIC_RELAXED);
}

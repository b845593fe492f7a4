/* Completion queues (declared in cq.h): the engine pushes finished requests,
 * signalled through an eventfd, and a Python reader takes them in batches:
 * the thread behind futures, an asyncio loop's reader, or one batch call. */
#include "cq.h"

#include "bdev_io.h"
#include "wait.h"

#include <poll.h>
#include <sys/eventfd.h>

struct pyspdk_cq {
	pthread_mutex_t lock;
	struct pyspdk_io *head, *tail;
	uint32_t count;
	bool signaled;
	int efd;
};

/* Publish a finished request. After this its owner may reuse or free it. */
void
pyspdk_cq_push(struct pyspdk_cq *cq, struct pyspdk_io *io)
{
	bool signal;
	uint64_t one = 1;

	io->next = NULL;
	pthread_mutex_lock(&cq->lock);
	if (cq->tail) {
		cq->tail->next = io;
	} else {
		cq->head = io;
	}
	cq->tail = io;
	__atomic_store_n(&cq->count, cq->count + 1, __ATOMIC_RELEASE);
	signal = !cq->signaled;
	cq->signaled = true;
	__atomic_store_n(&io->state, PYSPDK_IO_DONE, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&cq->lock);
	if (signal) {
		(void)!write(cq->efd, &one, sizeof(one));
	}
}

struct pyspdk_cq *
pyspdk_cq_create(void)
{
	struct pyspdk_cq *cq = calloc(1, sizeof(*cq));

	if (!cq) {
		return NULL;
	}
	cq->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (cq->efd < 0) {
		free(cq);
		return NULL;
	}
	pthread_mutex_init(&cq->lock, NULL);
	return cq;
}

void
pyspdk_cq_destroy(struct pyspdk_cq *cq)
{
	if (cq) {
		close(cq->efd);
		pthread_mutex_destroy(&cq->lock);
		free(cq);
	}
}

int
pyspdk_cq_fd(struct pyspdk_cq *cq)
{
	return cq->efd;
}

/* Spin at most spin_ns (< 0: up to -spin_ns unless on a polled CPU) until
 * something is on the queue; whether something is. With `share`, yield
 * between looks instead of pausing. */
static bool
pyspdk_cq_spin_while_empty(struct pyspdk_cq *cq, int64_t spin_ns, bool share)
{
	struct timespec spin_end;

	if (spin_ns < 0) {
		spin_ns = pyspdk_on_polled_cpu() ? 0 : -spin_ns;
	}
	if (spin_ns > 0 && __atomic_load_n(&cq->count, __ATOMIC_ACQUIRE) == 0) {
		pyspdk_deadline(&spin_end, spin_ns);
		while (__atomic_load_n(&cq->count, __ATOMIC_ACQUIRE) == 0 &&
		       pyspdk_ns_left(&spin_end) > 0) {
			if (share) {
				sched_yield();
			} else {
				pyspdk_cpu_relax();
			}
		}
	}
	return __atomic_load_n(&cq->count, __ATOMIC_ACQUIRE) != 0;
}

/* The spin of a reader about to sleep elsewhere (an asyncio loop in its
 * selector), which uses what it finds itself: it never yields. */
bool
pyspdk_cq_spin(struct pyspdk_cq *cq, int64_t spin_ns)
{
	return pyspdk_cq_spin_while_empty(cq, spin_ns, false);
}

/* Take up to max finished requests, writing their tags. Waits at most
 * timeout_ns (spinning spin_ns first; < 0: up to -spin_ns unless on a polled
 * CPU) for the first one; 0 does not wait. Returns how many it took (0 when
 * none arrived in time or a signal came) or -errno. */
int
pyspdk_cq_reap(struct pyspdk_cq *cq, uint64_t *tags, int max, int64_t spin_ns,
	       int64_t timeout_ns)
{
	struct pollfd pfd = { .fd = cq->efd, .events = POLLIN };
	uint64_t drained;
	int n = 0;

	/* A reader on one CPU (the thread behind futures, pinned with the
	 * callers) yields while it spins: the thread that will use what it
	 * delivers, a caller waiting on a future, may be waiting for that core. */
	if (timeout_ns > 0 &&
	    !pyspdk_cq_spin_while_empty(cq, spin_ns, pyspdk_thread_cpus() == 1)) {
		int ms = (int)((timeout_ns + 999999) / 1000000);

		if (poll(&pfd, 1, ms) < 0 && errno != EINTR) {
			return -errno;
		}
	}
	pthread_mutex_lock(&cq->lock);
	while (cq->head && n < max) {
		tags[n++] = cq->head->tag;
		cq->head = cq->head->next;
	}
	if (!cq->head) {
		cq->tail = NULL;
		cq->signaled = false;
		(void)!read(cq->efd, &drained, sizeof(drained));
	}
	__atomic_store_n(&cq->count, cq->count - n, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&cq->lock);
	return n;
}

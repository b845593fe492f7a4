/* The runtime's work poller (declared in runtime.h).
 *
 * Polling: the poller looks at a flag on every round. In interrupt mode the
 * reactor sleeps, so the flag's first setter also writes an eventfd the app
 * thread waits on, and the poller runs from that event instead. The eventfd
 * is made once and never closed: a Python thread that read its number may
 * still write it after the runtime stopped.
 */
#include "runtime.h"

#include <sys/eventfd.h>

static int pyspdk_work_pending;
static int pyspdk_work_efd = -1;  /* interrupt mode: written when work arrives */
static struct spdk_interrupt *pyspdk_work_intr;

void
pyspdk_work_notify(void)
{
	uint64_t one = 1;
	int efd;

	if (__atomic_exchange_n(&pyspdk_work_pending, 1, __ATOMIC_SEQ_CST) != 0) {
		return; /* already pending: the drain that comes takes this too */
	}
	efd = __atomic_load_n(&pyspdk_work_efd, __ATOMIC_ACQUIRE);
	if (efd >= 0 && __atomic_load_n(&pyspdk_work_intr, __ATOMIC_ACQUIRE) != NULL) {
		(void)!write(efd, &one, sizeof(one));
	}
}

static int
pyspdk_work_poll(void *ctx)
{
	(void)ctx;
	if (__atomic_load_n(&pyspdk_work_pending, __ATOMIC_ACQUIRE) == 0) {
		return SPDK_POLLER_IDLE;
	}
	__atomic_store_n(&pyspdk_work_pending, 0, __ATOMIC_SEQ_CST);
	pyspdk_drain_work();
	return SPDK_POLLER_BUSY;
}

/* Interrupt mode: the eventfd is readable. Empty it first, then drain: a
 * notify after the read writes it again. */
static int
pyspdk_work_wake(void *ctx)
{
	uint64_t drained;

	(void)!read(pyspdk_work_efd, &drained, sizeof(drained));
	return pyspdk_work_poll(ctx);
}

struct spdk_poller *
pyspdk_work_poller_register(void)
{
	struct spdk_poller *poller;
	uint64_t one = 1;

	if (spdk_interrupt_mode_is_enabled()) {
		if (pyspdk_work_efd < 0) {
			pyspdk_work_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
			if (pyspdk_work_efd < 0) {
				return NULL;
			}
		}
		pyspdk_work_intr = spdk_interrupt_register(pyspdk_work_efd, pyspdk_work_wake, NULL,
							   "pyspdk_work");
		if (pyspdk_work_intr == NULL) {
			return NULL;
		}
	}
	poller = spdk_poller_register_named(pyspdk_work_poll, NULL, 0, "pyspdk_work");
	if (poller == NULL) {
		spdk_interrupt_unregister(&pyspdk_work_intr);
		return NULL;
	}
	if (pyspdk_work_intr != NULL) {
		/* The event runs it, not the reactor's poll loop. */
		spdk_poller_register_interrupt(poller, NULL, NULL);
		if (__atomic_load_n(&pyspdk_work_pending, __ATOMIC_SEQ_CST)) {
			(void)!write(pyspdk_work_efd, &one, sizeof(one)); /* queued before */
		}
	}
	return poller;
}

void
pyspdk_work_poller_unregister(struct spdk_poller **poller)
{
	spdk_poller_unregister(poller);
	if (pyspdk_work_intr != NULL) {
		spdk_interrupt_unregister(&pyspdk_work_intr);
	}
}

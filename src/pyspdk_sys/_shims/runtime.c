/* The runtime's work poller (declared in runtime.h). */
#include "runtime.h"

static int pyspdk_work_pending;

void
pyspdk_work_notify(void)
{
	__atomic_store_n(&pyspdk_work_pending, 1, __ATOMIC_RELEASE);
}

static int
pyspdk_work_poll(void *ctx)
{
	(void)ctx;
	if (__atomic_load_n(&pyspdk_work_pending, __ATOMIC_ACQUIRE) == 0) {
		return SPDK_POLLER_IDLE;
	}
	__atomic_store_n(&pyspdk_work_pending, 0, __ATOMIC_RELEASE);
	pyspdk_drain_work();
	return SPDK_POLLER_BUSY;
}

struct spdk_poller *
pyspdk_work_poller_register(void)
{
	return spdk_poller_register(pyspdk_work_poll, NULL, 0);
}

void
pyspdk_work_poller_unregister(struct spdk_poller **poller)
{
	spdk_poller_unregister(poller);
}

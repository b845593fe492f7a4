/* LocalRpc's accept poller (declared in rpc_server.h; pyspdk_sys/rpc.py).
 *
 * spdk_rpc_server_accept() does one round of the JSON-RPC server's work:
 * accept a waiting connection, send queued responses, read and dispatch
 * requests. Run from a poller on the app thread, like SPDK's own RPC server
 * (lib/init/rpc.c), but every millisecond instead of every 4 ms.
 *
 * In interrupt mode a timer every millisecond would wake the idle reactor a
 * thousand times a second for a server that is only ever called by this
 * process. There, the rounds run from a timerfd armed only while a call is
 * in flight (pyspdk_rpc_server_busy, around each call). One server at a
 * time (a LocalRpc per runtime, a runtime per process): the state is static,
 * and the timerfd, made once, is never closed, so a late call to
 * pyspdk_rpc_server_busy never touches a stale descriptor.
 */
#include "rpc_server.h"

#include <sys/timerfd.h>

#define PYSPDK_RPC_POLL_PERIOD_US 1000

static int g_pyspdk_rpc_calls;           /* calls in flight */
static int g_pyspdk_rpc_timerfd = -1;    /* interrupt mode */
static struct spdk_interrupt *g_pyspdk_rpc_intr;

static int
pyspdk_rpc_server_poll(void *ctx)
{
	/* A round sends what is queued before it reads new requests, so the
	 * answer of a method that answers at once would wait for the next
	 * period; a second round sends it now. */
	spdk_rpc_server_accept(ctx);
	spdk_rpc_server_accept(ctx);
	/* As lib/init/rpc.c does: one poll cannot tell whether it did work. */
	return SPDK_POLLER_BUSY;
}

/* Arm (every PYSPDK_RPC_POLL_PERIOD_US, from now) or disarm the timer. */
static void
pyspdk_rpc_timer(bool armed)
{
	struct itimerspec when = { 0 };

	if (armed) {
		when.it_value.tv_nsec = 1000; /* at once: the call is waiting */
		when.it_interval.tv_nsec = PYSPDK_RPC_POLL_PERIOD_US * 1000;
	}
	timerfd_settime(g_pyspdk_rpc_timerfd, 0, &when, NULL);
}

/* Interrupt mode: the timer fired. Serve, then stop the timer once no call
 * is in flight; a call that begins meanwhile re-arms it, and the second look
 * sees one that began before the disarm. */
static int
pyspdk_rpc_server_wake(void *ctx)
{
	uint64_t expirations;
	int rc;

	(void)!read(g_pyspdk_rpc_timerfd, &expirations, sizeof(expirations));
	rc = pyspdk_rpc_server_poll(ctx);
	if (__atomic_load_n(&g_pyspdk_rpc_calls, __ATOMIC_SEQ_CST) == 0) {
		pyspdk_rpc_timer(false);
		if (__atomic_load_n(&g_pyspdk_rpc_calls, __ATOMIC_SEQ_CST) != 0) {
			pyspdk_rpc_timer(true);
		}
	}
	return rc;
}

struct spdk_poller *
pyspdk_rpc_server_poller_register(struct spdk_rpc_server *server)
{
	struct spdk_poller *poller;

	if (server == NULL) {
		return NULL;
	}
	if (spdk_interrupt_mode_is_enabled()) {
		if (g_pyspdk_rpc_timerfd < 0) {
			g_pyspdk_rpc_timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
			if (g_pyspdk_rpc_timerfd < 0) {
				return NULL;
			}
		}
		g_pyspdk_rpc_intr = spdk_interrupt_register(g_pyspdk_rpc_timerfd,
							    pyspdk_rpc_server_wake, server,
							    "pyspdk_local_rpc");
		if (g_pyspdk_rpc_intr == NULL) {
			return NULL;
		}
	}
	poller = spdk_poller_register_named(pyspdk_rpc_server_poll, server,
					    PYSPDK_RPC_POLL_PERIOD_US, "pyspdk_local_rpc");
	if (poller == NULL) {
		spdk_interrupt_unregister(&g_pyspdk_rpc_intr);
		return NULL;
	}
	if (g_pyspdk_rpc_intr != NULL) {
		/* The timer above runs the rounds, not the poller's own. */
		spdk_poller_register_interrupt(poller, NULL, NULL);
		if (__atomic_load_n(&g_pyspdk_rpc_calls, __ATOMIC_SEQ_CST) != 0) {
			pyspdk_rpc_timer(true);
		}
	}
	return poller;
}

void
pyspdk_rpc_server_poller_unregister(struct spdk_poller **poller)
{
	if (poller != NULL) {
		spdk_poller_unregister(poller);
	}
	if (g_pyspdk_rpc_intr != NULL) {
		pyspdk_rpc_timer(false);
		spdk_interrupt_unregister(&g_pyspdk_rpc_intr);
	}
}

void
pyspdk_rpc_server_busy(int delta)
{
	if (__atomic_add_fetch(&g_pyspdk_rpc_calls, delta, __ATOMIC_SEQ_CST) == delta && delta > 0 &&
	    g_pyspdk_rpc_timerfd >= 0) {
		pyspdk_rpc_timer(true);
	}
}

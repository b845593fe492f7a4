/* Interrupt mode beyond this project's pollers (declared in intr.h).
 *
 * SPDK runs a poller that registered no event of its own as a "busy" one in
 * interrupt mode: an eventfd that is always readable, so the reactor never
 * sleeps. The iSCSI target's poll-group poller (lib/iscsi/iscsi_subsystem.c,
 * iscsi_poll_group_poll, one per reactor core) is such a poller, and the
 * iSCSI target is in every fat library. It only polls the sockets of its
 * connections, and connections only come through a portal. So: marking it as
 * interrupt-capable with no event (spdk_poller_register_interrupt with no
 * callback) sets it aside in interrupt mode, and a reactor in polling mode
 * still runs it. A watcher on the app thread looks for a portal's acceptor
 * poller (iscsi_portal_group_poll, on the thread that opened it: the app
 * thread, from RPCs and the JSON config) and switches the reactors to
 * polling mode while one exists. The lookups are by poller and thread name,
 * through spdk_internal/thread.h's (and event.h's) functions, exported by the library but
 * not installed with its headers: declared here.
 */
#include "intr.h"

#include "spdk/env.h"
#include "spdk/event.h"
#include "spdk/thread.h"

struct spdk_poller *spdk_thread_get_first_active_poller(struct spdk_thread *thread);
struct spdk_poller *spdk_thread_get_next_active_poller(struct spdk_poller *prev);
struct spdk_poller *spdk_thread_get_first_timed_poller(struct spdk_thread *thread);
struct spdk_poller *spdk_thread_get_next_timed_poller(struct spdk_poller *prev);
const char *spdk_poller_get_name(struct spdk_poller *poller);
/* spdk_internal/event.h */
typedef void (*spdk_reactor_set_interrupt_mode_cb)(void *cb_arg1, void *cb_arg2);
int spdk_reactor_set_interrupt_mode(uint32_t lcore, bool new_in_interrupt,
				    spdk_reactor_set_interrupt_mode_cb cb_fn, void *cb_arg);

#define PYSPDK_ISCSI_THREAD "iscsi_poll_group_"
#define PYSPDK_ISCSI_POLLER "iscsi_poll_group_poll"
#define PYSPDK_ISCSI_ACCEPTOR "iscsi_portal_group_poll"

static int g_pyspdk_intr_quieted;        /* iSCSI pollers set aside */
static int g_pyspdk_intr_polling;        /* reactors in polling mode for iSCSI */
static bool g_pyspdk_intr_switching;     /* a switch of every reactor is under way */
static uint32_t g_pyspdk_intr_pending;   /* reactors whose switch has not finished */
static struct spdk_poller *g_pyspdk_intr_watcher;

/* On each SPDK thread: set the iSCSI poll group's poller aside. */
static void
pyspdk_intr_quiet_thread(void *ctx)
{
	struct spdk_thread *thread = spdk_get_thread();
	struct spdk_poller *poller;

	(void)ctx;
	if (strncmp(spdk_thread_get_name(thread), PYSPDK_ISCSI_THREAD,
		    strlen(PYSPDK_ISCSI_THREAD)) != 0) {
		return;
	}
	for (poller = spdk_thread_get_first_active_poller(thread); poller;
	     poller = spdk_thread_get_next_active_poller(poller)) {
		if (strcmp(spdk_poller_get_name(poller), PYSPDK_ISCSI_POLLER) == 0) {
			spdk_poller_register_interrupt(poller, NULL, NULL);
			__atomic_add_fetch(&g_pyspdk_intr_quieted, 1, __ATOMIC_RELAXED);
		}
	}
}

static void
pyspdk_intr_quiet_done(void *ctx)
{
	(void)ctx;
}

static void
pyspdk_intr_switched(void *arg1, void *arg2)
{
	(void)arg1;
	(void)arg2;
	if (--g_pyspdk_intr_pending == 0) {
		g_pyspdk_intr_switching = false;
	}
}

/* App thread (the scheduling reactor's): every reactor to polling mode, or
 * back to interrupt mode. */
static void
pyspdk_intr_switch(bool polling)
{
	uint32_t core, n = 0;

	SPDK_ENV_FOREACH_CORE(core) {
		n++;
	}
	g_pyspdk_intr_switching = true;
	g_pyspdk_intr_pending = n;
	SPDK_ENV_FOREACH_CORE(core) {
		if (spdk_reactor_set_interrupt_mode(core, !polling, pyspdk_intr_switched, NULL) != 0) {
			pyspdk_intr_switched(NULL, NULL); /* this one stays; the next look retries */
		}
	}
	__atomic_store_n(&g_pyspdk_intr_polling, polling ? 1 : 0, __ATOMIC_RELAXED);
}

static int
pyspdk_intr_watch(void *ctx)
{
	struct spdk_poller *poller;
	bool portal = false;

	(void)ctx;
	for (poller = spdk_thread_get_first_timed_poller(spdk_get_thread()); poller && !portal;
	     poller = spdk_thread_get_next_timed_poller(poller)) {
		portal = strcmp(spdk_poller_get_name(poller), PYSPDK_ISCSI_ACCEPTOR) == 0;
	}
	if (!g_pyspdk_intr_switching && portal != (g_pyspdk_intr_polling != 0)) {
		pyspdk_intr_switch(portal);
		return SPDK_POLLER_BUSY;
	}
	return SPDK_POLLER_IDLE;
}

int
pyspdk_intr_quiet(void)
{
	if (!spdk_interrupt_mode_is_enabled()) {
		return -ENOTSUP;
	}
	if (g_pyspdk_intr_watcher == NULL) {
		g_pyspdk_intr_watcher = spdk_poller_register_named(pyspdk_intr_watch, NULL,
								   PYSPDK_INTR_WATCH_US,
								   "pyspdk_iscsi_watch");
		if (g_pyspdk_intr_watcher == NULL) {
			return -ENOMEM;
		}
	}
	spdk_for_each_thread(pyspdk_intr_quiet_thread, NULL, pyspdk_intr_quiet_done);
	return 0;
}

void
pyspdk_intr_stop(void)
{
	spdk_poller_unregister(&g_pyspdk_intr_watcher);
}

int
pyspdk_intr_state(int what)
{
	switch (what) {
	case 0:
		return __atomic_load_n(&g_pyspdk_intr_quieted, __ATOMIC_RELAXED);
	case 1:
		return __atomic_load_n(&g_pyspdk_intr_polling, __ATOMIC_RELAXED);
	default:
		return -EINVAL;
	}
}

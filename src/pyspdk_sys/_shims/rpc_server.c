/* LocalRpc's accept poller (declared in rpc_server.h; pyspdk_sys/rpc.py).
 *
 * spdk_rpc_server_accept() does one round of the JSON-RPC server's work:
 * accept a waiting connection, send queued responses, read and dispatch
 * requests. Run from a poller on the app thread, like SPDK's own RPC server
 * (lib/init/rpc.c), but every millisecond instead of every 4 ms.
 */
#include "rpc_server.h"

#define PYSPDK_RPC_POLL_PERIOD_US 1000

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

struct spdk_poller *
pyspdk_rpc_server_poller_register(struct spdk_rpc_server *server)
{
	if (server == NULL) {
		return NULL;
	}
	return spdk_poller_register_named(pyspdk_rpc_server_poll, server,
					  PYSPDK_RPC_POLL_PERIOD_US, "pyspdk_local_rpc");
}

void
pyspdk_rpc_server_poller_unregister(struct spdk_poller **poller)
{
	if (poller != NULL) {
		spdk_poller_unregister(poller);
	}
}

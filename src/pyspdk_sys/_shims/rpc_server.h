/* _shims/rpc_server.h: LocalRpc's private RPC server (rpc_server.c,
 * pyspdk_sys/rpc.py): a poller on the app thread that serves a server from
 * spdk_rpc_server_listen every millisecond (in interrupt mode, only while a
 * call is in flight). */
#ifndef PYSPDK_SHIMS_RPC_SERVER_H
#define PYSPDK_SHIMS_RPC_SERVER_H

#include "spdk/stdinc.h"
#include "spdk/rpc.h"
#include "spdk/thread.h"

/* cffi begin */
/* Register returns NULL for a NULL server or on failure; unregister sets
 * *poller to NULL. App thread only. */
struct spdk_poller *pyspdk_rpc_server_poller_register(struct spdk_rpc_server *server);
void pyspdk_rpc_server_poller_unregister(struct spdk_poller **poller);
/* Any thread: +1 before a call is sent, -1 once its answer is read (or the
 * call is given up). In interrupt mode the server runs only meanwhile. */
void pyspdk_rpc_server_busy(int delta);
/* cffi end */

#endif /* PYSPDK_SHIMS_RPC_SERVER_H */

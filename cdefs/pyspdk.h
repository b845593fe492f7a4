/* pyspdk-sys's own symbols: what build.sh compiles into the fat library, and
 * the C shims compiled into this module (src/pyspdk_sys/_shims/). */

/* Fused into libspdk_fat.so by build.sh: SPDK has no run-time version call. */
const char *pyspdk_fat_spdk_version(void);
int pyspdk_fat_spdk_version_num(void);
const char *pyspdk_fat_build_info(void);

/* DPDK's run-time version, from the fused DPDK archives. */
const char *rte_version(void);

/* SPDK_VERSION of the headers this module was compiled against. */
static const int PYSPDK_HEADERS_VERSION_NUM;

/* Limits of SPDK's JSON-RPC server for the release compiled against (SPDK
 * keeps them in lib/jsonrpc/jsonrpc_internal.h, which is not installed):
 * SPDK_JSONRPC_RECV_BUF_SIZE, the longest request read (32 KiB in v26.01,
 * 256 KiB in v26.05), and SPDK_JSONRPC_MAX_VALUES, the JSON values one request
 * may hold (1024, then 8192). */
static const long PYSPDK_JSONRPC_RECV_BUF_SIZE;
static const long PYSPDK_JSONRPC_MAX_VALUES;

/* What the module was built against: `spdk_fat <version> <libdir>`. */
static const char *const PYSPDK_BUILT_AGAINST;

/* Path of the loaded fat library, or NULL. */
const char *pyspdk_fat_library_path(void);

/* The runtime's work queue (_shims/runtime.c): Python threads queue work in
 * Python and bump a counter; one poller on the app thread sees the counter
 * and drains the whole queue in one call. Python threads never call
 * spdk_thread_send_msg, which aborts when the thread exited or the message
 * pool is empty. */
void pyspdk_work_notify(void);
struct spdk_poller *pyspdk_work_poller_register(void);
void pyspdk_work_poller_unregister(struct spdk_poller **poller);

/* LocalRpc's private RPC server (_shims/rpc_server.c, pyspdk_sys/rpc.py): a
 * poller on the app thread that serves a server from spdk_rpc_server_listen
 * every millisecond. Register returns NULL for a NULL server or on failure;
 * unregister sets *poller to NULL. App thread only. */
struct spdk_poller *pyspdk_rpc_server_poller_register(struct spdk_rpc_server *server);
void pyspdk_rpc_server_poller_unregister(struct spdk_poller **poller);

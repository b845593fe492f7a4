/* pyspdk-sys's own constants, set by _cffi_build.py in the module's source.
 * The C shims (src/pyspdk_sys/_shims/) declare theirs in their own headers. */

/* Limits of SPDK's JSON-RPC server for the release compiled against (SPDK
 * keeps them in lib/jsonrpc/jsonrpc_internal.h, which is not installed):
 * SPDK_JSONRPC_RECV_BUF_SIZE, the longest request read (32 KiB in v26.01,
 * 256 KiB in v26.05), and SPDK_JSONRPC_MAX_VALUES, the JSON values one request
 * may hold (1024, then 8192). */
static const long PYSPDK_JSONRPC_RECV_BUF_SIZE;
static const long PYSPDK_JSONRPC_MAX_VALUES;

/* What the module was built against: `spdk_fat <version> <libdir>`. */
static const char *const PYSPDK_BUILT_AGAINST;

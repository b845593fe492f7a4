/* spdk/rpc.h: RPC method registry, RPC state (startup/runtime) and the RPC server listener. */

#define SPDK_RPC_STARTUP ...
#define SPDK_RPC_RUNTIME ...

struct spdk_rpc_server;

typedef void (*spdk_rpc_method_handler)(struct spdk_jsonrpc_request *request,
					const struct spdk_json_val *params);

bool spdk_rpc_verify_methods(void);

struct spdk_rpc_server *spdk_rpc_server_listen(const char *listen_addr);
void spdk_rpc_server_accept(struct spdk_rpc_server *server);
void spdk_rpc_server_close(struct spdk_rpc_server *server);

void spdk_rpc_register_method(const char *method, spdk_rpc_method_handler func,
			      uint32_t state_mask);
void spdk_rpc_register_alias_deprecated(const char *method, const char *alias);
int spdk_rpc_is_method_allowed(const char *method, uint32_t state_mask);
int spdk_rpc_get_method_state_mask(const char *method, uint32_t *state_mask);

void spdk_rpc_set_state(uint32_t state_mask);
uint32_t spdk_rpc_get_state(void);
void spdk_rpc_set_allowlist(const char **rpc_allowlist);

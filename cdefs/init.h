/* spdk/init.h: subsystem initialization/teardown, JSON config loading and the RPC server lifecycle. */

static const char *const SPDK_DEFAULT_RPC_ADDR;

struct spdk_rpc_opts {
	size_t size;
	FILE *log_file;
	enum spdk_log_level log_level;
	...;
};

int spdk_rpc_initialize(const char *listen_addr, const struct spdk_rpc_opts *opts);
void spdk_rpc_finish(void);
void spdk_rpc_server_finish(const char *listen_addr);
void spdk_rpc_server_pause(const char *listen_addr);
void spdk_rpc_server_resume(const char *listen_addr);

typedef void (*spdk_subsystem_init_fn)(int rc, void *ctx);
typedef void (*spdk_subsystem_fini_fn)(void *ctx);

void spdk_subsystem_init(spdk_subsystem_init_fn cb_fn, void *cb_arg);
void spdk_subsystem_load_config(void *json, ssize_t json_size, spdk_subsystem_init_fn cb_fn,
				void *cb_arg, bool stop_on_error);
void spdk_subsystem_fini(spdk_subsystem_fini_fn cb_fn, void *cb_arg);
bool spdk_subsystem_exists(const char *name);

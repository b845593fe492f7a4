/* spdk/event.h: the SPDK application framework (spdk_app_start/stop, reactors, events). */

typedef void (*spdk_event_fn)(void *arg1, void *arg2);
typedef void (*spdk_app_shutdown_cb)(void);

struct spdk_event;

/* __attribute__((packed)) in C; layout is taken from the compiler.
 * Initialize with spdk_app_opts_init(opts, sizeof(struct spdk_app_opts)). */
struct spdk_app_opts {
	const char *name;
	const char *json_config_file;
	bool json_config_ignore_errors;
	const char *rpc_addr;
	const char *reactor_mask;
	const char *tpoint_group_mask;
	int shm_id;
	spdk_app_shutdown_cb shutdown_cb;
	bool enable_coredump;
	int mem_channel;
	int main_core;
	int mem_size;
	bool no_pci;
	bool hugepage_single_segments;
	bool unlink_hugepage;
	bool no_huge;
	const char *hugedir;
	enum spdk_log_level print_level;
	size_t num_pci_addr;
	struct spdk_pci_addr *pci_blocked;
	struct spdk_pci_addr *pci_allowed;
	const char *iova_mode;
	bool delay_subsystem_init;
	uint64_t num_entries;
	void *env_context;
	spdk_log_cb *log;
	uint64_t base_virtaddr;
	size_t opts_size;
	bool disable_signal_handlers;
	bool interrupt_mode;
	bool enforce_numa;
	uint32_t num_trace_threads;
	size_t msg_mempool_size;
	const char **rpc_allowlist;
	const char *vf_token;
	const char *lcore_map;
	enum spdk_log_level rpc_log_level;
	FILE *rpc_log_file;
	void *json_data;
	size_t json_data_size;
	bool disable_cpumask_locks;
	...;
};

void spdk_app_opts_init(struct spdk_app_opts *opts, size_t opts_size);
int spdk_app_start(struct spdk_app_opts *opts_user, spdk_msg_fn start_fn, void *ctx);
void spdk_app_fini(void);
void spdk_app_start_shutdown(void);
void spdk_app_stop(int rc);
int spdk_app_get_shm_id(void);
int spdk_app_parse_core_mask(const char *mask, struct spdk_cpuset *cpumask);
const struct spdk_cpuset *spdk_app_get_core_mask(void);

struct spdk_event *spdk_event_allocate(uint32_t lcore, spdk_event_fn fn, void *arg1, void *arg2);
void spdk_event_call(struct spdk_event *event);

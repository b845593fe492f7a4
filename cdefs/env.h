/* spdk/env.h (+ spdk/env_dpdk.h): environment (DPDK) setup, DMA-safe memory, ticks, cores, PCI drivers. */

#define SPDK_ENV_NUMA_ID_ANY ...
#define SPDK_ENV_SOCKET_ID_ANY ...
#define SPDK_ENV_LCORE_ID_ANY ...

#define SPDK_MALLOC_DMA ...
#define SPDK_MALLOC_SHARE ...

#define SPDK_VTOPHYS_ERROR ...

struct spdk_pci_addr {
	uint32_t domain;
	uint8_t bus;
	uint8_t dev;
	uint8_t func;
	...;
};

/* Set opts_size = sizeof(struct spdk_env_opts) BEFORE spdk_env_opts_init(): it is preserved, not filled. */
struct spdk_env_opts {
	const char *name;
	const char *core_mask;
	const char *lcore_map;
	int shm_id;
	int mem_channel;
	int main_core;
	int mem_size;
	bool no_pci;
	bool hugepage_single_segments;
	bool unlink_hugepage;
	bool no_huge;
	size_t num_pci_addr;
	const char *hugedir;
	struct spdk_pci_addr *pci_blocked;
	struct spdk_pci_addr *pci_allowed;
	const char *iova_mode;
	uint64_t base_virtaddr;
	void *env_context;
	const char *vf_token;
	size_t opts_size;
	bool enforce_numa;
	...;
};

struct spdk_pci_driver;

void spdk_env_opts_init(struct spdk_env_opts *opts);
int spdk_env_init(const struct spdk_env_opts *opts);
void spdk_env_fini(void);

/* spdk/env_dpdk.h: only when DPDK's EAL was initialized outside SPDK */
int spdk_env_dpdk_post_init(bool legacy_mem);
void spdk_env_dpdk_post_fini(void);
bool spdk_env_dpdk_external_init(void);

void *spdk_malloc(size_t size, size_t align, uint64_t *unused, int numa_id, uint32_t flags);
void *spdk_zmalloc(size_t size, size_t align, uint64_t *unused, int numa_id, uint32_t flags);
void *spdk_realloc(void *buf, size_t size, size_t align);
void spdk_free(void *buf);

void *spdk_dma_malloc(size_t size, size_t align, uint64_t *unused);
void *spdk_dma_zmalloc(size_t size, size_t align, uint64_t *unused);
void spdk_dma_free(void *buf);

uint64_t spdk_vtophys(const void *buf, uint64_t *size);

uint32_t spdk_env_get_core_count(void);
uint32_t spdk_env_get_current_core(void);
uint32_t spdk_env_get_main_core(void);
uint32_t spdk_env_get_first_core(void);
uint32_t spdk_env_get_last_core(void);
uint32_t spdk_env_get_next_core(uint32_t prev_core);
int32_t spdk_env_get_numa_id(uint32_t core);

bool spdk_process_is_primary(void);
uint64_t spdk_get_ticks(void);
uint64_t spdk_get_ticks_hz(void);
void spdk_delay_us(unsigned int us);

struct spdk_pci_driver *spdk_pci_get_driver(const char *name);
int spdk_pci_addr_parse(struct spdk_pci_addr *addr, const char *bdf);
int spdk_pci_addr_fmt(char *bdf, size_t sz, const struct spdk_pci_addr *addr);
int spdk_pci_addr_compare(const struct spdk_pci_addr *a1, const struct spdk_pci_addr *a2);

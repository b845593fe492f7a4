/* spdk/trace.h: tracepoint group and tracepoint mask control. */

#define SPDK_DEFAULT_NUM_TRACE_ENTRIES ...

uint64_t spdk_trace_create_tpoint_group_mask(const char *group_name);
int spdk_trace_enable_tpoint_group(const char *group_name);
int spdk_trace_disable_tpoint_group(const char *group_name);
uint64_t spdk_trace_get_tpoint_group_mask(void);
void spdk_trace_set_tpoint_group_mask(uint64_t tpoint_group_mask);
void spdk_trace_clear_tpoint_group_mask(uint64_t tpoint_group_mask);
uint64_t spdk_trace_get_tpoint_mask(uint32_t group_id);
void spdk_trace_set_tpoints(uint32_t group_id, uint64_t tpoint_mask);
void spdk_trace_clear_tpoints(uint32_t group_id, uint64_t tpoint_mask);

/* Registered tracepoint groups (SPDK_TRACE_REGISTER_FN), walkable in order. */
struct spdk_trace_register_fn {
	const char *name;
	uint8_t tgroup_id;
	...;
};

struct spdk_trace_register_fn *spdk_trace_get_first_register_fn(void);
struct spdk_trace_register_fn *spdk_trace_get_next_register_fn(struct spdk_trace_register_fn *register_fn);

/* spdk/thread.h (+ spdk/cpuset.h): SPDK lightweight threads, messages, pollers, I/O channels. */

/* spdk/cpuset.h */
struct spdk_cpuset {
	...;
};

struct spdk_cpuset *spdk_cpuset_alloc(void);
void spdk_cpuset_free(struct spdk_cpuset *set);
void spdk_cpuset_zero(struct spdk_cpuset *set);
void spdk_cpuset_set_cpu(struct spdk_cpuset *set, uint32_t cpu, bool state);
bool spdk_cpuset_get_cpu(const struct spdk_cpuset *set, uint32_t cpu);
uint32_t spdk_cpuset_count(const struct spdk_cpuset *set);
const char *spdk_cpuset_fmt(struct spdk_cpuset *set);
int spdk_cpuset_parse(struct spdk_cpuset *set, const char *mask);

/* spdk/thread.h */
enum spdk_thread_poller_rc {
	SPDK_POLLER_IDLE = 0,
	SPDK_POLLER_BUSY = 1,
};

typedef int (*spdk_new_thread_fn)(struct spdk_thread *thread);
typedef void (*spdk_msg_fn)(void *ctx);
typedef int (*spdk_poller_fn)(void *ctx);

#define SPDK_DEFAULT_MSG_MEMPOOL_SIZE ...

int spdk_thread_lib_init(spdk_new_thread_fn new_thread_fn, size_t ctx_sz);
void spdk_thread_lib_fini(void);

struct spdk_thread *spdk_thread_create(const char *name, const struct spdk_cpuset *cpumask);
struct spdk_thread *spdk_thread_get_app_thread(void);
bool spdk_thread_is_app_thread(struct spdk_thread *thread);
void spdk_set_thread(struct spdk_thread *thread);
int spdk_thread_exit(struct spdk_thread *thread);
bool spdk_thread_is_exited(struct spdk_thread *thread);
bool spdk_thread_is_running(struct spdk_thread *thread);
void spdk_thread_destroy(struct spdk_thread *thread);

int spdk_thread_poll(struct spdk_thread *thread, uint32_t max_msgs, uint64_t now);
uint64_t spdk_thread_next_poller_expiration(struct spdk_thread *thread);
int spdk_thread_has_active_pollers(struct spdk_thread *thread);
bool spdk_thread_has_pollers(struct spdk_thread *thread);
bool spdk_thread_is_idle(struct spdk_thread *thread);
uint32_t spdk_thread_get_count(void);
struct spdk_thread *spdk_get_thread(void);
const char *spdk_thread_get_name(const struct spdk_thread *thread);
uint64_t spdk_thread_get_id(const struct spdk_thread *thread);
struct spdk_thread *spdk_thread_get_by_id(uint64_t id);

int spdk_thread_send_msg(const struct spdk_thread *thread, spdk_msg_fn fn, void *ctx);
int spdk_thread_send_critical_msg(struct spdk_thread *thread, spdk_msg_fn fn);
void spdk_for_each_thread(spdk_msg_fn fn, void *ctx, spdk_msg_fn cpl);

struct spdk_poller *spdk_poller_register(spdk_poller_fn fn, void *arg,
		uint64_t period_microseconds);
struct spdk_poller *spdk_poller_register_named(spdk_poller_fn fn, void *arg,
		uint64_t period_microseconds, const char *name);
void spdk_poller_unregister(struct spdk_poller **ppoller);
void spdk_poller_pause(struct spdk_poller *poller);
void spdk_poller_resume(struct spdk_poller *poller);

struct spdk_io_channel *spdk_get_io_channel(void *io_device);
void spdk_put_io_channel(struct spdk_io_channel *ch);
struct spdk_thread *spdk_io_channel_get_thread(struct spdk_io_channel *ch);

int spdk_thread_get_interrupt_fd(struct spdk_thread *thread);
int spdk_interrupt_mode_enable(void);
bool spdk_interrupt_mode_is_enabled(void);

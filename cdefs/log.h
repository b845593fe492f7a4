/* spdk/log.h: log levels, print level, debug log flags. */

/* Function type `void (int, const char *, const int, const char *, const char *, va_list)`;
 * va_list cannot be expressed in a cdef, so it stays opaque (pass NULL for the default logger). */
typedef ... spdk_log_cb;
typedef void spdk_log_open_cb(void *ctx);
typedef void spdk_log_close_cb(void *ctx);

struct spdk_log_opts {
	size_t size;
	spdk_log_cb *log;
	spdk_log_open_cb *open;
	spdk_log_close_cb *close;
	void *user_ctx;
	...;
};

void spdk_log_open(spdk_log_cb *log);
void spdk_log_open_ext(struct spdk_log_opts *opts);
void spdk_log_close(void);
void spdk_log_enable_timestamps(bool value);

enum spdk_log_level {
	SPDK_LOG_DISABLED = -1,
	SPDK_LOG_ERROR = 0,
	SPDK_LOG_WARN = 1,
	SPDK_LOG_NOTICE = 2,
	SPDK_LOG_INFO = 3,
	SPDK_LOG_DEBUG = 4,
};

void spdk_log_set_level(enum spdk_log_level level);
enum spdk_log_level spdk_log_get_level(void);
int spdk_log_to_syslog_level(enum spdk_log_level level);
void spdk_log_set_print_level(enum spdk_log_level level);
enum spdk_log_level spdk_log_get_print_level(void);

struct spdk_log_flag {
	const char *name;
	bool enabled;
	...;
};

struct spdk_log_flag *spdk_log_get_first_flag(void);
struct spdk_log_flag *spdk_log_get_next_flag(struct spdk_log_flag *flag);
bool spdk_log_get_flag(const char *flag);
int spdk_log_set_flag(const char *flag);
int spdk_log_clear_flag(const char *flag);

/* SPDK's and DPDK's log into a ring Python drains (declared in log.h).
 *
 * The ring is a bounded multi-producer queue with one reader: a writer
 * reserves a slot by advancing `tail` (compare-and-swap), fills it, and
 * publishes it by setting the slot's turn; the reader (Python, one at a time)
 * takes published slots in order. A writer never waits: when the slot it
 * would take is still unread, the message is dropped and counted. The first
 * record after the reader last looked writes the eventfd, so a burst costs
 * one write() however long it is.
 *
 * SPDK calls the function given to spdk_log_open for every message, whatever
 * its level (lib/log/log.c prints nothing itself then): messages above the
 * print level are left out here, as SPDK would. DPDK writes each message to
 * the stream given to rte_openlog_stream; a stream made with fopencookie
 * hands that text here, and rte_log_cur_msg_loglevel() says its level.
 */
#include "log.h"

#include "spdk/log.h"
#include "spdk/thread.h"

#include <sys/eventfd.h>

/* DPDK's public log API (rte_log.h; DPDK's headers are not installed with
 * the fat library). */
int rte_openlog_stream(FILE *f);
int rte_log_cur_msg_loglevel(void);
int rte_log(uint32_t level, uint32_t logtype, const char *format, ...)
__attribute__((format(printf, 3, 4)));

#define RTE_LOG_INFO_LEVEL 7
#define RTE_LOGTYPE_USER1_TYPE 24

struct pyspdk_log_slot {
	uint64_t turn;	/* == position + 1 once published; position + slots once read */
	struct pyspdk_log_record record;
};

static struct pyspdk_log_slot g_slots[PYSPDK_LOG_RING_SLOTS];
static uint64_t g_tail;		/* next position a writer reserves */
static uint64_t g_head;		/* next position the reader takes */
static uint64_t g_dropped;
static bool g_signaled;
static bool g_stderr = true;
static int g_efd = -1;
static FILE *g_dpdk_stream;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_init_rc;

static const char *const g_spdk_level_names[] = {
	"ERROR", "WARNING", "NOTICE", "INFO", "DEBUG",
};

static void
pyspdk_log_copy(char *to, size_t size, const char *from)
{
	if (from == NULL) {
		to[0] = '\0';
		return;
	}
	snprintf(to, size, "%s", from);
}

/* Keep one message. Never waits: a full ring drops it. */
static void
pyspdk_log_push(int source, int level, const char *file, int line, const char *func,
		const char *msg, size_t len)
{
	struct pyspdk_log_slot *slot;
	struct pyspdk_log_record *record;
	struct spdk_thread *thread;
	struct timespec now;
	uint64_t pos, turn;
	uint64_t one = 1;

	pos = __atomic_load_n(&g_tail, __ATOMIC_RELAXED);
	for (;;) {
		slot = &g_slots[pos % PYSPDK_LOG_RING_SLOTS];
		turn = __atomic_load_n(&slot->turn, __ATOMIC_ACQUIRE);
		if (turn == pos) {
			if (__atomic_compare_exchange_n(&g_tail, &pos, pos + 1, false,
							__ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
				break;
			}
			/* pos now holds the tail another writer moved on to */
		} else if (turn < pos) {
			/* the reader has not taken this slot's previous record: full */
			__atomic_fetch_add(&g_dropped, 1, __ATOMIC_RELAXED);
			return;
		} else {
			pos = __atomic_load_n(&g_tail, __ATOMIC_RELAXED);
		}
	}

	record = &slot->record;
	clock_gettime(CLOCK_REALTIME, &now);
	record->seq = pos;
	record->time_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
	record->source = source;
	record->level = level;
	record->line = line;
	pyspdk_log_copy(record->file, sizeof(record->file), file);
	pyspdk_log_copy(record->func, sizeof(record->func), func);
	thread = spdk_get_thread();
	pyspdk_log_copy(record->thread, sizeof(record->thread),
			thread != NULL ? spdk_thread_get_name(thread) : NULL);
	if (len >= sizeof(record->msg)) {
		len = sizeof(record->msg) - 1;
	}
	memcpy(record->msg, msg, len);
	record->msg[len] = '\0';
	__atomic_store_n(&slot->turn, pos + 1, __ATOMIC_RELEASE);

	if (!__atomic_exchange_n(&g_signaled, true, __ATOMIC_SEQ_CST)) {
		(void)!write(g_efd, &one, sizeof(one));
	}
}

static void
pyspdk_log_spdk(int level, const char *file, const int line, const char *func,
		const char *format, va_list args)
{
	char msg[PYSPDK_LOG_MSG_MAX];
	char stamp[32];
	struct timespec now;
	struct tm tm;
	int len;

	if (level < SPDK_LOG_ERROR || level > SPDK_LOG_DEBUG ||
	    level > (int)spdk_log_get_print_level()) {
		return;
	}
	len = vsnprintf(msg, sizeof(msg), format, args);
	if (len < 0) {
		return;
	}
	if ((size_t)len >= sizeof(msg)) {
		len = sizeof(msg) - 1;
	}
	if (file != NULL && strrchr(file, '/') != NULL) {
		file = strrchr(file, '/') + 1;
	}
	if (__atomic_load_n(&g_stderr, __ATOMIC_RELAXED)) {
		/* SPDK's own layout: [date time.usec] file:line:func: *LEVEL*: text */
		clock_gettime(CLOCK_REALTIME, &now);
		localtime_r(&now.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
		if (file != NULL) {
			fprintf(stderr, "[%s.%06ld] %s:%4d:%s: *%s*: %s", stamp, now.tv_nsec / 1000,
				file, line, func, g_spdk_level_names[level], msg);
		} else {
			fprintf(stderr, "[%s.%06ld] %s", stamp, now.tv_nsec / 1000, msg);
		}
	}
	pyspdk_log_push(PYSPDK_LOG_SPDK, level, file, file != NULL ? line : -1, func, msg,
			(size_t)len);
}

/* fopencookie's write: DPDK's text, one record per line. */
static ssize_t
pyspdk_log_dpdk_write(void *cookie, const char *buf, size_t size)
{
	int level = rte_log_cur_msg_loglevel();
	const char *line = buf, *end = buf + size, *eol;

	(void)cookie;
	if (level <= 0) {
		level = RTE_LOG_INFO_LEVEL; /* text written outside rte_log */
	}
	if (__atomic_load_n(&g_stderr, __ATOMIC_RELAXED)) {
		(void)!fwrite(buf, 1, size, stderr);
	}
	while (line < end) {
		eol = memchr(line, '\n', (size_t)(end - line));
		if (eol == NULL) {
			eol = end;
		}
		if (eol > line) {
			pyspdk_log_push(PYSPDK_LOG_DPDK, level, NULL, -1, NULL, line,
					(size_t)(eol - line));
		}
		line = eol + 1;
	}
	return (ssize_t)size;
}

static void
pyspdk_log_init_once(void)
{
	cookie_io_functions_t io = { .write = pyspdk_log_dpdk_write };
	uint32_t i;

	for (i = 0; i < PYSPDK_LOG_RING_SLOTS; i++) {
		g_slots[i].turn = i;
	}
	/* Never closed: a thread that logs may write it at any time. */
	g_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (g_efd < 0) {
		g_init_rc = -errno;
		return;
	}
	g_dpdk_stream = fopencookie(NULL, "w", io);
	if (g_dpdk_stream == NULL) {
		g_init_rc = -errno;
		return;
	}
	/* One write per line: each DPDK message is one record. */
	setvbuf(g_dpdk_stream, NULL, _IOLBF, PYSPDK_LOG_MSG_MAX);
}

int
pyspdk_log_install(struct spdk_app_opts *opts)
{
	pthread_once(&g_once, pyspdk_log_init_once);
	if (g_init_rc != 0) {
		return g_init_rc;
	}
	spdk_log_open(pyspdk_log_spdk);
	if (opts != NULL) {
		opts->log = pyspdk_log_spdk;
	}
	rte_openlog_stream(g_dpdk_stream);
	return 0;
}

void
pyspdk_log_set_stderr(bool on)
{
	__atomic_store_n(&g_stderr, on, __ATOMIC_RELAXED);
}

bool
pyspdk_log_get_stderr(void)
{
	return __atomic_load_n(&g_stderr, __ATOMIC_RELAXED);
}

int
pyspdk_log_fd(void)
{
	pthread_once(&g_once, pyspdk_log_init_once);
	return g_efd;
}

int
pyspdk_log_take(struct pyspdk_log_record *out, int max)
{
	struct pyspdk_log_slot *slot;
	uint64_t drained;
	int n = 0;

	if (g_efd < 0) {
		return 0;
	}
	/* Reset the signal before looking: a record published after this either
	 * is taken below or writes the eventfd again. */
	(void)!read(g_efd, &drained, sizeof(drained));
	__atomic_store_n(&g_signaled, false, __ATOMIC_SEQ_CST);
	while (n < max) {
		slot = &g_slots[g_head % PYSPDK_LOG_RING_SLOTS];
		if (__atomic_load_n(&slot->turn, __ATOMIC_ACQUIRE) != g_head + 1) {
			break; /* empty, or its writer is still filling it */
		}
		out[n++] = slot->record;
		__atomic_store_n(&slot->turn, g_head + PYSPDK_LOG_RING_SLOTS, __ATOMIC_RELEASE);
		g_head++;
	}
	return n;
}

uint64_t
pyspdk_log_next_seq(void)
{
	return __atomic_load_n(&g_tail, __ATOMIC_ACQUIRE);
}

uint64_t
pyspdk_log_dropped(void)
{
	return __atomic_load_n(&g_dropped, __ATOMIC_RELAXED);
}

void
pyspdk_log_emit(int source, int level, int count, const char *text)
{
	int i;

	for (i = 0; i < count; i++) {
		if (source == PYSPDK_LOG_DPDK) {
			rte_log((uint32_t)level, RTE_LOGTYPE_USER1_TYPE, "USER1: %s %d\n", text, i);
		} else {
			spdk_log(level, __FILE__, __LINE__, __func__, "%s %d\n", text, i);
		}
	}
}

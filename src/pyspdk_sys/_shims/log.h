/* _shims/log.h: SPDK's and DPDK's log, handed to Python without the GIL
 * (log.c). Whatever thread logs formats its message in C into a bounded ring
 * and, when the ring was idle, writes an eventfd; one Python thread waits on
 * that eventfd and takes the records. A full ring drops the message and
 * counts it: a thread that logs never waits for Python. */
#ifndef PYSPDK_SHIMS_LOG_H
#define PYSPDK_SHIMS_LOG_H

#include "spdk/stdinc.h"
#include "spdk/event.h"

/* cffi begin */
#define PYSPDK_LOG_RING_SLOTS 1024
#define PYSPDK_LOG_MSG_MAX 1024
#define PYSPDK_LOG_FILE_MAX 48
#define PYSPDK_LOG_FUNC_MAX 64
#define PYSPDK_LOG_THREAD_MAX 32
/* Where a record comes from: SPDK's spdk_log, or DPDK's rte_log stream. */
#define PYSPDK_LOG_SPDK 0
#define PYSPDK_LOG_DPDK 1

/* One message. level: an enum spdk_log_level for SPDK, an RTE_LOG_* value
 * (1 emergency .. 8 debug) for DPDK. seq orders every record ever kept. */
struct pyspdk_log_record {
	uint64_t seq;
	int64_t time_ns;	/* CLOCK_REALTIME */
	int32_t source;
	int32_t level;
	int32_t line;		/* -1 when SPDK gave no place */
	char file[PYSPDK_LOG_FILE_MAX];
	char func[PYSPDK_LOG_FUNC_MAX];
	char thread[PYSPDK_LOG_THREAD_MAX];	/* the SPDK thread's name, or "" */
	char msg[PYSPDK_LOG_MSG_MAX];
};

/* Route SPDK's log (spdk_log_open, and opts->log when opts is not NULL, for
 * spdk_app_start to keep) and DPDK's (rte_openlog_stream) into the ring.
 * Safe to repeat. 0 or -errno. */
int pyspdk_log_install(struct spdk_app_opts *opts);
/* Also print each message on stderr as SPDK and DPDK would (SPDK's at its
 * print level or above). Off: nothing of theirs reaches stderr. */
void pyspdk_log_set_stderr(bool on);
bool pyspdk_log_get_stderr(void);
/* The eventfd that is readable while records wait. */
int pyspdk_log_fd(void);
/* Take up to max records, oldest first (one reader at a time). How many. */
int pyspdk_log_take(struct pyspdk_log_record *out, int max);
/* The seq the next record kept will get. */
uint64_t pyspdk_log_next_seq(void);
/* Messages dropped because the ring was full, since the process began. */
uint64_t pyspdk_log_dropped(void);
/* Log `count` messages "<text> <n>" at `level` from the calling thread,
 * through spdk_log (source PYSPDK_LOG_SPDK) or rte_log as DPDK's user1 type
 * (PYSPDK_LOG_DPDK): how tests see both paths and the ring under a flood. */
void pyspdk_log_emit(int source, int level, int count, const char *text);
/* cffi end */

#endif /* PYSPDK_SHIMS_LOG_H */

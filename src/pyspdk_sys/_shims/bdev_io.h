/* _shims/bdev_io.h: the block I/O engine (bdev_io.c). Python threads queue
 * requests, a poller on an SPDK thread (one per reactor core: a device's
 * lanes) submits them with the bdev API, completions finish in C without
 * the GIL. */
#ifndef PYSPDK_SHIMS_BDEV_IO_H
#define PYSPDK_SHIMS_BDEV_IO_H

#include "spdk/stdinc.h"
#include "spdk/bdev.h"
#include "spdk/thread.h"

#include "wait.h"

struct pyspdk_job_part;

/* cffi begin */
#define PYSPDK_IO_READ 0
#define PYSPDK_IO_WRITE 1
#define PYSPDK_IO_READV 2
#define PYSPDK_IO_WRITEV 3
#define PYSPDK_IO_FLUSH 4
#define PYSPDK_IO_UNMAP 5
#define PYSPDK_IO_WRITE_ZEROES 6
#define PYSPDK_IO_RESET 7
/* NVMe passthrough: io->cmd points at a 64-byte NVMe command; io->buf holds
 * io->nbytes of data (io->md_buf io->md_len of metadata for _MD); cdw0 and
 * the status are set whether or not the command succeeds. */
#define PYSPDK_IO_NVME_ADMIN 8
#define PYSPDK_IO_NVME_IO 9
#define PYSPDK_IO_NVME_IO_MD 10
/* pyspdk_io.state once the engine has let go of the request. */
#define PYSPDK_IO_DONE 2
#define PYSPDK_DEV_OPEN 0
#define PYSPDK_DEV_CLOSING 1
#define PYSPDK_DEV_CLOSED 2

struct pyspdk_cq;
struct pyspdk_dev;
struct pyspdk_io;

/* One request. While state is not PYSPDK_IO_DONE the engine holds it and its
 * buffers; a new request must be set to PYSPDK_IO_DONE before first use. */
#ifdef PYSPDK_CDEF
struct pyspdk_io {
	int op;
	uint64_t offset_blocks;
	uint64_t num_blocks;
	void *buf;
	struct iovec *iov;
	int iovcnt;
	struct pyspdk_cq *cq;
	uint64_t tag;
	void *cmd;
	uint64_t nbytes;
	void *md_buf;
	uint64_t md_len;
	int status;
	int nvme_sct;
	int nvme_sc;
	uint32_t cdw0;
	int aio_status;
	uint32_t state;
	...;
};
#endif

/* App thread only. lanes: at most this many SPDK threads (0: one per reactor
 * core); queue_depth: the most requests in flight per lane. */
struct pyspdk_dev *pyspdk_dev_open(const char *name, bool write, uint32_t queue_depth,
				   uint32_t lanes, int *rc);
void pyspdk_dev_close(struct pyspdk_dev *dev);
void pyspdk_io_engine_stop(void);
/* Any thread. Interrupt mode: after its last request or completion an engine
 * thread keeps its reactor polling this long before it lets it sleep, so the
 * next request of a caller that submits one at a time meets no wake-up (0:
 * sleep at once). */
void pyspdk_engine_set_linger_us(uint32_t us);
int pyspdk_io_open_count(void);
uint32_t pyspdk_io_engine_threads(void);

/* Any thread. Waits take at most timeout_ns: -ETIMEDOUT or -EINTR mean "not
 * yet", and the request is still the engine's. A spin_ns < 0 adapts the spin
 * to the latency the device's waiters have seen (wait.c, pyspdk_adapt). */
int pyspdk_dev_submit(struct pyspdk_dev *dev, struct pyspdk_io **ios, int count);
/* One read or write of [offset, offset + length) into or from io->buf,
 * completing to io->cq: -ERANGE (nothing queued) unless it is whole blocks
 * inside the device. */
int pyspdk_dev_submit_range(struct pyspdk_dev *dev, struct pyspdk_io *io, int op, uint64_t offset,
			    uint64_t length);
int pyspdk_io_run(struct pyspdk_dev *dev, struct pyspdk_io *io, int64_t spin_ns,
		  int64_t timeout_ns);
int pyspdk_io_wait(struct pyspdk_io *io, int64_t spin_ns, int64_t timeout_ns);
bool pyspdk_io_is_done(struct pyspdk_io *io);
int pyspdk_dev_wait_ready(struct pyspdk_dev *dev, int64_t timeout_ns);
int pyspdk_dev_wait_closed(struct pyspdk_dev *dev, int64_t timeout_ns);
uint32_t pyspdk_dev_lanes(struct pyspdk_dev *dev);
void pyspdk_dev_free(struct pyspdk_dev *dev);
uint32_t pyspdk_dev_inflight(struct pyspdk_dev *dev);
int64_t pyspdk_dev_latency_ns(struct pyspdk_dev *dev, bool jobs);
int64_t pyspdk_dev_adaptive_spin_ns(struct pyspdk_dev *dev, bool jobs);
/* cffi end */

/* pyspdk_io.state, a futex word: PYSPDK_IO_DONE, or one of these. */
#define PYSPDK_IO_PENDING 0
#define PYSPDK_IO_SLEEPING 1 /* pending, and a waiter sleeps on the futex */

struct pyspdk_lane;

struct pyspdk_io {
	/* Filled by the caller before submission. */
	int op;
	uint64_t offset_blocks;
	uint64_t num_blocks;
	void *buf;
	struct iovec *iov;
	int iovcnt;
	struct pyspdk_cq *cq;
	uint64_t tag;
	void *cmd;                   /* NVMe passthrough only (see PYSPDK_IO_NVME_ADMIN) */
	uint64_t nbytes;
	void *md_buf;
	uint64_t md_len;
	/* Results, valid once state is PYSPDK_IO_DONE. */
	int status;     /* 0 ok, < 0 -errno (not submitted or cancelled), 1 I/O failed */
	int nvme_sct;
	int nvme_sc;
	uint32_t cdw0;
	int aio_status;
	uint32_t state;
	/* Engine-private. */
	int64_t submitted_ns;        /* blocking requests, for pyspdk_adapt */
	struct pyspdk_dev *dev;
	struct pyspdk_lane *lane;
	struct pyspdk_io *next;
	struct pyspdk_io *held_prev, *held_next; /* lane->held, while the bdev layer has it */
	struct spdk_bdev_io_wait_entry wait;
};

/* Lanes, engine threads and job parts are written per I/O by their own
 * cores: each starts on a cache line of its own, or the cores' writes to
 * neighbours ping-pong the line between them (the second core then added
 * nothing to a job's throughput). */
#define PYSPDK_CACHE_LINE 64

/* The most SPDK threads (reactor cores) the engine spreads a device over. */
#define PYSPDK_MAX_LANES 64

/* One SPDK thread the engine runs on: its poller, and the lanes it serves. */
struct pyspdk_engine_thread {
	struct spdk_thread *thread;
	struct spdk_poller *poller;
	struct pyspdk_lane *lanes;   /* this thread only */
	int pending;                 /* some lane here has queued work */
	int efd;                     /* interrupt mode: written when pending turns 1, else -1 */
	struct spdk_interrupt *intr; /* interrupt mode: runs the poller on efd */
	bool lingering;              /* interrupt mode: efd left readable until linger_until */
	uint64_t linger_until;       /* spdk_get_ticks() */
} __attribute__((aligned(PYSPDK_CACHE_LINE)));

/* A device's share of one engine thread: its channel and its queues. Only
 * that thread touches it, except for the fields under `lock`. */
struct pyspdk_lane {
	struct pyspdk_dev *dev;
	struct pyspdk_engine_thread *home;
	struct spdk_io_channel *ch;
	uint32_t inflight;           /* handed to the bdev layer */
	uint32_t state;              /* PYSPDK_DEV_* of this lane */
	bool linked;                 /* on home->lanes */
	bool unreached;              /* owner thread: no message reached its thread */
	pthread_mutex_t lock;        /* guards sq, jobs_posted, accepting and refusal */
	bool accepting;
	int refusal;                 /* what a submission gets once not accepting */
	struct pyspdk_io *sq_head, *sq_tail;         /* queued by any thread */
	struct pyspdk_job_part *jobs_posted;         /* by any thread */
	struct pyspdk_io *backlog_head, *backlog_tail;
	struct pyspdk_io *held;                      /* in the bdev layer's hands */
	struct pyspdk_job_part *jobs;                /* running */
	struct pyspdk_lane *next;    /* home->lanes */
	void *spare_slots;           /* bdev_jobs.c's slot block, any thread (atomic) */
} __attribute__((aligned(PYSPDK_CACHE_LINE)));

struct pyspdk_dev {
	struct spdk_bdev_desc *desc; /* the owner thread's */
	struct spdk_bdev *bdev;
	struct spdk_thread *owner;   /* the app thread: opens, hears hot removal, closes */
	uint32_t queue_depth;        /* per lane */
	uint32_t state;              /* futex word; PYSPDK_DEV_* of the device */
	bool removed;                /* the bdev is going away (hot remove) */
	int close_status;            /* what queued requests end with when it closes */
	uint32_t lanes_open;         /* owner thread: lanes still holding a channel */
	uint32_t setting_up;         /* futex word: lanes whose channel is not made yet */
	int setup_rc;                /* the first lane's failure to get a channel */
	struct pyspdk_dev *next;     /* the engine's list (owner thread only) */
	struct pyspdk_adapt adapt_io;  /* latency of blocking requests */
	struct pyspdk_adapt adapt_job; /* latency of jobs */
	uint32_t block_size;         /* the bdev's, as opened */
	uint64_t size;               /* bytes, as opened */
	uint32_t nlanes;
	struct pyspdk_lane lanes[];
};

/* For bdev_jobs.c, which runs jobs on the engine's lanes. */

/* Lane thread: move queued requests on while queue depth allows (and release
 * a closing lane once nothing of it is in flight). */
void pyspdk_io_pump(struct pyspdk_lane *lane);
/* Lane thread, closing: ask the bdev layer to abort the I/O submitted with
 * cb_arg (best effort). */
int pyspdk_lane_abort(struct pyspdk_lane *lane, void *cb_arg);
/* Any thread: `home` has queued work: its poller looks at it next round, or
 * in interrupt mode its event wakes the thread. */
void pyspdk_engine_kick(struct pyspdk_engine_thread *home);
/* Engine thread, after a completion: in interrupt mode, keep it polling for
 * the linger time (pyspdk_engine_set_linger_us). */
void pyspdk_engine_linger(struct pyspdk_engine_thread *home);
/* Blocking waiters spinning now (pyspdk_spin_while's `spinners`). */
extern int g_pyspdk_io_spinners;

#endif /* PYSPDK_SHIMS_BDEV_IO_H */

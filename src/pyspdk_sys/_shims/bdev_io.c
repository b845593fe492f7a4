/* Block I/O engine: see cdefs/pyspdk_io.h.
 *
 * Any Python thread queues requests on a device (pyspdk_dev_submit); one
 * poller on the SPDK app thread hands them to the bdev layer; completions are
 * finished in C. Nothing here takes the GIL: a blocking caller sleeps on a
 * futex word in its request, other callers read a completion queue signalled
 * through an eventfd. The device, its descriptor and its channel are only
 * touched on the SPDK app thread, except for the locked submission list.
 */
#include <linux/futex.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>

enum {
	PYSPDK_IO_READ = 0,
	PYSPDK_IO_WRITE = 1,
	PYSPDK_IO_READV = 2,
	PYSPDK_IO_WRITEV = 3,
	PYSPDK_IO_FLUSH = 4,
	PYSPDK_IO_UNMAP = 5,
	PYSPDK_IO_WRITE_ZEROES = 6,
	PYSPDK_IO_RESET = 7,
};

/* pyspdk_io.state: a futex word. */
enum {
	PYSPDK_IO_PENDING = 0,
	PYSPDK_IO_SLEEPING = 1, /* pending, and a waiter sleeps on the futex */
	PYSPDK_IO_DONE = 2,
};

enum {
	PYSPDK_DEV_OPEN = 0,
	PYSPDK_DEV_CLOSING = 1,
	PYSPDK_DEV_CLOSED = 2,
};

struct pyspdk_cq;
struct pyspdk_dev;
struct pyspdk_job;

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
	/* Results, valid once state is PYSPDK_IO_DONE. */
	int status;     /* 0 ok, < 0 -errno (not submitted or cancelled), 1 I/O failed */
	int nvme_sct;
	int nvme_sc;
	uint32_t cdw0;
	int aio_status;
	uint32_t state;
	/* Engine-private. */
	struct pyspdk_dev *dev;
	struct pyspdk_io *next;
	struct spdk_bdev_io_wait_entry wait;
};

struct pyspdk_cq {
	pthread_mutex_t lock;
	struct pyspdk_io *head, *tail;
	uint32_t count;
	bool signaled;
	int efd;
};

struct pyspdk_dev {
	struct spdk_bdev_desc *desc;
	struct spdk_io_channel *ch;
	struct spdk_bdev *bdev;
	uint32_t queue_depth;
	uint32_t inflight;           /* handed to the bdev layer (app thread only) */
	uint32_t state;              /* futex word; PYSPDK_DEV_* */
	bool removed;                /* the bdev is going away (hot remove) */
	pthread_mutex_t lock;        /* guards sq and accepting */
	bool accepting;
	struct pyspdk_io *sq_head, *sq_tail;     /* queued by any thread */
	struct pyspdk_io *backlog_head, *backlog_tail; /* app thread only */
	struct pyspdk_job *jobs_posted;              /* by any thread, under lock */
	struct pyspdk_job *jobs;                     /* running, app thread only */
	struct pyspdk_dev *next;     /* the engine's list (app thread only) */
};

static struct {
	struct pyspdk_dev *devs;     /* open devices, app thread only */
	struct spdk_poller *poller;
	int pending;                 /* some device has queued requests */
	int spinners;                /* blocking waiters spinning now */
} g_pyspdk_io;

static void pyspdk_io_pump(struct pyspdk_dev *dev);
static void pyspdk_jobs_start(struct pyspdk_dev *dev, struct pyspdk_job *posted);
static void pyspdk_jobs_cancel(struct pyspdk_dev *dev, struct pyspdk_job *posted);

static inline void
pyspdk_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

static long
pyspdk_futex(uint32_t *word, int op, uint32_t value, const struct timespec *timeout)
{
	return syscall(SYS_futex, word, op | FUTEX_PRIVATE_FLAG, value, timeout, NULL, 0);
}

static void
pyspdk_cq_push(struct pyspdk_cq *cq, struct pyspdk_io *io)
{
	bool signal;
	uint64_t one = 1;

	io->next = NULL;
	pthread_mutex_lock(&cq->lock);
	if (cq->tail) {
		cq->tail->next = io;
	} else {
		cq->head = io;
	}
	cq->tail = io;
	__atomic_store_n(&cq->count, cq->count + 1, __ATOMIC_RELEASE);
	signal = !cq->signaled;
	cq->signaled = true;
	__atomic_store_n(&io->state, PYSPDK_IO_DONE, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&cq->lock);
	if (signal) {
		(void)!write(cq->efd, &one, sizeof(one));
	}
}

/* The request is over: publish it. After this the caller may free it. */
static void
pyspdk_io_finish(struct pyspdk_io *io)
{
	if (io->cq) {
		pyspdk_cq_push(io->cq, io);
	} else if (__atomic_exchange_n(&io->state, PYSPDK_IO_DONE, __ATOMIC_ACQ_REL) ==
		   PYSPDK_IO_SLEEPING) {
		pyspdk_futex(&io->state, FUTEX_WAKE, INT_MAX, NULL);
	}
}

static void
pyspdk_dev_release(struct pyspdk_dev *dev)
{
	struct pyspdk_dev **link;

	if (dev->ch) {
		spdk_put_io_channel(dev->ch);
		dev->ch = NULL;
	}
	if (dev->desc) {
		spdk_bdev_close(dev->desc);
		dev->desc = NULL;
	}
	for (link = &g_pyspdk_io.devs; *link; link = &(*link)->next) {
		if (*link == dev) {
			*link = dev->next;
			break;
		}
	}
	__atomic_store_n(&dev->state, PYSPDK_DEV_CLOSED, __ATOMIC_RELEASE);
	pyspdk_futex(&dev->state, FUTEX_WAKE, INT_MAX, NULL);
}

static void
pyspdk_io_done(struct spdk_bdev_io *bdev_io, bool success, void *arg)
{
	struct pyspdk_io *io = arg;
	struct pyspdk_dev *dev = io->dev;

	if (!success) {
		io->status = 1;
		spdk_bdev_io_get_nvme_status(bdev_io, &io->cdw0, &io->nvme_sct, &io->nvme_sc);
		spdk_bdev_io_get_aio_status(bdev_io, &io->aio_status);
	}
	spdk_bdev_free_io(bdev_io);
	dev->inflight--;
	pyspdk_io_finish(io);
	pyspdk_io_pump(dev);
}

static int
pyspdk_io_start(struct pyspdk_io *io)
{
	struct pyspdk_dev *dev = io->dev;
	struct spdk_bdev_desc *d = dev->desc;
	struct spdk_io_channel *ch = dev->ch;

	switch (io->op) {
	case PYSPDK_IO_READ:
		return spdk_bdev_read_blocks(d, ch, io->buf, io->offset_blocks, io->num_blocks,
					     pyspdk_io_done, io);
	case PYSPDK_IO_WRITE:
		return spdk_bdev_write_blocks(d, ch, io->buf, io->offset_blocks, io->num_blocks,
					      pyspdk_io_done, io);
	case PYSPDK_IO_READV:
		return spdk_bdev_readv_blocks(d, ch, io->iov, io->iovcnt, io->offset_blocks,
					      io->num_blocks, pyspdk_io_done, io);
	case PYSPDK_IO_WRITEV:
		return spdk_bdev_writev_blocks(d, ch, io->iov, io->iovcnt, io->offset_blocks,
					       io->num_blocks, pyspdk_io_done, io);
	case PYSPDK_IO_FLUSH:
		return spdk_bdev_flush_blocks(d, ch, io->offset_blocks, io->num_blocks,
					      pyspdk_io_done, io);
	case PYSPDK_IO_UNMAP:
		return spdk_bdev_unmap_blocks(d, ch, io->offset_blocks, io->num_blocks,
					      pyspdk_io_done, io);
	case PYSPDK_IO_WRITE_ZEROES:
		return spdk_bdev_write_zeroes_blocks(d, ch, io->offset_blocks, io->num_blocks,
						     pyspdk_io_done, io);
	case PYSPDK_IO_RESET:
		return spdk_bdev_reset(d, ch, pyspdk_io_done, io);
	default:
		return -EINVAL;
	}
}

static void pyspdk_io_submit_one(struct pyspdk_io *io);

static void
pyspdk_io_retry(void *arg)
{
	pyspdk_io_submit_one(arg);
}

/* Hand one request to the bdev layer; it holds a queue-depth slot until done. */
static void
pyspdk_io_submit_one(struct pyspdk_io *io)
{
	struct pyspdk_dev *dev = io->dev;
	int rc = pyspdk_io_start(io);

	if (rc == -ENOMEM) {
		/* Out of bdev_io structures: SPDK calls back when one frees up. */
		io->wait.bdev = dev->bdev;
		io->wait.cb_fn = pyspdk_io_retry;
		io->wait.cb_arg = io;
		rc = spdk_bdev_queue_io_wait(dev->bdev, dev->ch, &io->wait);
		if (rc == 0) {
			return;
		}
	}
	if (rc != 0) {
		io->status = rc;
		dev->inflight--;
		pyspdk_io_finish(io);
	}
}

static void
pyspdk_io_cancel_list(struct pyspdk_io *io, int status)
{
	struct pyspdk_io *next;

	for (; io; io = next) {
		next = io->next;
		io->status = status;
		pyspdk_io_finish(io);
	}
}

/* On the app thread: move queued requests on while queue depth allows. */
static void
pyspdk_io_pump(struct pyspdk_dev *dev)
{
	struct pyspdk_io *io;

	while (dev->backlog_head && dev->inflight < dev->queue_depth &&
	       dev->state == PYSPDK_DEV_OPEN) {
		io = dev->backlog_head;
		dev->backlog_head = io->next;
		if (!dev->backlog_head) {
			dev->backlog_tail = NULL;
		}
		dev->inflight++;
		pyspdk_io_submit_one(io);
	}
	if (dev->state == PYSPDK_DEV_CLOSING && dev->inflight == 0) {
		pyspdk_dev_release(dev);
	}
}

static int
pyspdk_io_poll(void *ctx)
{
	struct pyspdk_dev *dev, *next;
	struct pyspdk_io *head, *tail;

	(void)ctx;
	if (__atomic_load_n(&g_pyspdk_io.pending, __ATOMIC_ACQUIRE) == 0) {
		return SPDK_POLLER_IDLE;
	}
	__atomic_store_n(&g_pyspdk_io.pending, 0, __ATOMIC_RELEASE);
	for (dev = g_pyspdk_io.devs; dev; dev = next) {
		next = dev->next;
		struct pyspdk_job *jobs;

		pthread_mutex_lock(&dev->lock);
		head = dev->sq_head;
		tail = dev->sq_tail;
		dev->sq_head = dev->sq_tail = NULL;
		jobs = dev->jobs_posted;
		dev->jobs_posted = NULL;
		pthread_mutex_unlock(&dev->lock);
		if (jobs) {
			pyspdk_jobs_start(dev, jobs);
		}
		if (head) {
			if (dev->backlog_tail) {
				dev->backlog_tail->next = head;
			} else {
				dev->backlog_head = head;
			}
			dev->backlog_tail = tail;
			pyspdk_io_pump(dev);
		}
	}
	return SPDK_POLLER_BUSY;
}

/* Stop accepting, cancel what the bdev layer has not seen, and close once
 * the requests it holds complete. App thread only. */
static void
pyspdk_dev_begin_close(struct pyspdk_dev *dev, int status)
{
	struct pyspdk_io *queued;

	if (dev->state != PYSPDK_DEV_OPEN) {
		return;
	}
	struct pyspdk_job *posted;

	pthread_mutex_lock(&dev->lock);
	dev->accepting = false;
	queued = dev->sq_head;
	dev->sq_head = dev->sq_tail = NULL;
	posted = dev->jobs_posted;
	dev->jobs_posted = NULL;
	pthread_mutex_unlock(&dev->lock);
	dev->state = PYSPDK_DEV_CLOSING;
	pyspdk_jobs_cancel(dev, posted);
	pyspdk_io_cancel_list(dev->backlog_head, status);
	dev->backlog_head = dev->backlog_tail = NULL;
	pyspdk_io_cancel_list(queued, status);
	pyspdk_io_pump(dev);
}

static void
pyspdk_dev_event(enum spdk_bdev_event_type type, struct spdk_bdev *bdev, void *ctx)
{
	struct pyspdk_dev *dev = ctx;

	(void)bdev;
	if (type == SPDK_BDEV_EVENT_REMOVE) {
		dev->removed = true;
		pyspdk_dev_begin_close(dev, -ENODEV);
	}
}

/* ---------------------------------------------------------------- API */

static struct pyspdk_dev *
pyspdk_dev_open(const char *name, bool write, uint32_t queue_depth, int *rc)
{
	struct pyspdk_dev *dev = calloc(1, sizeof(*dev));

	if (!dev) {
		*rc = -ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&dev->lock, NULL);
	*rc = spdk_bdev_open_ext(name, write, pyspdk_dev_event, dev, &dev->desc);
	if (*rc != 0) {
		free(dev);
		return NULL;
	}
	dev->bdev = spdk_bdev_desc_get_bdev(dev->desc);
	dev->ch = spdk_bdev_get_io_channel(dev->desc);
	if (!dev->ch) {
		spdk_bdev_close(dev->desc);
		free(dev);
		*rc = -ENOMEM;
		return NULL;
	}
	if (!g_pyspdk_io.poller) {
		g_pyspdk_io.poller = spdk_poller_register(pyspdk_io_poll, NULL, 0);
	}
	dev->queue_depth = queue_depth;
	dev->accepting = true;
	dev->state = PYSPDK_DEV_OPEN;
	dev->next = g_pyspdk_io.devs;
	g_pyspdk_io.devs = dev;
	return dev;
}

static int
pyspdk_dev_submit(struct pyspdk_dev *dev, struct pyspdk_io **ios, int count)
{
	int i;

	if (count <= 0) {
		return -EINVAL;
	}
	for (i = 0; i < count; i++) {
		ios[i]->dev = dev;
		ios[i]->status = 0;
		ios[i]->state = PYSPDK_IO_PENDING;
		ios[i]->next = i + 1 < count ? ios[i + 1] : NULL;
	}
	pthread_mutex_lock(&dev->lock);
	if (!dev->accepting) {
		pthread_mutex_unlock(&dev->lock);
		return dev->removed ? -ENODEV : -EBADF;
	}
	if (dev->sq_tail) {
		dev->sq_tail->next = ios[0];
	} else {
		dev->sq_head = ios[0];
	}
	dev->sq_tail = ios[count - 1];
	pthread_mutex_unlock(&dev->lock);
	__atomic_store_n(&g_pyspdk_io.pending, 1, __ATOMIC_RELEASE);
	return 0;
}

static bool
pyspdk_io_is_done(struct pyspdk_io *io)
{
	return __atomic_load_n(&io->state, __ATOMIC_ACQUIRE) == PYSPDK_IO_DONE;
}

static void
pyspdk_deadline(struct timespec *ts, int64_t timeout_ns)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += timeout_ns / 1000000000;
	ts->tv_nsec += timeout_ns % 1000000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

static int64_t
pyspdk_ns_left(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)(deadline->tv_sec - now.tv_sec) * 1000000000 +
	       (deadline->tv_nsec - now.tv_nsec);
}

/* Sleep on *word while it holds `value`, at most until `deadline` (NULL: no
 * limit). 0 after a wake-up (or a spurious one), -ETIMEDOUT once past it. */
static int
pyspdk_futex_sleep(uint32_t *word, uint32_t value, const struct timespec *deadline)
{
	struct timespec rel;
	int64_t left;

	if (!deadline) {
		pyspdk_futex(word, FUTEX_WAIT, value, NULL);
		return 0;
	}
	left = pyspdk_ns_left(deadline);
	if (left <= 0) {
		return -ETIMEDOUT;
	}
	rel.tv_sec = left / 1000000000;
	rel.tv_nsec = left % 1000000000;
	pyspdk_futex(word, FUTEX_WAIT, value, &rel);
	return 0;
}

/* Wait for a request without a completion queue: spin for spin_ns, then sleep.
 * timeout_ns < 0 waits for ever. 0 when done, -ETIMEDOUT otherwise. */
static int
pyspdk_io_wait(struct pyspdk_io *io, int64_t spin_ns, int64_t timeout_ns)
{
	struct timespec deadline, spin_end;

	/* Spin while the completion is likely near. With other waiters spinning
	 * too, yield instead: on a busy core the thread holding the GIL needs the
	 * CPU more than this one needs to see its completion a microsecond early. */
	pyspdk_deadline(&spin_end, spin_ns > 0 ? spin_ns : 0);
	__atomic_add_fetch(&g_pyspdk_io.spinners, 1, __ATOMIC_RELAXED);
	while (!pyspdk_io_is_done(io)) {
		if (pyspdk_ns_left(&spin_end) <= 0) {
			break;
		}
		if (__atomic_load_n(&g_pyspdk_io.spinners, __ATOMIC_RELAXED) > 1) {
			sched_yield();
		} else {
			pyspdk_cpu_relax();
		}
	}
	__atomic_sub_fetch(&g_pyspdk_io.spinners, 1, __ATOMIC_RELAXED);
	if (timeout_ns >= 0) {
		pyspdk_deadline(&deadline, timeout_ns);
	}
	for (;;) {
		uint32_t expected = PYSPDK_IO_PENDING;

		if (pyspdk_io_is_done(io)) {
			return 0;
		}
		__atomic_compare_exchange_n(&io->state, &expected, PYSPDK_IO_SLEEPING, false,
					    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
		if (expected == PYSPDK_IO_DONE) {
			return 0;
		}
		if (pyspdk_futex_sleep(&io->state, PYSPDK_IO_SLEEPING,
				       timeout_ns >= 0 ? &deadline : NULL) != 0) {
			return -ETIMEDOUT;
		}
	}
}

/* Submit one request and wait for it: the blocking path, one crossing. */
static int
pyspdk_io_run(struct pyspdk_dev *dev, struct pyspdk_io *io, int64_t spin_ns, int64_t timeout_ns)
{
	int rc;

	io->cq = NULL;
	rc = pyspdk_dev_submit(dev, &io, 1);
	if (rc != 0) {
		return rc;
	}
	return pyspdk_io_wait(io, spin_ns, timeout_ns);
}

static struct pyspdk_cq *
pyspdk_cq_create(void)
{
	struct pyspdk_cq *cq = calloc(1, sizeof(*cq));

	if (!cq) {
		return NULL;
	}
	cq->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (cq->efd < 0) {
		free(cq);
		return NULL;
	}
	pthread_mutex_init(&cq->lock, NULL);
	return cq;
}

static void
pyspdk_cq_destroy(struct pyspdk_cq *cq)
{
	if (cq) {
		close(cq->efd);
		pthread_mutex_destroy(&cq->lock);
		free(cq);
	}
}

static int
pyspdk_cq_fd(struct pyspdk_cq *cq)
{
	return cq->efd;
}

/* Take up to max finished requests. Waits up to timeout_ns for the first one
 * (spinning spin_ns first); 0 does not wait, < 0 waits for ever. */
static int
pyspdk_cq_reap(struct pyspdk_cq *cq, struct pyspdk_io **out, int max, int64_t spin_ns,
	       int64_t timeout_ns)
{
	struct timespec spin_end;
	struct pollfd pfd = { .fd = cq->efd, .events = POLLIN };
	uint64_t drained;
	int n = 0;

	if (timeout_ns != 0 && __atomic_load_n(&cq->count, __ATOMIC_ACQUIRE) == 0) {
		pyspdk_deadline(&spin_end, spin_ns > 0 ? spin_ns : 0);
		while (__atomic_load_n(&cq->count, __ATOMIC_ACQUIRE) == 0 &&
		       pyspdk_ns_left(&spin_end) > 0) {
			pyspdk_cpu_relax();
		}
		if (__atomic_load_n(&cq->count, __ATOMIC_ACQUIRE) == 0) {
			int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);

			if (poll(&pfd, 1, ms) < 0 && errno != EINTR) {
				return -errno;
			}
		}
	}
	pthread_mutex_lock(&cq->lock);
	while (cq->head && n < max) {
		out[n++] = cq->head;
		cq->head = cq->head->next;
	}
	if (!cq->head) {
		cq->tail = NULL;
		cq->signaled = false;
		(void)!read(cq->efd, &drained, sizeof(drained));
	}
	__atomic_store_n(&cq->count, cq->count - n, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&cq->lock);
	return n;
}

/* App thread: close now if idle, else once the bdev layer hands back what it
 * holds. Queued requests end with -ECANCELED. */
static void
pyspdk_dev_close(struct pyspdk_dev *dev)
{
	pyspdk_dev_begin_close(dev, -ECANCELED);
}

/* Any thread: wait until the device is closed. 0, or -ETIMEDOUT. */
static int
pyspdk_dev_wait_closed(struct pyspdk_dev *dev, int64_t timeout_ns)
{
	struct timespec deadline;
	uint32_t state;

	pyspdk_deadline(&deadline, timeout_ns);
	while ((state = __atomic_load_n(&dev->state, __ATOMIC_ACQUIRE)) != PYSPDK_DEV_CLOSED) {
		if (pyspdk_futex_sleep(&dev->state, state, &deadline) != 0) {
			return -ETIMEDOUT;
		}
	}
	return 0;
}

static void
pyspdk_dev_free(struct pyspdk_dev *dev)
{
	pthread_mutex_destroy(&dev->lock);
	free(dev);
}

static uint32_t
pyspdk_dev_inflight(struct pyspdk_dev *dev)
{
	return __atomic_load_n(&dev->inflight, __ATOMIC_RELAXED);
}

/* App thread, when the runtime stops: no device may remain open. */
static void
pyspdk_io_engine_stop(void)
{
	if (g_pyspdk_io.poller) {
		spdk_poller_unregister(&g_pyspdk_io.poller);
	}
}

static int
pyspdk_io_open_count(void)
{
	int n = 0;
	struct pyspdk_dev *dev;

	for (dev = g_pyspdk_io.devs; dev; dev = dev->next) {
		n++;
	}
	return n;
}



/* ---------------------------------------------------------------- jobs
 *
 * The throughput path: one call hands the engine `count` same-sized I/Os,
 * their offsets in an array and their data in one buffer region (I/O i at
 * base + i * io_bytes). On the SPDK thread the job keeps `depth` of them in
 * flight, starting the next one from the completion of the last, as
 * bdevperf does; each I/O's status lands in statuses[i]. The caller sleeps
 * until the whole job is over: one crossing for the lot.
 */

struct pyspdk_job_slot {
	struct pyspdk_job *job;
	uint64_t index;
	struct spdk_bdev_io_wait_entry wait;
};

struct pyspdk_job {
	struct pyspdk_dev *dev;
	int op;
	const uint64_t *offsets_blocks;
	uint64_t count;
	uint32_t io_blocks;
	uint64_t io_bytes;
	char *base;
	int32_t *statuses;
	uint32_t depth;
	struct pyspdk_job_slot *slots;
	/* App thread only. */
	uint64_t next;
	uint64_t finished;
	uint32_t inflight;
	bool cancelled;
	bool starting;               /* defer the end until the start loop is done */
	bool ended;
	struct pyspdk_job *link;
	/* Futex word: 0 running, 1 over. */
	uint32_t over;
};

static void pyspdk_job_next(struct pyspdk_job_slot *slot);

/* The last touch of a job: once `over` is set its owner may free it. */
static void
pyspdk_job_over(struct pyspdk_job *job)
{
	struct pyspdk_dev *dev = job->dev;
	struct pyspdk_job **link;

	if (job->starting) {
		job->ended = true;
		return;
	}
	for (link = &dev->jobs; *link; link = &(*link)->link) {
		if (*link == job) {
			*link = job->link;
			break;
		}
	}
	__atomic_store_n(&job->over, 1, __ATOMIC_RELEASE);
	pyspdk_futex(&job->over, FUTEX_WAKE, INT_MAX, NULL);
}

static void
pyspdk_job_io_done(struct spdk_bdev_io *bdev_io, bool success, void *arg)
{
	struct pyspdk_job_slot *slot = arg;
	struct pyspdk_job *job = slot->job;
	struct pyspdk_dev *dev = job->dev;

	job->statuses[slot->index] = success ? 0 : 1;
	spdk_bdev_free_io(bdev_io);
	job->finished++;
	job->inflight--;
	dev->inflight--;
	pyspdk_job_next(slot);
	if (dev->state == PYSPDK_DEV_CLOSING && dev->inflight == 0) {
		pyspdk_dev_release(dev);
	}
}

static int pyspdk_job_submit(struct pyspdk_job_slot *slot);

/* Keep this slot busy with the job's next I/O; an I/O the bdev layer refuses
 * at once is recorded and the slot moves on. Ends the job when nothing is
 * left. */
static void
pyspdk_job_next(struct pyspdk_job_slot *slot)
{
	struct pyspdk_job *job = slot->job;

	while (job->next < job->count && !job->cancelled) {
		slot->index = job->next++;
		job->inflight++;
		job->dev->inflight++;
		if (pyspdk_job_submit(slot) == 0) {
			return;
		}
	}
	if (job->finished == job->count) {
		pyspdk_job_over(job);
	}
}

static void
pyspdk_job_retry(void *arg)
{
	/* Still counted in flight: submit the same I/O again. */
	if (pyspdk_job_submit(arg) != 0) {
		pyspdk_job_next(arg);
	}
}

/* Hand the slot's I/O to the bdev layer: 0 if it took it (or will, after
 * -ENOMEM), else the error, recorded as the I/O's status. */
static int
pyspdk_job_submit(struct pyspdk_job_slot *slot)
{
	struct pyspdk_job *job = slot->job;
	struct pyspdk_dev *dev = job->dev;
	uint64_t index = slot->index;
	char *buf = job->base + index * job->io_bytes;
	int rc;

	if (job->op == PYSPDK_IO_WRITE) {
		rc = spdk_bdev_write_blocks(dev->desc, dev->ch, buf, job->offsets_blocks[index],
					    job->io_blocks, pyspdk_job_io_done, slot);
	} else {
		rc = spdk_bdev_read_blocks(dev->desc, dev->ch, buf, job->offsets_blocks[index],
					   job->io_blocks, pyspdk_job_io_done, slot);
	}
	if (rc == -ENOMEM) {
		slot->wait.bdev = dev->bdev;
		slot->wait.cb_fn = pyspdk_job_retry;
		slot->wait.cb_arg = slot;
		rc = spdk_bdev_queue_io_wait(dev->bdev, dev->ch, &slot->wait);
	}
	if (rc != 0) {
		job->statuses[index] = rc;
		job->finished++;
		job->inflight--;
		dev->inflight--;
	}
	return rc;
}

/* App thread: the device is closing; what the job has not started ends
 * with -ECANCELED. */
static void
pyspdk_job_cancel(struct pyspdk_job *job)
{
	uint64_t i;

	job->cancelled = true;
	for (i = job->next; i < job->count; i++) {
		job->statuses[i] = -ECANCELED;
	}
	job->finished += job->count - job->next;
	job->next = job->count;
	if (job->finished == job->count) {
		pyspdk_job_over(job);
	}
}

static void
pyspdk_jobs_cancel(struct pyspdk_dev *dev, struct pyspdk_job *posted)
{
	struct pyspdk_job *job, *next;

	for (job = posted; job; job = next) {
		next = job->link;
		job->link = dev->jobs;
		dev->jobs = job;
		pyspdk_job_cancel(job);
	}
	for (job = dev->jobs; job; job = next) {
		next = job->link;
		pyspdk_job_cancel(job);
	}
}

static void
pyspdk_jobs_start(struct pyspdk_dev *dev, struct pyspdk_job *posted)
{
	struct pyspdk_job *job, *next;
	uint32_t i;

	for (job = posted; job; job = next) {
		next = job->link;
		job->link = dev->jobs;
		dev->jobs = job;
		job->starting = true;
		for (i = 0; i < job->depth && job->next < job->count && !job->cancelled; i++) {
			pyspdk_job_next(&job->slots[i]);
		}
		job->starting = false;
		if (job->ended) {
			pyspdk_job_over(job);
		}
	}
}

/* Any thread: check the offsets (bytes), convert them to blocks in place,
 * and post the job. -EINVAL with *bad set to the first bad index, -EBADF
 * when the device is closed. */
static int
pyspdk_job_post(struct pyspdk_dev *dev, struct pyspdk_job *job, int op, uint64_t *offsets,
		uint64_t count, uint64_t io_bytes, void *base, int32_t *statuses,
		struct pyspdk_job_slot *slots, uint32_t depth, uint64_t *bad)
{
	uint32_t block_size = spdk_bdev_get_block_size(dev->bdev);
	uint64_t size = spdk_bdev_get_num_blocks(dev->bdev) * block_size;
	uint64_t i;

	if (count == 0 || depth == 0 || io_bytes == 0 || io_bytes % block_size) {
		*bad = 0;
		return -EINVAL;
	}
	for (i = 0; i < count; i++) {
		if (offsets[i] % block_size || offsets[i] > size || size - offsets[i] < io_bytes) {
			*bad = i;
			return -EINVAL;
		}
		offsets[i] /= block_size;
	}
	memset(job, 0, sizeof(*job));
	job->dev = dev;
	job->op = op;
	job->offsets_blocks = offsets;
	job->count = count;
	job->io_blocks = (uint32_t)(io_bytes / block_size);
	job->io_bytes = io_bytes;
	job->base = base;
	job->statuses = statuses;
	job->depth = depth;
	job->slots = slots;
	for (i = 0; i < depth; i++) {
		slots[i].job = job;
	}
	pthread_mutex_lock(&dev->lock);
	if (!dev->accepting) {
		pthread_mutex_unlock(&dev->lock);
		return dev->removed ? -ENODEV : -EBADF;
	}
	job->link = dev->jobs_posted;
	dev->jobs_posted = job;
	pthread_mutex_unlock(&dev->lock);
	__atomic_store_n(&g_pyspdk_io.pending, 1, __ATOMIC_RELEASE);
	return 0;
}

/* Any thread: wait for the job to be over. 0, or -ETIMEDOUT. */
static int
pyspdk_job_wait(struct pyspdk_job *job, int64_t spin_ns, int64_t timeout_ns)
{
	struct timespec spin_end, deadline;

	pyspdk_deadline(&spin_end, spin_ns > 0 ? spin_ns : 0);
	while (!__atomic_load_n(&job->over, __ATOMIC_ACQUIRE) && pyspdk_ns_left(&spin_end) > 0) {
		pyspdk_cpu_relax();
	}
	if (timeout_ns >= 0) {
		pyspdk_deadline(&deadline, timeout_ns);
	}
	while (!__atomic_load_n(&job->over, __ATOMIC_ACQUIRE)) {
		if (pyspdk_futex_sleep(&job->over, 0, timeout_ns >= 0 ? &deadline : NULL) != 0) {
			return -ETIMEDOUT;
		}
	}
	return 0;
}

static bool
pyspdk_job_is_over(struct pyspdk_job *job)
{
	return __atomic_load_n(&job->over, __ATOMIC_ACQUIRE) != 0;
}

/* Sizes, so that Python can allocate a job and its slots as opaque memory. */
static size_t
pyspdk_job_size(void)
{
	return sizeof(struct pyspdk_job);
}

static size_t
pyspdk_job_slot_size(void)
{
	return sizeof(struct pyspdk_job_slot);
}

/* The block I/O engine (declared in bdev_io.h).
 *
 * Any Python thread queues requests on a device (pyspdk_dev_submit); one
 * poller on the SPDK app thread hands them to the bdev layer; completions are
 * finished in C. Nothing here takes the GIL: a blocking caller sleeps on a
 * futex word in its request (wait.c), other callers read a completion queue
 * (cq.c). The device, its descriptor and its channel are only touched on the
 * SPDK app thread, except for the locked submission list.
 *
 * A request's state says who holds it: PYSPDK_IO_DONE means nobody in C (a
 * fresh request starts there too), anything else that the engine does. The
 * Python owner of a request that is not DONE must keep it, and its buffers,
 * until it is.
 */

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
	int64_t submitted_ns;        /* blocking requests, for pyspdk_adapt */
	struct pyspdk_dev *dev;
	struct pyspdk_io *next;
	struct spdk_bdev_io_wait_entry wait;
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
	struct pyspdk_adapt adapt_io;  /* latency of blocking requests (app thread) */
	struct pyspdk_adapt adapt_job; /* latency of jobs (app thread) */
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
static void pyspdk_cq_push(struct pyspdk_cq *cq, struct pyspdk_io *io);

/* The request is over: publish it. After this the caller may free it. */
static void
pyspdk_io_finish(struct pyspdk_io *io)
{
	if (io->cq) {
		pyspdk_cq_push(io->cq, io);
		return;
	}
	if (io->status == 0 && io->dev) {
		pyspdk_adapt_learn(&io->dev->adapt_io, io->submitted_ns, pyspdk_now_ns());
	}
	if (__atomic_exchange_n(&io->state, PYSPDK_IO_DONE, __ATOMIC_ACQ_REL) ==
		   PYSPDK_IO_SLEEPING) {
		pyspdk_futex_wake_all(&io->state);
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
	pyspdk_futex_wake_all(&dev->state);
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

static int pyspdk_io_submit_one(struct pyspdk_io *io);

static void
pyspdk_io_retry(void *arg)
{
	struct pyspdk_io *io = arg;
	struct pyspdk_dev *dev = io->dev;

	if (pyspdk_io_submit_one(io) != 0) {
		/* Refused: its queue-depth slot is free for what waits behind it. */
		pyspdk_io_pump(dev);
	}
}

/* Hand one request to the bdev layer; it holds a queue-depth slot until done.
 * 0 when the bdev layer has it (or will, after -ENOMEM); else the request is
 * finished with the error and its slot is free. */
static int
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
			return 0;
		}
	}
	if (rc != 0) {
		io->status = rc;
		dev->inflight--;
		pyspdk_io_finish(io);
	}
	return rc;
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
	int64_t now;
	int i;

	if (count <= 0) {
		return -EINVAL;
	}
	for (i = 0; i < count; i++) {
		if (__atomic_load_n(&ios[i]->state, __ATOMIC_ACQUIRE) != PYSPDK_IO_DONE) {
			return -EBUSY; /* still the engine's: never queue a request twice */
		}
	}
	pthread_mutex_lock(&dev->lock);
	if (!dev->accepting) {
		pthread_mutex_unlock(&dev->lock);
		return dev->removed ? -ENODEV : -EBADF;
	}
	now = pyspdk_now_ns();
	for (i = 0; i < count; i++) {
		ios[i]->dev = dev;
		ios[i]->submitted_ns = now;
		ios[i]->status = 0;
		__atomic_store_n(&ios[i]->state, PYSPDK_IO_PENDING, __ATOMIC_RELEASE);
		ios[i]->next = i + 1 < count ? ios[i + 1] : NULL;
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

/* The sleeping part of pyspdk_io_wait, after any spin. */
static int
pyspdk_io_sleep(struct pyspdk_io *io, int64_t timeout_ns)
{
	struct timespec deadline;
	uint32_t expected;
	int rc;

	pyspdk_deadline(&deadline, timeout_ns > 0 ? timeout_ns : 0);
	for (;;) {
		if (pyspdk_io_is_done(io)) {
			return 0;
		}
		expected = PYSPDK_IO_PENDING;
		__atomic_compare_exchange_n(&io->state, &expected, PYSPDK_IO_SLEEPING, false,
					    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
		if (expected == PYSPDK_IO_DONE) {
			return 0;
		}
		rc = pyspdk_futex_sleep(&io->state, PYSPDK_IO_SLEEPING, &deadline);
		if (rc != 0) {
			return pyspdk_io_is_done(io) ? 0 : rc;
		}
	}
}

/* Wait at most timeout_ns (spinning spin_ns first; < 0: as the device's
 * latency suggests, see pyspdk_adapt) for a request without a completion
 * queue. 0 when it is over; -ETIMEDOUT or -EINTR otherwise, and the request
 * is still the engine's. */
static int
pyspdk_io_wait(struct pyspdk_io *io, int64_t spin_ns, int64_t timeout_ns)
{
	int64_t lend_ns = pyspdk_adapt_spin(&io->dev->adapt_io, &spin_ns);

	/* Nobody sleeps on the word before this waiter, so PENDING is "not over". */
	pyspdk_spin_while(&io->state, PYSPDK_IO_PENDING, spin_ns < timeout_ns ? spin_ns : timeout_ns,
			  &g_pyspdk_io.spinners, lend_ns);
	return pyspdk_io_sleep(io, timeout_ns);
}

/* Submit one request and wait for it at most timeout_ns: the blocking path,
 * one crossing when the I/O is quick. As pyspdk_io_wait, or the refusal. */
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

/* App thread: close now if idle, else once the bdev layer hands back what it
 * holds. Queued requests end with -ECANCELED. */
static void
pyspdk_dev_close(struct pyspdk_dev *dev)
{
	pyspdk_dev_begin_close(dev, -ECANCELED);
}

/* Any thread: wait at most timeout_ns for the device to be closed. 0, or
 * -ETIMEDOUT / -EINTR while it is not. */
static int
pyspdk_dev_wait_closed(struct pyspdk_dev *dev, int64_t timeout_ns)
{
	struct timespec deadline;
	uint32_t state;
	int rc;

	pyspdk_deadline(&deadline, timeout_ns > 0 ? timeout_ns : 0);
	while ((state = __atomic_load_n(&dev->state, __ATOMIC_ACQUIRE)) != PYSPDK_DEV_CLOSED) {
		rc = pyspdk_futex_sleep(&dev->state, state, &deadline);
		if (rc != 0) {
			return __atomic_load_n(&dev->state, __ATOMIC_ACQUIRE) == PYSPDK_DEV_CLOSED ? 0 : rc;
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

/* What adaptive waits have learnt of the device: the smoothed completion
 * latency of its blocking requests, or of its jobs. */
static int64_t
pyspdk_dev_latency_ns(struct pyspdk_dev *dev, bool jobs)
{
	return __atomic_load_n(jobs ? &dev->adapt_job.latency_ns : &dev->adapt_io.latency_ns,
			       __ATOMIC_RELAXED);
}

/* The spin (in this thread's own CPU time) an adaptive wait from this thread
 * would choose now: 0 on a CPU a reactor polls. */
static int64_t
pyspdk_dev_adaptive_spin_ns(struct pyspdk_dev *dev, bool jobs)
{
	int64_t spin_ns = -1;

	pyspdk_adapt_spin(jobs ? &dev->adapt_job : &dev->adapt_io, &spin_ns);
	return spin_ns;
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

/* Block devices served by Python code (declared in pybdev.h).
 *
 * A bdev module of our own. Each device is an SPDK bdev and an io_device;
 * every SPDK thread that opens it gets a channel with a poller. The way an
 * I/O travels:
 *
 *   submit_request (channel thread)  -> the device's pending queue (locked),
 *                                       its eventfd made readable
 *   pyspdk_pybdev_fetch (any thread) -> taken from the queue in a batch, no GIL
 *   pyspdk_pybdev_commit (any thread)-> pushed on its channel's done list
 *   the channel poller               -> spdk_bdev_io_complete, on the thread
 *                                       that submitted it, as SPDK requires
 *
 * The SPDK side never takes the GIL and never waits for Python. Each I/O
 * carries a ticket, (id << 2) | state, changed only by compare-and-swap, so a
 * late commit for an I/O that timed out or was cancelled (and whose memory
 * SPDK may have reused for another I/O) changes nothing.
 *
 * A device is freed only by pyspdk_pybdev_free, which Python calls once SPDK
 * has let go of it (`gone`) and no worker can touch it any more.
 */
#include <sys/queue.h>

enum {
	PYSPDK_PYBDEV_QUEUED = 0,
	PYSPDK_PYBDEV_FETCHED = 1,
	PYSPDK_PYBDEV_COMMITTED = 2,
	PYSPDK_PYBDEV_EXPIRED = 3, /* timed out or cancelled: the poller failed it */
};

#define PYSPDK_PYBDEV_REQ_WORDS 8

struct pyspdk_pybdev;
struct pyspdk_pybdev_ch;

/* The driver context of every spdk_bdev_io sent to one of our devices. */
struct pyspdk_pybdev_io {
	uint64_t ticket;
	int32_t status; /* 0 or -errno, written before the ticket turns COMMITTED */
	int op;
	uint64_t submitted;
	struct spdk_bdev_io *bdev_io;
	struct pyspdk_pybdev_ch *ch;
	TAILQ_ENTRY(pyspdk_pybdev_io) pending_link;   /* pb->pending, under pb->lock */
	TAILQ_ENTRY(pyspdk_pybdev_io) outstanding_link; /* ch->outstanding, channel thread */
	struct pyspdk_pybdev_io *done_next;             /* ch->done, under ch->lock */
};

struct pyspdk_pybdev_ch {
	struct pyspdk_pybdev *pb;
	struct spdk_poller *poller;
	TAILQ_HEAD(, pyspdk_pybdev_io) outstanding;
	pthread_mutex_t lock;
	struct pyspdk_pybdev_io *done;
	uint32_t done_pending;
};

struct pyspdk_pybdev {
	struct spdk_bdev bdev;
	uint32_t ops;          /* bit (1 << PYSPDK_IO_*) per supported operation */
	uint64_t timeout_ticks; /* 0: no timeout */
	pthread_mutex_t lock;  /* guards pending and signaled */
	TAILQ_HEAD(, pyspdk_pybdev_io) pending;
	uint32_t queued;
	bool signaled;
	int efd;
	uint32_t accepting;    /* 0 once cancelled: new I/O fails at once */
	uint32_t cancel_all;   /* the pollers fail every outstanding I/O */
	uint32_t stopping;     /* fetch returns -ESHUTDOWN */
	uint32_t unregistered; /* spdk_bdev_unregister's callback ran */
	int unregister_rc;
	uint32_t gone;         /* the io_device is unregistered: SPDK holds nothing */
	uint64_t expired;      /* I/Os failed by timeout or cancel */
};

static uint64_t pyspdk_pybdev_next_id = 1;

static int
pyspdk_pybdev_module_init(void)
{
	return 0;
}

static int
pyspdk_pybdev_ctx_size(void)
{
	return sizeof(struct pyspdk_pybdev_io);
}

static struct spdk_bdev_module pyspdk_pybdev_module = {
	.name = "pyspdk_python",
	.module_init = pyspdk_pybdev_module_init,
	.get_ctx_size = pyspdk_pybdev_ctx_size,
};

SPDK_BDEV_MODULE_REGISTER(pyspdk_python, &pyspdk_pybdev_module)

static int
pyspdk_pybdev_op(enum spdk_bdev_io_type type)
{
	switch (type) {
	case SPDK_BDEV_IO_TYPE_READ:
		return PYSPDK_IO_READ;
	case SPDK_BDEV_IO_TYPE_WRITE:
		return PYSPDK_IO_WRITE;
	case SPDK_BDEV_IO_TYPE_FLUSH:
		return PYSPDK_IO_FLUSH;
	case SPDK_BDEV_IO_TYPE_UNMAP:
		return PYSPDK_IO_UNMAP;
	case SPDK_BDEV_IO_TYPE_WRITE_ZEROES:
		return PYSPDK_IO_WRITE_ZEROES;
	case SPDK_BDEV_IO_TYPE_RESET:
		return PYSPDK_IO_RESET;
	default:
		return -1;
	}
}

static void
pyspdk_pybdev_finish(struct pyspdk_pybdev_io *io, int status)
{
	TAILQ_REMOVE(&io->ch->outstanding, io, outstanding_link);
	if (status == 0) {
		spdk_bdev_io_complete(io->bdev_io, SPDK_BDEV_IO_STATUS_SUCCESS);
	} else {
		/* Carries the errno: BlockDevice reports it, ublk hands it to the kernel. */
		spdk_bdev_io_complete_aio_status(io->bdev_io, status);
	}
}

static void
pyspdk_pybdev_signal(struct pyspdk_pybdev *pb)
{
	uint64_t one = 1;

	(void)!write(pb->efd, &one, sizeof(one));
}

/* Channel thread: hand the I/O to Python. */
static void
pyspdk_pybdev_enqueue(struct pyspdk_pybdev_io *io)
{
	struct pyspdk_pybdev *pb = io->ch->pb;
	bool signal;

	pthread_mutex_lock(&pb->lock);
	TAILQ_INSERT_TAIL(&pb->pending, io, pending_link);
	__atomic_store_n(&pb->queued, pb->queued + 1, __ATOMIC_RELEASE);
	signal = !pb->signaled;
	pb->signaled = true;
	pthread_mutex_unlock(&pb->lock);
	if (signal) {
		pyspdk_pybdev_signal(pb);
	}
}

static void
pyspdk_pybdev_got_buf(struct spdk_io_channel *ch, struct spdk_bdev_io *bdev_io, bool success)
{
	struct pyspdk_pybdev_io *io = (struct pyspdk_pybdev_io *)bdev_io->driver_ctx;

	(void)ch;
	if (!success) {
		pyspdk_pybdev_finish(io, -ENOMEM);
		return;
	}
	pyspdk_pybdev_enqueue(io);
}

static void
pyspdk_pybdev_submit(struct spdk_io_channel *_ch, struct spdk_bdev_io *bdev_io)
{
	struct pyspdk_pybdev_ch *ch = spdk_io_channel_get_ctx(_ch);
	struct pyspdk_pybdev *pb = ch->pb;
	struct pyspdk_pybdev_io *io = (struct pyspdk_pybdev_io *)bdev_io->driver_ctx;
	uint64_t id = __atomic_fetch_add(&pyspdk_pybdev_next_id, 1, __ATOMIC_RELAXED);

	io->bdev_io = bdev_io;
	io->ch = ch;
	io->op = pyspdk_pybdev_op(bdev_io->type);
	io->status = 0;
	io->submitted = spdk_get_ticks();
	io->done_next = NULL;
	__atomic_store_n(&io->ticket, (id << 2) | PYSPDK_PYBDEV_QUEUED, __ATOMIC_RELEASE);
	TAILQ_INSERT_TAIL(&ch->outstanding, io, outstanding_link);
	if (io->op < 0 || !(pb->ops & (1u << io->op))) {
		pyspdk_pybdev_finish(io, -ENOTSUP);
		return;
	}
	if (!__atomic_load_n(&pb->accepting, __ATOMIC_ACQUIRE)) {
		pyspdk_pybdev_finish(io, -ECANCELED);
		return;
	}
	if (io->op == PYSPDK_IO_READ && bdev_io->u.bdev.iovs[0].iov_base == NULL) {
		spdk_bdev_io_get_buf(bdev_io, pyspdk_pybdev_got_buf,
				     bdev_io->u.bdev.num_blocks * pb->bdev.blocklen);
		return;
	}
	pyspdk_pybdev_enqueue(io);
}

/* Channel thread: fail `io` if it is overdue or the device cancels everything.
 * Returns false when it is still running and not overdue. */
static bool
pyspdk_pybdev_expire(struct pyspdk_pybdev *pb, struct pyspdk_pybdev_io *io, uint64_t now,
		     bool cancel)
{
	uint64_t ticket = __atomic_load_n(&io->ticket, __ATOMIC_ACQUIRE);
	uint32_t state = ticket & 3;
	bool overdue = pb->timeout_ticks && now - io->submitted > pb->timeout_ticks;
	bool taken = false;

	if (!cancel && !overdue) {
		return false;
	}
	if (state == PYSPDK_PYBDEV_QUEUED) {
		pthread_mutex_lock(&pb->lock);
		/* Still queued under the lock: no worker can fetch it now. */
		if ((__atomic_load_n(&io->ticket, __ATOMIC_ACQUIRE) & 3) == PYSPDK_PYBDEV_QUEUED) {
			TAILQ_REMOVE(&pb->pending, io, pending_link);
			__atomic_store_n(&pb->queued, pb->queued - 1, __ATOMIC_RELEASE);
			__atomic_store_n(&io->ticket, (ticket & ~3ull) | PYSPDK_PYBDEV_EXPIRED,
					 __ATOMIC_RELEASE);
			taken = true;
		}
		pthread_mutex_unlock(&pb->lock);
		if (!taken) {
			ticket = __atomic_load_n(&io->ticket, __ATOMIC_ACQUIRE);
			state = ticket & 3;
		}
	}
	if (!taken && state == PYSPDK_PYBDEV_FETCHED) {
		taken = __atomic_compare_exchange_n(&io->ticket, &ticket,
						    (ticket & ~3ull) | PYSPDK_PYBDEV_EXPIRED, false,
						    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
	}
	if (!taken) {
		return false; /* committed meanwhile: it is on the done list */
	}
	__atomic_add_fetch(&pb->expired, 1, __ATOMIC_RELAXED);
	pyspdk_pybdev_finish(io, cancel && !overdue ? -ECANCELED : -ETIMEDOUT);
	return true;
}

static int
pyspdk_pybdev_poll(void *ctx)
{
	struct pyspdk_pybdev_ch *ch = ctx;
	struct pyspdk_pybdev *pb = ch->pb;
	struct pyspdk_pybdev_io *io, *next;
	int count = 0;
	uint64_t now;
	bool cancel;

	if (__atomic_load_n(&ch->done_pending, __ATOMIC_ACQUIRE)) {
		pthread_mutex_lock(&ch->lock);
		io = ch->done;
		ch->done = NULL;
		__atomic_store_n(&ch->done_pending, 0, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&ch->lock);
		for (; io; io = next) {
			next = io->done_next;
			pyspdk_pybdev_finish(io, io->status);
			count++;
		}
	}
	cancel = __atomic_load_n(&pb->cancel_all, __ATOMIC_ACQUIRE);
	if ((pb->timeout_ticks || cancel) && !TAILQ_EMPTY(&ch->outstanding)) {
		now = spdk_get_ticks();
		TAILQ_FOREACH_SAFE(io, &ch->outstanding, outstanding_link, next) {
			if (pyspdk_pybdev_expire(pb, io, now, cancel)) {
				count++;
			} else if (!cancel) {
				break; /* oldest first: the rest are younger */
			}
		}
	}
	return count ? SPDK_POLLER_BUSY : SPDK_POLLER_IDLE;
}

static int
pyspdk_pybdev_ch_create(void *io_device, void *ctx)
{
	struct pyspdk_pybdev_ch *ch = ctx;

	ch->pb = io_device;
	TAILQ_INIT(&ch->outstanding);
	pthread_mutex_init(&ch->lock, NULL);
	ch->done = NULL;
	ch->done_pending = 0;
	ch->poller = spdk_poller_register(pyspdk_pybdev_poll, ch, 0);
	return ch->poller ? 0 : -ENOMEM;
}

static void
pyspdk_pybdev_ch_destroy(void *io_device, void *ctx)
{
	struct pyspdk_pybdev_ch *ch = ctx;

	(void)io_device;
	spdk_poller_unregister(&ch->poller);
	pthread_mutex_destroy(&ch->lock);
}

static void
pyspdk_pybdev_io_device_gone(void *io_device)
{
	struct pyspdk_pybdev *pb = io_device;

	__atomic_store_n(&pb->gone, 1, __ATOMIC_RELEASE);
	pyspdk_pybdev_signal(pb);
}

static int
pyspdk_pybdev_destruct(void *ctx)
{
	struct pyspdk_pybdev *pb = ctx;

	spdk_io_device_unregister(pb, pyspdk_pybdev_io_device_gone);
	return 0;
}

static bool
pyspdk_pybdev_io_type_supported(void *ctx, enum spdk_bdev_io_type type)
{
	struct pyspdk_pybdev *pb = ctx;
	int op = pyspdk_pybdev_op(type);

	return op >= 0 && (pb->ops & (1u << op));
}

static struct spdk_io_channel *
pyspdk_pybdev_get_io_channel(void *ctx)
{
	return spdk_get_io_channel(ctx);
}

static const struct spdk_bdev_fn_table pyspdk_pybdev_fn_table = {
	.destruct = pyspdk_pybdev_destruct,
	.submit_request = pyspdk_pybdev_submit,
	.io_type_supported = pyspdk_pybdev_io_type_supported,
	.get_io_channel = pyspdk_pybdev_get_io_channel,
};

static void
pyspdk_pybdev_free(struct pyspdk_pybdev *pb)
{
	if (pb) {
		if (pb->efd >= 0) {
			close(pb->efd);
		}
		pthread_mutex_destroy(&pb->lock);
		free(pb->bdev.name);
		free(pb);
	}
}

/* App thread. */
static struct pyspdk_pybdev *
pyspdk_pybdev_create(const char *name, uint32_t block_size, uint64_t num_blocks, uint32_t ops,
		     int64_t timeout_ns, int *rc)
{
	struct pyspdk_pybdev *pb = calloc(1, sizeof(*pb));

	if (!pb) {
		*rc = -ENOMEM;
		return NULL;
	}
	pb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pb->bdev.name = strdup(name);
	if (pb->efd < 0 || !pb->bdev.name) {
		*rc = pb->efd < 0 ? -errno : -ENOMEM;
		pyspdk_pybdev_free(pb);
		return NULL;
	}
	pthread_mutex_init(&pb->lock, NULL);
	TAILQ_INIT(&pb->pending);
	pb->ops = ops;
	pb->accepting = 1;
	pb->timeout_ticks = timeout_ns > 0 ?
			    (uint64_t)((double)timeout_ns * spdk_get_ticks_hz() / 1e9) : 0;
	pb->bdev.product_name = "Python bdev";
	pb->bdev.blocklen = block_size;
	pb->bdev.blockcnt = num_blocks;
	pb->bdev.write_cache = (ops & (1u << PYSPDK_IO_FLUSH)) ? 1 : 0;
	pb->bdev.ctxt = pb;
	pb->bdev.fn_table = &pyspdk_pybdev_fn_table;
	pb->bdev.module = &pyspdk_pybdev_module;
	spdk_io_device_register(pb, pyspdk_pybdev_ch_create, pyspdk_pybdev_ch_destroy,
			       sizeof(struct pyspdk_pybdev_ch), name);
	*rc = spdk_bdev_register(&pb->bdev);
	if (*rc != 0) {
		/* Never registered: SPDK calls no destruct. Python frees it once gone. */
		spdk_io_device_unregister(pb, pyspdk_pybdev_io_device_gone);
	}
	return pb;
}

static void
pyspdk_pybdev_unregister_done(void *ctx, int rc)
{
	struct pyspdk_pybdev *pb = ctx;

	pb->unregister_rc = rc;
	__atomic_store_n(&pb->unregistered, 1, __ATOMIC_RELEASE);
}

/* App thread. */
static void
pyspdk_pybdev_unregister(struct pyspdk_pybdev *pb)
{
	spdk_bdev_unregister(&pb->bdev, pyspdk_pybdev_unregister_done, pb);
}

/* Any thread: fail every I/O not yet answered (the pollers do it) and refuse new ones. */
static void
pyspdk_pybdev_cancel(struct pyspdk_pybdev *pb)
{
	__atomic_store_n(&pb->accepting, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&pb->cancel_all, 1, __ATOMIC_RELEASE);
}

/* Any thread: make every fetch return -ESHUTDOWN from now on. */
static void
pyspdk_pybdev_stop_workers(struct pyspdk_pybdev *pb)
{
	__atomic_store_n(&pb->stopping, 1, __ATOMIC_RELEASE);
	pyspdk_pybdev_signal(pb);
}

static int
pyspdk_pybdev_fd(struct pyspdk_pybdev *pb)
{
	return pb->efd;
}

static int
pyspdk_pybdev_state(struct pyspdk_pybdev *pb, int what)
{
	switch (what) {
	case 0:
		return (int)__atomic_load_n(&pb->unregistered, __ATOMIC_ACQUIRE);
	case 1:
		return (int)__atomic_load_n(&pb->gone, __ATOMIC_ACQUIRE);
	case 2:
		return pb->unregister_rc;
	case 3:
		return (int)__atomic_load_n(&pb->queued, __ATOMIC_ACQUIRE);
	case 4:
		return (int)__atomic_load_n(&pb->expired, __ATOMIC_RELAXED);
	default:
		return -EINVAL;
	}
}

/* Any thread, without the GIL. Takes up to max queued I/Os, waiting at most
 * timeout_ns (spinning spin_ns first) for the first. Each fills
 * PYSPDK_PYBDEV_REQ_WORDS words of out: io, ticket, op, offset (bytes),
 * length (bytes), iovcnt, iovs (struct iovec *), the first iov's base (for
 * reads and writes; 0 otherwise).
 * Returns the count, 0 (nothing in time), or -ESHUTDOWN once workers stop. */
static int
pyspdk_pybdev_fetch(struct pyspdk_pybdev *pb, uint64_t *out, int max, int64_t spin_ns,
		    int64_t timeout_ns)
{
	struct timespec spin_end;
	struct pollfd pfd = { .fd = pb->efd, .events = POLLIN };
	struct pyspdk_pybdev_io *io;
	struct spdk_bdev_io *bdev_io;
	uint64_t drained, ticket, *w;
	uint32_t blocklen = pb->bdev.blocklen;
	int n = 0;

	if (__atomic_load_n(&pb->stopping, __ATOMIC_ACQUIRE)) {
		return -ESHUTDOWN;
	}
	if (timeout_ns > 0 && __atomic_load_n(&pb->queued, __ATOMIC_ACQUIRE) == 0) {
		pyspdk_deadline(&spin_end, spin_ns > 0 ? spin_ns : 0);
		while (__atomic_load_n(&pb->queued, __ATOMIC_ACQUIRE) == 0 &&
		       pyspdk_ns_left(&spin_end) > 0) {
			pyspdk_cpu_relax();
		}
		if (__atomic_load_n(&pb->queued, __ATOMIC_ACQUIRE) == 0) {
			int ms = (int)((timeout_ns + 999999) / 1000000);

			if (poll(&pfd, 1, ms) < 0 && errno != EINTR) {
				return -errno;
			}
		}
		if (__atomic_load_n(&pb->stopping, __ATOMIC_ACQUIRE)) {
			return -ESHUTDOWN;
		}
	}
	pthread_mutex_lock(&pb->lock);
	while (n < max && (io = TAILQ_FIRST(&pb->pending)) != NULL) {
		TAILQ_REMOVE(&pb->pending, io, pending_link);
		ticket = (__atomic_load_n(&io->ticket, __ATOMIC_ACQUIRE) & ~3ull) |
			 PYSPDK_PYBDEV_FETCHED;
		__atomic_store_n(&io->ticket, ticket, __ATOMIC_RELEASE);
		bdev_io = io->bdev_io;
		w = out + (size_t)n * PYSPDK_PYBDEV_REQ_WORDS;
		w[0] = (uint64_t)(uintptr_t)io;
		w[1] = ticket;
		w[2] = (uint64_t)io->op;
		if (io->op == PYSPDK_IO_RESET) {
			w[3] = w[4] = w[5] = w[6] = w[7] = 0;
		} else {
			w[3] = bdev_io->u.bdev.offset_blocks * blocklen;
			w[4] = bdev_io->u.bdev.num_blocks * blocklen;
			if (io->op == PYSPDK_IO_READ || io->op == PYSPDK_IO_WRITE) {
				w[5] = (uint64_t)bdev_io->u.bdev.iovcnt;
				w[6] = (uint64_t)(uintptr_t)bdev_io->u.bdev.iovs;
				w[7] = (uint64_t)(uintptr_t)bdev_io->u.bdev.iovs[0].iov_base;
			} else {
				w[5] = w[6] = w[7] = 0;
			}
		}
		n++;
	}
	__atomic_store_n(&pb->queued, pb->queued - n, __ATOMIC_RELEASE);
	if (TAILQ_EMPTY(&pb->pending)) {
		pb->signaled = false;
		(void)!read(pb->efd, &drained, sizeof(drained));
	}
	pthread_mutex_unlock(&pb->lock);
	return n;
}

/* Any thread, without the GIL. Commit count results: words holds each I/O's
 * PYSPDK_PYBDEV_REQ_WORDS words as fetch wrote them (only the io and its
 * ticket are read), statuses[i] its result (0 or -errno). A result for an
 * I/O that expired meanwhile is dropped. Returns how many were taken. */
static int
pyspdk_pybdev_commit(struct pyspdk_pybdev *pb, const uint64_t *words, const int32_t *statuses,
		     int count)
{
	struct pyspdk_pybdev_io *io;
	struct pyspdk_pybdev_ch *ch;
	const uint64_t *w;
	uint64_t ticket;
	int i, taken = 0;

	if (__atomic_load_n(&pb->gone, __ATOMIC_ACQUIRE)) {
		return 0;
	}
	for (i = 0; i < count; i++) {
		w = words + (size_t)i * PYSPDK_PYBDEV_REQ_WORDS;
		io = (struct pyspdk_pybdev_io *)(uintptr_t)w[0];
		ticket = w[1];
		/* Claim it first: until then its memory may be another I/O's. */
		if (!__atomic_compare_exchange_n(&io->ticket, &ticket,
						 (ticket & ~3ull) | PYSPDK_PYBDEV_COMMITTED, false,
						 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			continue;
		}
		io->status = statuses[i];
		ch = io->ch;
		pthread_mutex_lock(&ch->lock);
		io->done_next = ch->done;
		ch->done = io;
		__atomic_store_n(&ch->done_pending, 1, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&ch->lock);
		taken++;
	}
	return taken;
}

/* Block devices served by Python code (declared in pybdev.h).
 *
 * A bdev module of our own. Each device is an SPDK bdev and an io_device;
 * every SPDK thread that opens it gets a channel with a poller. The way an
 * I/O travels:
 *
 *   submit_request (channel thread)  -> onto the device's incoming ring
 *                                       (lock-free); its eventfd is written
 *                                       only when a worker sleeps
 *   pyspdk_pybdev_fetch (any thread) -> taken in a batch, in submission order,
 *                                       under the workers' lock, without the GIL
 *   pyspdk_pybdev_commit (any thread)-> onto its channel's done ring (or, when
 *                                       that is full, done stack), lock-free
 *   the channel poller               -> spdk_bdev_io_complete, on the thread
 *                                       that submitted it, as SPDK requires
 *
 * The SPDK side never takes the GIL and never waits for Python, nor for a
 * lock a Python thread may hold: a worker preempted inside fetch would
 * otherwise put the reactor to sleep on a futex. The only lock it touches,
 * to fail queued I/Os that timed out, it only tries. Each I/O carries a
 * ticket, (id << 3) | state, changed only by compare-and-swap (or, for a
 * queued one, under the workers' lock), so a late commit for an I/O that
 * timed out or was cancelled (and whose memory SPDK may have reused for
 * another I/O) changes nothing.
 *
 * Python never sees SPDK's memory. fetch lays each read or write out in a
 * bounce buffer the worker owns (its arena): a write's data is copied in,
 * a read's place is zeroed, while the I/O is COPYING (claimed: no timeout
 * or cancel can complete it, so SPDK cannot take its buffers back in the
 * middle). commit copies a read's data out only after it has claimed the
 * I/O (COMMITTED), so an answer that comes after a timeout, or a backend
 * that writes through a view it kept, writes into the arena and nowhere else.
 *
 * A device is freed only by pyspdk_pybdev_free, which Python calls once SPDK
 * has let go of it (`gone`) and no worker can touch it any more.
 */
#include "pybdev.h"

#include "spdk/bdev_module.h"
#include "spdk/env.h"
#include "spdk/thread.h"

#include "bdev_io.h"
#include "wait.h"

#include <sys/eventfd.h>
#include <sys/queue.h>

enum {
	PYSPDK_PYBDEV_QUEUED = 0,
	PYSPDK_PYBDEV_FETCHED = 1,
	PYSPDK_PYBDEV_COMMITTED = 2,
	PYSPDK_PYBDEV_EXPIRED = 3, /* timed out, cancelled or interrupted: the poller failed it */
	PYSPDK_PYBDEV_COPYING = 4, /* fetch copies it into the arena: not to be failed yet */
};
#define PYSPDK_PYBDEV_STATE 7ull  /* the ticket's state bits */
#define PYSPDK_PYBDEV_ID_SHIFT 3

#define PYSPDK_PYBDEV_RING 16384     /* I/Os waiting for a worker at most */
#define PYSPDK_PYBDEV_DONE_RING 4096 /* per channel; more committed go on a stack */

struct pyspdk_pybdev_ch;

/* The driver context of every spdk_bdev_io sent to one of our devices (SPDK
 * aligns it to a cache line). The first line holds all a worker reads and
 * writes for an I/O, copied from the spdk_bdev_io at submission, so that the
 * I/O's memory crosses between the cores once each way. */
struct pyspdk_pybdev_io {
	uint64_t ticket;
	int32_t status; /* 0 or -errno, written before the ticket turns COMMITTED */
	int32_t op;
	uint64_t offset; /* bytes */
	uint64_t length; /* bytes */
	uint64_t iovcnt; /* reads and writes, else 0 */
	struct iovec *iovs;
	struct pyspdk_pybdev_ch *ch;
	struct pyspdk_pybdev_io *done_next;             /* ch->done, lock-free */
	/* The channel thread's, and the queue's. */
	uint64_t submitted; /* ticks; only with a timeout */
	struct spdk_bdev_io *bdev_io;
	TAILQ_ENTRY(pyspdk_pybdev_io) pending_link;   /* pb->pending, under pb->lock */
	TAILQ_ENTRY(pyspdk_pybdev_io) outstanding_link; /* ch->outstanding, channel thread */
};
_Static_assert(offsetof(struct pyspdk_pybdev_io, submitted) == 64,
	       "a worker's fields fill exactly the first cache line");

/* Interrupt mode: what wakes a channel's thread, owned by the device (which
 * outlives its channels and every worker), so that a worker may write it
 * after the I/O it committed was completed and the channel is gone. */
struct pyspdk_pybdev_waker {
	int efd;
	uint32_t signaled;      /* efd written and not yet read */
	bool used;              /* by a live channel */
	struct pyspdk_pybdev_waker *next;
};

struct pyspdk_pybdev_ch {
	struct pyspdk_pybdev *pb;
	struct spdk_poller *poller;
	/* Interrupt mode only (else NULL): the event that runs the poller, and a
	 * timer for timeouts. */
	struct pyspdk_pybdev_waker *waker;
	struct spdk_interrupt *intr;
	struct spdk_poller *ticker;
	bool retry;                    /* an expiry must be tried again soon */
	TAILQ_HEAD(, pyspdk_pybdev_io) outstanding;
	struct spdk_ring *done_ring;   /* committed: workers enqueue, the poller dequeues */
	struct pyspdk_pybdev_io *done; /* committed when the ring was full, newest first */
	uint64_t interrupted;          /* the last pb->interrupt_id this channel has served */
};

/* Laid out in cache lines by who writes them: read-mostly settings, what the
 * channel threads write on every I/O, and the workers' lock. */
struct pyspdk_pybdev {
	struct spdk_bdev bdev;
	uint32_t ops;          /* bit (1 << PYSPDK_IO_*) per supported operation */
	uint64_t timeout_ticks; /* 0: no timeout */
	int efd;
	struct spdk_ring *incoming; /* I/Os submitted and not yet fetched, oldest first */
	uint32_t accepting;    /* 0 once cancelled: new I/O fails at once */
	uint32_t cancel_all;   /* the pollers fail every outstanding I/O */
	uint32_t stopping;     /* fetch returns -ESHUTDOWN */
	uint64_t interrupt_id; /* every I/O of a lower id fails with EINTR (Ctrl-C) */
	/* Counted before an I/O goes on the ring, uncounted when it is taken. */
	int32_t queued __attribute__((aligned(PYSPDK_CACHE_LINE)));
	uint32_t sleepers;     /* workers (or an event loop: always 1) asleep on efd */
	uint32_t signaled;     /* efd written and not yet drained */
	pthread_mutex_t lock __attribute__((aligned(PYSPDK_CACHE_LINE))); /* guards pending */
	TAILQ_HEAD(, pyspdk_pybdev_io) pending; /* taken off the ring to fail one: the oldest */
	uint32_t unregistered; /* spdk_bdev_unregister's callback ran */
	int unregister_rc;
	uint32_t gone;         /* the io_device is unregistered: SPDK holds nothing */
	uint64_t expired;      /* I/Os failed by timeout or cancel */
	pthread_mutex_t wakers_lock; /* guards wakers */
	struct pyspdk_pybdev_waker *wakers; /* interrupt mode: one per channel, made or reused */
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

/* Any thread: wake the channel thread `waker` belongs to (interrupt mode). */
static void
pyspdk_pybdev_kick(struct pyspdk_pybdev_waker *waker)
{
	uint64_t one = 1;

	if (waker && !__atomic_exchange_n(&waker->signaled, 1, __ATOMIC_SEQ_CST)) {
		(void)!write(waker->efd, &one, sizeof(one));
	}
}

/* Any thread: wake every channel of the device (a cancel or an interrupt for
 * their pollers to serve). */
static void
pyspdk_pybdev_kick_all(struct pyspdk_pybdev *pb)
{
	struct pyspdk_pybdev_waker *waker;

	pthread_mutex_lock(&pb->wakers_lock);
	for (waker = pb->wakers; waker; waker = waker->next) {
		if (waker->used) {
			pyspdk_pybdev_kick(waker);
		}
	}
	pthread_mutex_unlock(&pb->wakers_lock);
}

static void
pyspdk_pybdev_signal(struct pyspdk_pybdev *pb)
{
	uint64_t one = 1;

	(void)!write(pb->efd, &one, sizeof(one));
}

/* Any thread: make efd readable unless it already is (or is about to be). */
static void
pyspdk_pybdev_wake(struct pyspdk_pybdev *pb)
{
	if (!__atomic_exchange_n(&pb->signaled, 1, __ATOMIC_SEQ_CST)) {
		pyspdk_pybdev_signal(pb);
	}
}

/* Any thread: read efd empty after a wake-up. Read first, then clear: a
 * producer that saw `signaled` set in between has its I/O counted in
 * `queued`, which is checked again, so no wake-up is lost. What is still
 * queued then makes efd readable again: for another sleeping worker, or for
 * an event loop, whose reader takes one batch per call. */
static void
pyspdk_pybdev_drain(struct pyspdk_pybdev *pb)
{
	uint64_t drained;

	if (!__atomic_load_n(&pb->signaled, __ATOMIC_ACQUIRE)) {
		return;
	}
	(void)!read(pb->efd, &drained, sizeof(drained));
	__atomic_store_n(&pb->signaled, 0, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&pb->queued, __ATOMIC_SEQ_CST) > 0) {
		pyspdk_pybdev_wake(pb); /* for a reader that waits on efd alone */
	}
}

/* Channel thread: hand the I/O to Python. Counted before it is queued, so
 * `queued` never goes below the I/Os a worker can take; the count and the
 * sleepers are both sequentially consistent, so either a worker about to
 * sleep sees the count or this sees the sleeper. A full ring (more I/O than
 * PYSPDK_PYBDEV_RING waiting) sends the I/O back to the bdev layer to retry. */
static void
pyspdk_pybdev_enqueue(struct pyspdk_pybdev_io *io)
{
	struct pyspdk_pybdev *pb = io->ch->pb;
	void *obj = io;

	__atomic_add_fetch(&pb->queued, 1, __ATOMIC_SEQ_CST);
	if (spdk_ring_enqueue(pb->incoming, &obj, 1, NULL) != 1) {
		__atomic_sub_fetch(&pb->queued, 1, __ATOMIC_SEQ_CST);
		TAILQ_REMOVE(&io->ch->outstanding, io, outstanding_link);
		spdk_bdev_io_complete(io->bdev_io, SPDK_BDEV_IO_STATUS_NOMEM);
		return;
	}
	if (__atomic_load_n(&pb->sleepers, __ATOMIC_SEQ_CST)) {
		pyspdk_pybdev_wake(pb);
	}
}

/* Under pb->lock: move the whole incoming ring to the end of pending. */
static void
pyspdk_pybdev_take_incoming(struct pyspdk_pybdev *pb)
{
	void *objs[64];
	size_t i, got;

	do {
		got = spdk_ring_dequeue(pb->incoming, objs, SPDK_COUNTOF(objs));
		for (i = 0; i < got; i++) {
			TAILQ_INSERT_TAIL(&pb->pending, (struct pyspdk_pybdev_io *)objs[i], pending_link);
		}
	} while (got == SPDK_COUNTOF(objs));
}

/* Channel thread: copy what a worker needs of the I/O into its first line. */
static void
pyspdk_pybdev_describe(struct pyspdk_pybdev *pb, struct pyspdk_pybdev_io *io,
		       struct spdk_bdev_io *bdev_io)
{
	uint32_t blocklen = pb->bdev.blocklen;

	if (io->op == PYSPDK_IO_READ || io->op == PYSPDK_IO_WRITE) {
		io->iovcnt = (uint64_t)bdev_io->u.bdev.iovcnt;
		io->iovs = bdev_io->u.bdev.iovs;
	} else {
		io->iovcnt = 0;
		io->iovs = NULL;
	}
	if (io->op == PYSPDK_IO_RESET || io->op < 0) {
		io->offset = io->length = 0;
	} else {
		io->offset = bdev_io->u.bdev.offset_blocks * blocklen;
		io->length = bdev_io->u.bdev.num_blocks * blocklen;
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
	/* The bdev layer may have given the I/O other iovecs: take them again. */
	io->iovcnt = (uint64_t)bdev_io->u.bdev.iovcnt;
	io->iovs = bdev_io->u.bdev.iovs;
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
	io->submitted = pb->timeout_ticks ? spdk_get_ticks() : 0;
	io->done_next = NULL;
	pyspdk_pybdev_describe(pb, io, bdev_io);
	__atomic_store_n(&io->ticket, (id << PYSPDK_PYBDEV_ID_SHIFT) | PYSPDK_PYBDEV_QUEUED,
			 __ATOMIC_RELEASE);
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

enum pyspdk_pybdev_expiry {
	PYSPDK_PYBDEV_KEPT,    /* committed meanwhile: the poller completes it from the done ring */
	PYSPDK_PYBDEV_FAILED,  /* failed now */
	PYSPDK_PYBDEV_BUSY,    /* queued while a worker holds the lock, or being copied: try
				* next poll */
};

/* Channel thread: fail `io` now with `status`, unless it was committed meanwhile. */
static enum pyspdk_pybdev_expiry
pyspdk_pybdev_expire(struct pyspdk_pybdev *pb, struct pyspdk_pybdev_io *io, int status)
{
	uint64_t ticket = __atomic_load_n(&io->ticket, __ATOMIC_ACQUIRE);
	uint64_t state = ticket & PYSPDK_PYBDEV_STATE;
	bool taken = false;

	if (state == PYSPDK_PYBDEV_QUEUED) {
		if (pthread_mutex_trylock(&pb->lock) != 0) {
			return PYSPDK_PYBDEV_BUSY;
		}
		/* Still queued under the lock: no worker can fetch it now. This
		 * thread pushed it earlier, so after taking incoming it is on pending
		 * (where fetch also puts back what did not fit its arena). */
		if ((__atomic_load_n(&io->ticket, __ATOMIC_ACQUIRE) & PYSPDK_PYBDEV_STATE) ==
		    PYSPDK_PYBDEV_QUEUED) {
			pyspdk_pybdev_take_incoming(pb);
			TAILQ_REMOVE(&pb->pending, io, pending_link);
			__atomic_sub_fetch(&pb->queued, 1, __ATOMIC_SEQ_CST);
			__atomic_store_n(&io->ticket, (ticket & ~PYSPDK_PYBDEV_STATE) |
					 PYSPDK_PYBDEV_EXPIRED, __ATOMIC_RELEASE);
			taken = true;
		}
		pthread_mutex_unlock(&pb->lock);
		if (!taken) {
			ticket = __atomic_load_n(&io->ticket, __ATOMIC_ACQUIRE);
			state = ticket & PYSPDK_PYBDEV_STATE;
		}
	}
	if (!taken && state == PYSPDK_PYBDEV_COPYING) {
		return PYSPDK_PYBDEV_BUSY; /* fetch is copying its buffers: a moment */
	}
	if (!taken && state == PYSPDK_PYBDEV_FETCHED) {
		taken = __atomic_compare_exchange_n(&io->ticket, &ticket,
						    (ticket & ~PYSPDK_PYBDEV_STATE) |
						    PYSPDK_PYBDEV_EXPIRED, false,
						    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
		if (!taken && (ticket & PYSPDK_PYBDEV_STATE) == PYSPDK_PYBDEV_COPYING) {
			return PYSPDK_PYBDEV_BUSY;
		}
	}
	if (!taken) {
		return PYSPDK_PYBDEV_KEPT; /* committed meanwhile: it is on the done ring */
	}
	__atomic_add_fetch(&pb->expired, 1, __ATOMIC_RELAXED);
	pyspdk_pybdev_finish(io, status);
	return PYSPDK_PYBDEV_FAILED;
}

/* Channel thread: fail what timed out, what a cancel or an interrupt asks to
 * fail. Oldest first: the outstanding list is in submission order, so the
 * first I/O none of them concerns ends the walk. */
static int
pyspdk_pybdev_expire_due(struct pyspdk_pybdev_ch *ch)
{
	struct pyspdk_pybdev *pb = ch->pb;
	struct pyspdk_pybdev_io *io, *next;
	bool cancel = __atomic_load_n(&pb->cancel_all, __ATOMIC_ACQUIRE);
	uint64_t cut = __atomic_load_n(&pb->interrupt_id, __ATOMIC_ACQUIRE);
	bool interrupt = cut > ch->interrupted;
	uint64_t now = 0;
	bool overdue;
	int count = 0, status;

	if (TAILQ_EMPTY(&ch->outstanding)) {
		ch->interrupted = cut;
		return 0;
	}
	if (!pb->timeout_ticks && !cancel && !interrupt) {
		return 0;
	}
	if (pb->timeout_ticks) {
		now = spdk_get_ticks();
	}
	TAILQ_FOREACH_SAFE(io, &ch->outstanding, outstanding_link, next) {
		overdue = pb->timeout_ticks && now - io->submitted > pb->timeout_ticks;
		if (overdue) {
			status = -ETIMEDOUT;
		} else if (interrupt && (__atomic_load_n(&io->ticket, __ATOMIC_RELAXED) >>
					  PYSPDK_PYBDEV_ID_SHIFT) < cut) {
			status = -EINTR;
		} else if (cancel) {
			status = -ECANCELED;
		} else {
			break; /* younger than any timeout, submitted after the interrupt */
		}
		switch (pyspdk_pybdev_expire(pb, io, status)) {
		case PYSPDK_PYBDEV_FAILED:
			count++;
			break;
		case PYSPDK_PYBDEV_BUSY:
			ch->retry = true;
			return count; /* the rest next poll, the interrupt not yet served */
		case PYSPDK_PYBDEV_KEPT:
			break;
		}
	}
	ch->interrupted = cut;
	return count;
}

static int
pyspdk_pybdev_poll(void *ctx)
{
	struct pyspdk_pybdev_ch *ch = ctx;
	struct pyspdk_pybdev_io *io, *next, *oldest = NULL;
	void *objs[64];
	size_t i, got;
	int count = 0;

	do {
		got = spdk_ring_dequeue(ch->done_ring, objs, SPDK_COUNTOF(objs));
		/* The I/Os' first lines come from the workers' cores: ask for all at once. */
		for (i = 0; i < got; i++) {
			__builtin_prefetch(objs[i]);
		}
		for (i = 0; i < got; i++) {
			io = objs[i];
			pyspdk_pybdev_finish(io, io->status);
		}
		count += (int)got;
	} while (got == SPDK_COUNTOF(objs));
	if (__atomic_load_n(&ch->done, __ATOMIC_RELAXED)) {
		io = __atomic_exchange_n(&ch->done, NULL, __ATOMIC_ACQUIRE);
		for (; io; io = next) { /* newest first: complete in commit order */
			next = io->done_next;
			io->done_next = oldest;
			oldest = io;
		}
		for (io = oldest; io; io = next) {
			next = io->done_next;
			pyspdk_pybdev_finish(io, io->status);
			count++;
		}
	}
	count += pyspdk_pybdev_expire_due(ch);
	return count ? SPDK_POLLER_BUSY : SPDK_POLLER_IDLE;
}

/* Interrupt mode: the channel's eventfd is readable (a commit, a cancel or an
 * interrupt). Clear it first, then poll: a kick after this writes it again. */
static int
pyspdk_pybdev_ch_wake(void *ctx)
{
	struct pyspdk_pybdev_ch *ch = ctx;
	uint64_t drained;
	int rc;

	(void)!read(ch->waker->efd, &drained, sizeof(drained));
	__atomic_store_n(&ch->waker->signaled, 0, __ATOMIC_SEQ_CST);
	ch->retry = false;
	rc = pyspdk_pybdev_poll(ch);
	if (ch->retry) {
		pyspdk_pybdev_kick(ch->waker); /* a worker is copying an I/O to expire: soon */
	}
	return rc;
}

/* Interrupt mode, with a timeout: look for I/Os that timed out this often. */
static int
pyspdk_pybdev_tick(void *ctx)
{
	struct pyspdk_pybdev_ch *ch = ctx;

	ch->retry = false;
	return pyspdk_pybdev_poll(ch);
}

/* Interrupt mode: a waker for the channel (a free one of the device's, or a
 * new one), its event, and a timer when I/Os can time out. */
static int
pyspdk_pybdev_ch_interrupt(struct pyspdk_pybdev_ch *ch)
{
	struct pyspdk_pybdev *pb = ch->pb;
	struct pyspdk_pybdev_waker *waker;
	uint64_t period_us;

	pthread_mutex_lock(&pb->wakers_lock);
	for (waker = pb->wakers; waker && waker->used; waker = waker->next) {
	}
	if (!waker) {
		waker = calloc(1, sizeof(*waker));
		if (waker) {
			waker->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
			if (waker->efd < 0) {
				free(waker);
				waker = NULL;
			} else {
				waker->next = pb->wakers;
				pb->wakers = waker;
			}
		}
	}
	if (waker) {
		waker->used = true;
		waker->signaled = 0;
	}
	pthread_mutex_unlock(&pb->wakers_lock);
	if (!waker) {
		return -ENOMEM;
	}
	ch->waker = waker;
	ch->intr = spdk_interrupt_register(waker->efd, pyspdk_pybdev_ch_wake, ch, "pyspdk_pybdev");
	if (!ch->intr) {
		goto fail;
	}
	spdk_poller_register_interrupt(ch->poller, NULL, NULL);
	if (pb->timeout_ticks) {
		/* A quarter of the timeout, within [1 ms, 100 ms]. */
		period_us = pb->timeout_ticks * 1000000 / spdk_get_ticks_hz() / 4;
		period_us = spdk_max(1000, spdk_min(period_us, 100000));
		ch->ticker = spdk_poller_register_named(pyspdk_pybdev_tick, ch, period_us,
							"pyspdk_pybdev_timeouts");
		if (!ch->ticker) {
			spdk_interrupt_unregister(&ch->intr);
			goto fail;
		}
	}
	/* A cancel or an interrupt may predate this channel: serve it now. */
	pyspdk_pybdev_kick(waker);
	return 0;
fail:
	pthread_mutex_lock(&pb->wakers_lock);
	waker->used = false;
	pthread_mutex_unlock(&pb->wakers_lock);
	ch->waker = NULL;
	return -ENOMEM;
}

static int
pyspdk_pybdev_ch_create(void *io_device, void *ctx)
{
	struct pyspdk_pybdev_ch *ch = ctx;

	ch->pb = io_device;
	TAILQ_INIT(&ch->outstanding);
	ch->done = NULL;
	ch->interrupted = __atomic_load_n(&ch->pb->interrupt_id, __ATOMIC_ACQUIRE);
	ch->done_ring = spdk_ring_create(SPDK_RING_TYPE_MP_SC, PYSPDK_PYBDEV_DONE_RING,
					 SPDK_ENV_NUMA_ID_ANY);
	if (!ch->done_ring) {
		return -ENOMEM;
	}
	ch->poller = spdk_poller_register(pyspdk_pybdev_poll, ch, 0);
	if (!ch->poller) {
		spdk_ring_free(ch->done_ring);
		return -ENOMEM;
	}
	if (spdk_interrupt_mode_is_enabled() && pyspdk_pybdev_ch_interrupt(ch) != 0) {
		spdk_poller_unregister(&ch->poller);
		spdk_ring_free(ch->done_ring);
		return -ENOMEM;
	}
	return 0;
}

static void
pyspdk_pybdev_ch_destroy(void *io_device, void *ctx)
{
	struct pyspdk_pybdev_ch *ch = ctx;

	(void)io_device;
	spdk_poller_unregister(&ch->poller);
	spdk_poller_unregister(&ch->ticker);
	if (ch->intr) {
		spdk_interrupt_unregister(&ch->intr);
	}
	if (ch->waker) {
		pthread_mutex_lock(&ch->pb->wakers_lock);
		ch->waker->used = false; /* kept, open, for the next channel or until freed */
		pthread_mutex_unlock(&ch->pb->wakers_lock);
	}
	spdk_ring_free(ch->done_ring);
}

static void
pyspdk_pybdev_io_device_gone(void *io_device)
{
	struct pyspdk_pybdev *pb = io_device;

	__atomic_store_n(&pb->gone, 1, __ATOMIC_RELEASE);
	pyspdk_pybdev_wake(pb);
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

void
pyspdk_pybdev_free(struct pyspdk_pybdev *pb)
{
	if (pb) {
		spdk_ring_free(pb->incoming);
		if (pb->efd >= 0) {
			close(pb->efd);
		}
		pthread_mutex_destroy(&pb->lock);
		while (pb->wakers) {
			struct pyspdk_pybdev_waker *waker = pb->wakers;

			pb->wakers = waker->next;
			close(waker->efd);
			free(waker);
		}
		pthread_mutex_destroy(&pb->wakers_lock);
		free(pb->bdev.name);
		free(pb);
	}
}

/* App thread. */
struct pyspdk_pybdev *
pyspdk_pybdev_create(const char *name, uint32_t block_size, uint64_t num_blocks, uint32_t ops,
		     int64_t timeout_ns, int *rc)
{
	size_t size = (sizeof(struct pyspdk_pybdev) + PYSPDK_CACHE_LINE - 1) &
		      ~(size_t)(PYSPDK_CACHE_LINE - 1);
	struct pyspdk_pybdev *pb = aligned_alloc(PYSPDK_CACHE_LINE, size);

	if (!pb) {
		*rc = -ENOMEM;
		return NULL;
	}
	memset(pb, 0, size);
	pb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pb->bdev.name = strdup(name);
	pb->incoming = spdk_ring_create(SPDK_RING_TYPE_MP_SC, PYSPDK_PYBDEV_RING,
					SPDK_ENV_NUMA_ID_ANY);
	if (pb->efd < 0 || !pb->bdev.name || !pb->incoming) {
		*rc = pb->efd < 0 ? -errno : -ENOMEM;
		pyspdk_pybdev_free(pb);
		return NULL;
	}
	pthread_mutex_init(&pb->lock, NULL);
	pthread_mutex_init(&pb->wakers_lock, NULL);
	TAILQ_INIT(&pb->pending);
	pb->ops = ops;
	pb->accepting = 1;
	pb->timeout_ticks = timeout_ns > 0 ?
			    (uint64_t)((double)timeout_ns * spdk_get_ticks_hz() / 1e9) : 0;
	pb->bdev.product_name = "Python bdev";
	pb->bdev.blocklen = block_size;
	pb->bdev.blockcnt = num_blocks;
	pb->bdev.max_rw_size = PYSPDK_PYBDEV_MAX_IO / block_size;
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

/* Once gone, while SPDK's environment is still up (the runtime's teardown):
 * give back the device's DPDK memory, so that freeing the rest later, after
 * the environment has ended, needs none of it. Nothing uses the ring once
 * gone: no channel is left to queue on it, and with nothing queued no fetch
 * looks at it. */
void
pyspdk_pybdev_release_env(struct pyspdk_pybdev *pb)
{
	if (pb->incoming && __atomic_load_n(&pb->gone, __ATOMIC_ACQUIRE)) {
		spdk_ring_free(pb->incoming);
		pb->incoming = NULL;
	}
}

/* App thread. */
void
pyspdk_pybdev_unregister(struct pyspdk_pybdev *pb)
{
	spdk_bdev_unregister(&pb->bdev, pyspdk_pybdev_unregister_done, pb);
}

/* Any thread: fail every I/O not yet answered (the pollers do it) and refuse new ones. */
void
pyspdk_pybdev_cancel(struct pyspdk_pybdev *pb)
{
	__atomic_store_n(&pb->accepting, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&pb->cancel_all, 1, __ATOMIC_RELEASE);
	pyspdk_pybdev_kick_all(pb);
}

/* Any thread (a signal handler's, too: it only stores): fail every I/O
 * submitted until now with -EINTR, as a timeout would, and serve on. */
void
pyspdk_pybdev_interrupt(struct pyspdk_pybdev *pb)
{
	__atomic_store_n(&pb->interrupt_id,
			 __atomic_load_n(&pyspdk_pybdev_next_id, __ATOMIC_SEQ_CST), __ATOMIC_RELEASE);
	pyspdk_pybdev_kick_all(pb);
}

/* Any thread: make every fetch return -ESHUTDOWN from now on. */
void
pyspdk_pybdev_stop_workers(struct pyspdk_pybdev *pb)
{
	__atomic_store_n(&pb->stopping, 1, __ATOMIC_RELEASE);
	pyspdk_pybdev_wake(pb);
}

/* Any thread: an event loop waits on efd from now on, so every I/O queued
 * makes it readable (as if a worker always slept). */
void
pyspdk_pybdev_watch_fd(struct pyspdk_pybdev *pb)
{
	__atomic_add_fetch(&pb->sleepers, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&pb->queued, __ATOMIC_SEQ_CST) > 0) {
		pyspdk_pybdev_wake(pb);
	}
}

int
pyspdk_pybdev_fd(struct pyspdk_pybdev *pb)
{
	return pb->efd;
}

int
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

/* Any thread, without the GIL: wait until an I/O is queued, spinning
 * spin_ns first and then sleeping on efd, at most timeout_ns in all. */
static void
pyspdk_pybdev_wait(struct pyspdk_pybdev *pb, int64_t spin_ns, int64_t timeout_ns)
{
	struct timespec spin_end;
	struct pollfd pfd = { .fd = pb->efd, .events = POLLIN };
	unsigned int spins = 0;
	int ms;

	if (spin_ns > 0) {
		pyspdk_deadline(&spin_end, spin_ns);
		while (__atomic_load_n(&pb->queued, __ATOMIC_ACQUIRE) <= 0) {
			pyspdk_cpu_relax();
			if ((++spins & 15) == 0) {
				if (pyspdk_ns_left(&spin_end) <= 0) {
					break;
				}
				/* The thread that submits (read_many's caller, say) may
				 * share this core: let it run rather than spin past it. */
				sched_yield();
			}
		}
	}
	if (__atomic_load_n(&pb->queued, __ATOMIC_ACQUIRE) > 0) {
		return;
	}
	__atomic_add_fetch(&pb->sleepers, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&pb->queued, __ATOMIC_SEQ_CST) <= 0 &&
	    !__atomic_load_n(&pb->stopping, __ATOMIC_ACQUIRE)) {
		ms = (int)((timeout_ns + 999999) / 1000000);
		(void)poll(&pfd, 1, ms); /* EINTR: the caller fetches again */
	}
	__atomic_sub_fetch(&pb->sleepers, 1, __ATOMIC_SEQ_CST);
	/* efd is drained after the I/Os are taken, when fewer are left to wake others for. */
}

/* Scatter `length` bytes of `src` over the I/O's buffers. */
static void
pyspdk_pybdev_to_iovs(const struct pyspdk_pybdev_io *io, const char *src, uint64_t length)
{
	uint64_t i, n, at = 0;

	for (i = 0; i < io->iovcnt && at < length; i++) {
		n = spdk_min(io->iovs[i].iov_len, length - at);
		memcpy(io->iovs[i].iov_base, src + at, n);
		at += n;
	}
}

/* Gather `length` bytes of the I/O's buffers into `dst`. */
static void
pyspdk_pybdev_from_iovs(const struct pyspdk_pybdev_io *io, char *dst, uint64_t length)
{
	uint64_t i, n, at = 0;

	for (i = 0; i < io->iovcnt && at < length; i++) {
		n = spdk_min(io->iovs[i].iov_len, length - at);
		memcpy(dst + at, io->iovs[i].iov_base, n);
		at += n;
	}
	if (at < length) {
		memset(dst + at, 0, length - at);
	}
}

/* Row w of fetch's output for `io`, whose place in the arena starts at lo. */
static void
pyspdk_pybdev_row(uint64_t *w, const struct pyspdk_pybdev_io *io, uint64_t lo)
{
	w[0] = (uint64_t)(uintptr_t)io;
	w[1] = (__atomic_load_n(&io->ticket, __ATOMIC_RELAXED) & ~PYSPDK_PYBDEV_STATE) |
	       PYSPDK_PYBDEV_FETCHED;
	w[2] = (uint64_t)io->op;
	w[3] = io->offset;
	w[4] = io->length;
	w[5] = lo;
	w[6] = io->iovcnt ? lo + io->length : lo;
	w[7] = io->iovcnt;
}

/* Any thread, without the GIL. Takes up to max (at most
 * PYSPDK_PYBDEV_MAX_BATCH) queued I/Os, oldest first, waiting at most
 * timeout_ns (spinning spin_ns first) for the first. Each read or write gets
 * a place in `arena` (cap bytes, the caller's memory), aligned to the block
 * (at most PYSPDK_PYBDEV_MAX_ALIGN): a write's data is copied there, a
 * read's place is zeroed. Each I/O fills a row of PYSPDK_PYBDEV_REQ_WORDS
 * words of out: io, ticket, op, offset (bytes), length (bytes), its place's
 * start and end in the arena (0, 0 for other operations), iovcnt. With
 * `reads`, the reads' rows come first and *reads counts them.
 * An I/O that does not fit stays queued, first in line; *want (when given)
 * is then the arena size that would have held it too, else 0.
 * Returns the count (0 with *want set: not even the first fit), 0 (nothing
 * in time), or -ESHUTDOWN once workers stop. */
int
pyspdk_pybdev_fetch(struct pyspdk_pybdev *pb, uint64_t *out, int max, int64_t spin_ns,
		    int64_t timeout_ns, char *arena, uint64_t cap, uint64_t *want, int *reads)
{
	struct pyspdk_pybdev_io *io, *ios[PYSPDK_PYBDEV_MAX_BATCH];
	uint64_t los[PYSPDK_PYBDEV_MAX_BATCH];
	uint64_t ticket, lo, used = 0, need = 0;
	uintptr_t base = (uintptr_t)arena;
	uint64_t align = spdk_min(pb->bdev.blocklen, PYSPDK_PYBDEV_MAX_ALIGN);
	int i, n = 0, taken, rows = 0;

	if (want) {
		*want = 0;
	}
	if (reads) {
		*reads = 0;
	}
	if (max <= 0) {
		return -EINVAL;
	}
	if (__atomic_load_n(&pb->stopping, __ATOMIC_ACQUIRE)) {
		return -ESHUTDOWN;
	}
	if (timeout_ns > 0 && __atomic_load_n(&pb->queued, __ATOMIC_ACQUIRE) <= 0) {
		pyspdk_pybdev_wait(pb, spin_ns, timeout_ns);
		if (__atomic_load_n(&pb->stopping, __ATOMIC_ACQUIRE)) {
			return -ESHUTDOWN;
		}
	}
	if (__atomic_load_n(&pb->queued, __ATOMIC_ACQUIRE) <= 0) {
		pyspdk_pybdev_drain(pb);
		return 0;
	}
	if (max > PYSPDK_PYBDEV_MAX_BATCH) {
		max = PYSPDK_PYBDEV_MAX_BATCH;
	}
	pthread_mutex_lock(&pb->lock);
	/* Those a timeout or an earlier fetch moved to pending are older than the ring's. */
	while (n < max && (io = TAILQ_FIRST(&pb->pending)) != NULL) {
		TAILQ_REMOVE(&pb->pending, io, pending_link);
		ios[n++] = io;
	}
	if (n < max) {
		n += (int)spdk_ring_dequeue(pb->incoming, (void **)&ios[n], (size_t)(max - n));
	}
	/* Still QUEUED, so nothing changes them while the lock is held (a poller
	 * failing a queued I/O takes it too): the rows are written before the
	 * I/Os turn COPYING, after which only this thread touches them until
	 * they turn FETCHED. */
	for (taken = 0; taken < n; taken++) {
		io = ios[taken];
		lo = used;
		if (io->op == PYSPDK_IO_READ || io->op == PYSPDK_IO_WRITE) {
			lo = ((base + used + align - 1) & ~(uintptr_t)(align - 1)) - base;
			if (io->length > cap || lo > cap - io->length) {
				need = lo + io->length;
				break;
			}
			used = lo + io->length;
		}
		los[taken] = lo;
	}
	if (reads) {
		for (i = 0; i < taken; i++) {
			if (ios[i]->op == PYSPDK_IO_READ) {
				pyspdk_pybdev_row(out + (size_t)rows++ * PYSPDK_PYBDEV_REQ_WORDS, ios[i],
						  los[i]);
			}
		}
		*reads = rows;
	}
	for (i = 0; i < taken; i++) {
		if (!reads || ios[i]->op != PYSPDK_IO_READ) {
			pyspdk_pybdev_row(out + (size_t)rows++ * PYSPDK_PYBDEV_REQ_WORDS, ios[i],
					  los[i]);
		}
	}
	for (i = 0; i < taken; i++) {
		ticket = __atomic_load_n(&ios[i]->ticket, __ATOMIC_RELAXED) & ~PYSPDK_PYBDEV_STATE;
		__atomic_store_n(&ios[i]->ticket, ticket | PYSPDK_PYBDEV_COPYING, __ATOMIC_RELEASE);
	}
	/* What did not fit goes back first in line, in its order. */
	for (i = n - 1; i >= taken; i--) {
		TAILQ_INSERT_HEAD(&pb->pending, ios[i], pending_link);
	}
	if (taken) {
		__atomic_sub_fetch(&pb->queued, taken, __ATOMIC_SEQ_CST);
	}
	pthread_mutex_unlock(&pb->lock);
	pyspdk_pybdev_drain(pb);
	for (i = 0; i < taken; i++) {
		io = ios[i];
		if (io->op == PYSPDK_IO_WRITE) {
			pyspdk_pybdev_from_iovs(io, arena + los[i], io->length);
		} else if (io->op == PYSPDK_IO_READ) {
			memset(arena + los[i], 0, io->length);
		}
		ticket = __atomic_load_n(&io->ticket, __ATOMIC_RELAXED) & ~PYSPDK_PYBDEV_STATE;
		__atomic_store_n(&io->ticket, ticket | PYSPDK_PYBDEV_FETCHED, __ATOMIC_RELEASE);
	}
	if (want) {
		*want = need;
	}
	return taken;
}

/* Any thread: hand `count` committed I/Os of channel `ch` to its poller. */
static void
pyspdk_pybdev_hand_back(struct pyspdk_pybdev_ch *ch, struct pyspdk_pybdev_io **ios, int count)
{
	/* Read before the I/Os are handed over: once they are, the channel may
	 * complete them and go away; the waker is the device's. */
	struct pyspdk_pybdev_waker *waker = ch->waker;
	struct pyspdk_pybdev_io *io, *head;
	int i;

	if (count == 0) {
		return;
	}
	if (spdk_ring_enqueue(ch->done_ring, (void **)ios, (size_t)count, NULL) != (size_t)count) {
		for (i = 0; i < count; i++) {
			io = ios[i];
			head = __atomic_load_n(&ch->done, __ATOMIC_RELAXED);
			do {
				io->done_next = head;
			} while (!__atomic_compare_exchange_n(&ch->done, &head, io, true,
							      __ATOMIC_RELEASE, __ATOMIC_RELAXED));
		}
	}
	pyspdk_pybdev_kick(waker);
}

/* Any thread, without the GIL. Commit count results: words holds each I/O's
 * PYSPDK_PYBDEV_REQ_WORDS words as fetch wrote them (the io, its ticket, and
 * for a read its place in `arena`, the arena fetch was given), statuses[i]
 * its result (0 or -errno; NULL: all 0). A read that succeeded has its data
 * copied from the arena into its buffers, after the I/O is claimed: a result
 * for an I/O that expired meanwhile is dropped, and nothing is copied.
 * Returns how many were taken. */
int
pyspdk_pybdev_commit(struct pyspdk_pybdev *pb, const uint64_t *words, const int32_t *statuses,
		     int count, const char *arena)
{
	struct pyspdk_pybdev_io *io, *run[64];
	struct pyspdk_pybdev_ch *run_ch = NULL;
	const uint64_t *w;
	uint64_t ticket;
	int32_t status;
	int i, in_run = 0, taken = 0;

	if (__atomic_load_n(&pb->gone, __ATOMIC_ACQUIRE)) {
		return 0;
	}
	for (i = 0; i < count; i++) {
		w = words + (size_t)i * PYSPDK_PYBDEV_REQ_WORDS;
		io = (struct pyspdk_pybdev_io *)(uintptr_t)w[0];
		ticket = w[1];
		/* Claim it first: until then its memory may be another I/O's. */
		if (!__atomic_compare_exchange_n(&io->ticket, &ticket,
						 (ticket & ~PYSPDK_PYBDEV_STATE) |
						 PYSPDK_PYBDEV_COMMITTED, false,
						 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			continue;
		}
		status = statuses ? statuses[i] : 0;
		if (status == 0 && io->op == PYSPDK_IO_READ) {
			if (arena && w[6] - w[5] == io->length) {
				pyspdk_pybdev_to_iovs(io, arena + w[5], io->length);
			} else {
				status = -EIO; /* no arena given: the data is not here */
			}
		}
		io->status = status;
		/* Runs of one channel go back in one enqueue. */
		if (io->ch != run_ch || in_run == (int)SPDK_COUNTOF(run)) {
			if (run_ch) {
				pyspdk_pybdev_hand_back(run_ch, run, in_run);
			}
			run_ch = io->ch;
			in_run = 0;
		}
		run[in_run++] = io;
		taken++;
	}
	if (run_ch) {
		pyspdk_pybdev_hand_back(run_ch, run, in_run);
	}
	return taken;
}

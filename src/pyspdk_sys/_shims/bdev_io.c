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

#include "bdev_io.h"

#include "bdev_jobs.h"
#include "cq.h"
#include "wait.h"

#include <sys/eventfd.h>

static struct {
	struct pyspdk_engine_thread threads[PYSPDK_MAX_LANES];
	uint32_t nthreads;           /* 0 until the first device opens */
	struct pyspdk_dev *devs;     /* open devices, app thread only */
	uint32_t callers;            /* calling threads dealt a lane so far */
} g_pyspdk_io;

int g_pyspdk_io_spinners;

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

/* Any thread: sleep until *word == value, at most timeout_ns. 0, or
 * -ETIMEDOUT / -EINTR while it is not. */
static int
pyspdk_futex_wait_for(uint32_t *word, uint32_t value, int64_t timeout_ns)
{
	struct timespec deadline;
	uint32_t seen;
	int rc;

	pyspdk_deadline(&deadline, timeout_ns > 0 ? timeout_ns : 0);
	while ((seen = __atomic_load_n(word, __ATOMIC_ACQUIRE)) != value) {
		rc = pyspdk_futex_sleep(word, seen, &deadline);
		if (rc != 0) {
			return __atomic_load_n(word, __ATOMIC_ACQUIRE) == value ? 0 : rc;
		}
	}
	return 0;
}

/* Run fn(arg) on `thread`: at once when that is this thread, else by message. */
static int
pyspdk_run_on(struct spdk_thread *thread, spdk_msg_fn fn, void *arg)
{
	if (thread == spdk_get_thread()) {
		fn(arg);
		return 0;
	}
	return spdk_thread_send_msg(thread, fn, arg);
}

/* Owner thread: one more lane has given back its channel; after the last,
 * close the descriptor and publish the device as closed. */
static void
pyspdk_dev_lane_gone(void *arg)
{
	struct pyspdk_dev *dev = arg;
	struct pyspdk_dev **link;

	if (--dev->lanes_open > 0) {
		return;
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

/* Lane thread: nothing of the lane is in the bdev layer any more. */
static void
pyspdk_lane_release(struct pyspdk_lane *lane)
{
	struct pyspdk_lane **link;

	if (lane->ch) {
		spdk_put_io_channel(lane->ch);
		lane->ch = NULL;
	}
	if (lane->linked) {
		for (link = &lane->home->lanes; *link; link = &(*link)->next) {
			if (*link == lane) {
				*link = lane->next;
				break;
			}
		}
		lane->linked = false;
	}
	lane->state = PYSPDK_DEV_CLOSED;
	/* The device (and this lane with it) may be freed once the owner hears. */
	if (pyspdk_run_on(lane->dev->owner, pyspdk_dev_lane_gone, lane->dev) != 0) {
		fprintf(stderr, "pyspdk: no SPDK message to close a lane: a device stays open\n");
	}
}

/* Lane thread: the requests the bdev layer holds, so that a close can abort them. */
static void
pyspdk_held_add(struct pyspdk_lane *lane, struct pyspdk_io *io)
{
	io->held_prev = NULL;
	io->held_next = lane->held;
	if (lane->held) {
		lane->held->held_prev = io;
	}
	lane->held = io;
}

static void
pyspdk_held_remove(struct pyspdk_lane *lane, struct pyspdk_io *io)
{
	if (io->held_prev) {
		io->held_prev->held_next = io->held_next;
	} else if (lane->held == io) {
		lane->held = io->held_next;
	}
	if (io->held_next) {
		io->held_next->held_prev = io->held_prev;
	}
	io->held_prev = io->held_next = NULL;
}

static void
pyspdk_abort_done(struct spdk_bdev_io *bdev_io, bool success, void *arg)
{
	spdk_bdev_free_io(bdev_io);
}

/* Lane thread, closing: ask the bdev layer to abort what it holds for this
 * lane (best effort: a bdev without abort support, or no bdev_io left for the
 * abort, leaves the rest to complete in its own time). Aborted requests end
 * with the close's status. `cb_arg` is what the request was submitted with. */
int
pyspdk_lane_abort(struct pyspdk_lane *lane, void *cb_arg)
{
	return spdk_bdev_abort(lane->dev->desc, lane->ch, cb_arg, pyspdk_abort_done, NULL);
}

/* A module may complete the aborted request inline, inside spdk_bdev_abort:
 * the walk keeps the next request before each call, and counts itself in
 * flight so that the lane (and its channel) cannot be released under it;
 * the caller's pump releases it afterwards. */
static void
pyspdk_lane_abort_held(struct pyspdk_lane *lane)
{
	struct pyspdk_io *io, *next;

	if (!spdk_bdev_io_type_supported(lane->dev->bdev, SPDK_BDEV_IO_TYPE_ABORT)) {
		return;
	}
	lane->inflight++;
	for (io = lane->held; io; io = next) {
		next = io->held_next;
		if (pyspdk_lane_abort(lane, io) != 0) {
			break;
		}
	}
	if (!io) {
		pyspdk_jobs_abort(lane);
	}
	lane->inflight--;
}

static void
pyspdk_io_done(struct spdk_bdev_io *bdev_io, bool success, void *arg)
{
	struct pyspdk_io *io = arg;
	struct pyspdk_lane *lane = io->lane;
	/* Taken now: once pumped, a closing lane may be released and freed. */
	struct pyspdk_engine_thread *home = lane->home;

	pyspdk_held_remove(lane, io);
	if (success && io->op >= PYSPDK_IO_NVME_ADMIN) {
		/* An NVMe command's result is its completion's dword 0. */
		spdk_bdev_io_get_nvme_status(bdev_io, &io->cdw0, &io->nvme_sct, &io->nvme_sc);
	}
	if (!success) {
		io->status = 1;
		spdk_bdev_io_get_nvme_status(bdev_io, &io->cdw0, &io->nvme_sct, &io->nvme_sc);
		spdk_bdev_io_get_aio_status(bdev_io, &io->aio_status);
		if (lane->state == PYSPDK_DEV_CLOSING && io->nvme_sct == SPDK_NVME_SCT_GENERIC &&
		    io->nvme_sc == SPDK_NVME_SC_ABORTED_BY_REQUEST) {
			io->status = lane->dev->close_status; /* aborted by the close */
		}
	}
	spdk_bdev_free_io(bdev_io);
	lane->inflight--;
	pyspdk_io_finish(io);
	pyspdk_io_pump(lane);
	pyspdk_engine_linger(home);
}

static int
pyspdk_io_start(struct pyspdk_io *io)
{
	struct spdk_bdev_desc *d = io->dev->desc;
	struct spdk_io_channel *ch = io->lane->ch;

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
	case PYSPDK_IO_NVME_ADMIN:
		return spdk_bdev_nvme_admin_passthru(d, ch, io->cmd, io->buf, io->nbytes,
						     pyspdk_io_done, io);
	case PYSPDK_IO_NVME_IO:
		return spdk_bdev_nvme_io_passthru(d, ch, io->cmd, io->buf, io->nbytes,
						  pyspdk_io_done, io);
	case PYSPDK_IO_NVME_IO_MD:
		return spdk_bdev_nvme_io_passthru_md(d, ch, io->cmd, io->buf, io->nbytes, io->md_buf,
						     io->md_len, pyspdk_io_done, io);
	default:
		return -EINVAL;
	}
}

static int pyspdk_io_submit_one(struct pyspdk_io *io);

static void
pyspdk_io_retry(void *arg)
{
	struct pyspdk_io *io = arg;
	struct pyspdk_lane *lane = io->lane;

	if (pyspdk_io_submit_one(io) != 0) {
		/* Refused: its queue-depth slot is free for what waits behind it. */
		pyspdk_io_pump(lane);
	}
}

/* Hand one request to the bdev layer; it holds a queue-depth slot until done.
 * 0 when the bdev layer has it (or will, after -ENOMEM); else the request is
 * finished with the error and its slot is free. */
static int
pyspdk_io_submit_one(struct pyspdk_io *io)
{
	struct pyspdk_lane *lane = io->lane;
	int rc;

	pyspdk_held_add(lane, io);
	rc = pyspdk_io_start(io);
	if (rc != 0) {
		pyspdk_held_remove(lane, io);
	}
	if (rc == -ENOMEM) {
		/* Out of bdev_io structures: SPDK calls back when one frees up. */
		io->wait.bdev = io->dev->bdev;
		io->wait.cb_fn = pyspdk_io_retry;
		io->wait.cb_arg = io;
		rc = spdk_bdev_queue_io_wait(io->dev->bdev, lane->ch, &io->wait);
		if (rc == 0) {
			return 0;
		}
	}
	if (rc != 0) {
		io->status = rc;
		lane->inflight--;
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

/* Lane thread: move queued requests on while queue depth allows. */
void
pyspdk_io_pump(struct pyspdk_lane *lane)
{
	struct pyspdk_io *io;

	while (lane->backlog_head && lane->inflight < lane->dev->queue_depth &&
	       lane->state == PYSPDK_DEV_OPEN) {
		io = lane->backlog_head;
		lane->backlog_head = io->next;
		if (!lane->backlog_head) {
			lane->backlog_tail = NULL;
		}
		lane->inflight++;
		pyspdk_io_submit_one(io);
	}
	if (lane->state == PYSPDK_DEV_CLOSING && lane->inflight == 0) {
		pyspdk_lane_release(lane);
	}
}

static int
pyspdk_io_poll(void *ctx)
{
	struct pyspdk_engine_thread *home = ctx;
	struct pyspdk_lane *lane, *next;
	struct pyspdk_io *head, *tail;
	struct pyspdk_job_part *jobs;

	if (__atomic_load_n(&home->pending, __ATOMIC_ACQUIRE) == 0) {
		return SPDK_POLLER_IDLE;
	}
	__atomic_store_n(&home->pending, 0, __ATOMIC_RELEASE);
	for (lane = home->lanes; lane; lane = next) {
		next = lane->next;
		pthread_mutex_lock(&lane->lock);
		head = lane->sq_head;
		tail = lane->sq_tail;
		lane->sq_head = lane->sq_tail = NULL;
		jobs = lane->jobs_posted;
		lane->jobs_posted = NULL;
		pthread_mutex_unlock(&lane->lock);
		if (jobs) {
			pyspdk_jobs_start(lane, jobs);
		}
		if (head) {
			if (lane->backlog_tail) {
				lane->backlog_tail->next = head;
			} else {
				lane->backlog_head = head;
			}
			lane->backlog_tail = tail;
			pyspdk_io_pump(lane);
		}
	}
	return SPDK_POLLER_BUSY;
}

/* Any thread: the lane takes nothing more; what it had queued and not seen
 * ends with `status`, and later submissions get `refusal`. */
static void
pyspdk_lane_refuse(struct pyspdk_lane *lane, int status, int refusal)
{
	struct pyspdk_io *queued;
	struct pyspdk_job_part *posted;

	pthread_mutex_lock(&lane->lock);
	lane->accepting = false;
	lane->refusal = refusal;
	queued = lane->sq_head;
	lane->sq_head = lane->sq_tail = NULL;
	posted = lane->jobs_posted;
	lane->jobs_posted = NULL;
	pthread_mutex_unlock(&lane->lock);
	pyspdk_jobs_cancel(NULL, posted);
	pyspdk_io_cancel_list(queued, status);
}

/* Lane thread: cancel what the bdev layer has not seen, and give the channel
 * back once it hands back what it holds. */
static void
pyspdk_lane_close(void *arg)
{
	struct pyspdk_lane *lane = arg;

	if (!lane->ch) {
		pyspdk_lane_release(lane); /* never got a channel */
		return;
	}
	lane->state = PYSPDK_DEV_CLOSING;
	pyspdk_jobs_cancel(lane, NULL);
	pyspdk_io_cancel_list(lane->backlog_head, lane->dev->close_status);
	lane->backlog_head = lane->backlog_tail = NULL;
	pyspdk_lane_abort_held(lane);
	pyspdk_io_pump(lane);
}

/* Owner thread: stop accepting, cancel what the bdev layer has not seen, and
 * close once every lane's requests are back. */
static void
pyspdk_dev_begin_close(struct pyspdk_dev *dev, int status)
{
	struct pyspdk_lane *lanes = dev->lanes;
	uint32_t i, n = dev->nlanes;

	if (dev->state != PYSPDK_DEV_OPEN) {
		return;
	}
	__atomic_store_n(&dev->state, PYSPDK_DEV_CLOSING, __ATOMIC_RELEASE);
	dev->close_status = status;
	for (i = 0; i < n; i++) {
		pyspdk_lane_refuse(&lanes[i], status, dev->removed ? -ENODEV : -EBADF);
	}
	/* Once the last lane is closed the device may be freed: after that
	 * call, nothing here touches it. */
	for (i = 0; i < n; i++) {
		if (lanes[i].unreached) {
			continue; /* counted as gone when its setup could not be sent */
		}
		if (pyspdk_run_on(lanes[i].home->thread, pyspdk_lane_close, &lanes[i]) != 0) {
			fprintf(stderr, "pyspdk: no SPDK message to close a lane: a device stays open\n");
		}
	}
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

/* Lane thread: get the lane's channel and start serving it; without one the
 * lane refuses everything with -ENOMEM until pyspdk_lane_close, which comes
 * after this (both are sent from the owner thread, in order), releases it. */
static void
pyspdk_lane_setup(void *arg)
{
	struct pyspdk_lane *lane = arg;
	struct pyspdk_dev *dev = lane->dev;
	int expected = 0;

	lane->ch = spdk_bdev_get_io_channel(dev->desc);
	if (lane->ch) {
		lane->next = lane->home->lanes;
		lane->home->lanes = lane;
		lane->linked = true;
		pyspdk_engine_kick(lane->home);
	} else {
		__atomic_compare_exchange_n(&dev->setup_rc, &expected, -ENOMEM, false,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED);
		pyspdk_lane_refuse(lane, -ENOMEM, -ENOMEM);
	}
	if (__atomic_sub_fetch(&dev->setting_up, 1, __ATOMIC_ACQ_REL) == 0) {
		pyspdk_futex_wake_all(&dev->setting_up);
	}
}

/* Interrupt mode: one eventfd per engine thread slot, made once and never
 * closed (a submitting thread that read its number may write it late). */
static int g_pyspdk_engine_efd[PYSPDK_MAX_LANES];  /* the fd + 1; 0: not made yet */

void
pyspdk_engine_kick(struct pyspdk_engine_thread *home)
{
	uint64_t one = 1;

	if (!spdk_interrupt_mode_is_enabled()) {
		/* Polling: the engine reads the flag on every pass and there is no
		 * event to pair with, so a release store does (no locked exchange). */
		__atomic_store_n(&home->pending, 1, __ATOMIC_RELEASE);
		return;
	}
	if (__atomic_exchange_n(&home->pending, 1, __ATOMIC_SEQ_CST) == 0 && home->efd >= 0) {
		(void)!write(home->efd, &one, sizeof(one));
	}
}

/* Interrupt mode: how long an engine thread keeps polling after its last
 * request or completion (pyspdk_engine_set_linger_us). Waking a sleeping
 * reactor costs more than the request (a blocking QD1 read of an aio bdev:
 * about 22 us against 5 polling, measured here): a caller that submits its
 * next request within the linger time never pays it. */
static uint64_t g_pyspdk_linger_us = 50;
static uint64_t g_pyspdk_linger_ticks;

void
pyspdk_engine_set_linger_us(uint32_t us)
{
	__atomic_store_n(&g_pyspdk_linger_us, us, __ATOMIC_RELAXED);
	__atomic_store_n(&g_pyspdk_linger_ticks, 0, __ATOMIC_RELAXED); /* recomputed */
}

static uint64_t
pyspdk_linger_ticks(void)
{
	uint64_t ticks = __atomic_load_n(&g_pyspdk_linger_ticks, __ATOMIC_RELAXED);

	if (ticks == 0) {
		ticks = __atomic_load_n(&g_pyspdk_linger_us, __ATOMIC_RELAXED) *
			spdk_get_ticks_hz() / 1000000;
		__atomic_store_n(&g_pyspdk_linger_ticks, ticks ? ticks : 1, __ATOMIC_RELAXED);
	}
	return ticks > 1 ? ticks : 0;
}

void
pyspdk_engine_linger(struct pyspdk_engine_thread *home)
{
	uint64_t one = 1, ticks;

	if (home->efd < 0 || (ticks = pyspdk_linger_ticks()) == 0) {
		return;
	}
	home->linger_until = spdk_get_ticks() + ticks;
	if (!home->lingering) {
		home->lingering = true;
		(void)!write(home->efd, &one, sizeof(one)); /* pyspdk_engine_wake runs next */
	}
}

/* Interrupt mode: the thread's eventfd is readable. Empty it, then poll: a
 * kick after the read writes it again. While lingering, leave it readable, so
 * the reactor comes straight back here instead of sleeping, without a system
 * call; empty it once the linger time is over. */
static int
pyspdk_engine_wake(void *ctx)
{
	struct pyspdk_engine_thread *home = ctx;
	uint64_t drained, one = 1;
	int rc;

	if (!home->lingering) {
		(void)!read(home->efd, &drained, sizeof(drained));
	}
	rc = pyspdk_io_poll(home);
	if (rc == SPDK_POLLER_BUSY) {
		pyspdk_engine_linger(home);
	}
	if (home->lingering && spdk_get_ticks() >= home->linger_until) {
		home->lingering = false;
		(void)!read(home->efd, &drained, sizeof(drained));
		if (__atomic_load_n(&home->pending, __ATOMIC_SEQ_CST)) {
			(void)!write(home->efd, &one, sizeof(one)); /* a kick the read took */
		}
	}
	return rc;
}

static void
pyspdk_engine_thread_start(void *arg)
{
	struct pyspdk_engine_thread *home = arg;
	int slot = (int)(home - g_pyspdk_io.threads);
	int efd;

	home->efd = -1;
	if (spdk_interrupt_mode_is_enabled()) {
		if (g_pyspdk_engine_efd[slot] == 0) {
			efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
			if (efd < 0) {
				return; /* no poller: pyspdk_io_engine_start sees it for lane 0 */
			}
			g_pyspdk_engine_efd[slot] = efd + 1;
		}
		home->intr = spdk_interrupt_register(g_pyspdk_engine_efd[slot] - 1, pyspdk_engine_wake,
						     home, "pyspdk_io");
		if (!home->intr) {
			return;
		}
	}
	home->poller = spdk_poller_register_named(pyspdk_io_poll, home, 0, "pyspdk_io");
	if (home->poller && home->intr) {
		spdk_poller_register_interrupt(home->poller, NULL, NULL);
		__atomic_store_n(&home->efd, g_pyspdk_engine_efd[slot] - 1, __ATOMIC_SEQ_CST);
		if (__atomic_load_n(&home->pending, __ATOMIC_SEQ_CST)) {
			__atomic_store_n(&home->pending, 0, __ATOMIC_SEQ_CST);
			pyspdk_engine_kick(home); /* queued before the event was there */
		}
	} else if (!home->poller && home->intr) {
		spdk_interrupt_unregister(&home->intr);
	}
}

static void
pyspdk_engine_thread_stop(void *arg)
{
	struct pyspdk_engine_thread *home = arg;

	spdk_poller_unregister(&home->poller);
	if (home->intr) {
		spdk_interrupt_unregister(&home->intr);
	}
	if (home != &g_pyspdk_io.threads[0]) {
		spdk_thread_exit(spdk_get_thread());
	}
}

/* App thread, before the first device: a poller here, and an SPDK thread
 * with a poller on each other reactor core. */
static int
pyspdk_io_engine_start(void)
{
	struct pyspdk_engine_thread *home = &g_pyspdk_io.threads[0];
	struct spdk_cpuset cpus;
	struct spdk_thread *thread;
	uint32_t core, here = spdk_env_get_current_core();
	char name[32];

	memset(home, 0, sizeof(*home));
	home->efd = -1;
	home->thread = spdk_get_thread();
	pyspdk_engine_thread_start(home);
	if (!home->poller) {
		return -ENOMEM;
	}
	g_pyspdk_io.nthreads = 1;
	SPDK_ENV_FOREACH_CORE(core) {
		if (core == here || g_pyspdk_io.nthreads == PYSPDK_MAX_LANES) {
			continue;
		}
		spdk_cpuset_zero(&cpus);
		spdk_cpuset_set_cpu(&cpus, core, true);
		snprintf(name, sizeof(name), "pyspdk_io_%u", core);
		thread = spdk_thread_create(name, &cpus);
		if (!thread) {
			break; /* fewer lanes, still correct */
		}
		home = &g_pyspdk_io.threads[g_pyspdk_io.nthreads];
		memset(home, 0, sizeof(*home));
		home->efd = -1;
		home->thread = thread;
		if (spdk_thread_send_msg(thread, pyspdk_engine_thread_start, home) != 0) {
			break; /* the thread has nothing to do and exits with the app */
		}
		g_pyspdk_io.nthreads++;
	}
	return 0;
}

/* ---------------------------------------------------------------- API */

/* App thread: open `name` with one lane on each of the engine's threads (at
 * most `lanes`; 0 for all). Lane 0, on this thread, is ready on return; the
 * others get their channels on their own threads (pyspdk_dev_wait_ready). */
struct pyspdk_dev *
pyspdk_dev_open(const char *name, bool write, uint32_t queue_depth, uint32_t lanes, int *rc)
{
	struct pyspdk_dev *dev;
	struct pyspdk_lane *lane;
	uint32_t i, n;
	size_t size;

	if (g_pyspdk_io.nthreads == 0) {
		*rc = pyspdk_io_engine_start();
		if (*rc != 0) {
			return NULL;
		}
	}
	if (spdk_get_thread() != g_pyspdk_io.threads[0].thread) {
		*rc = -EXDEV; /* devices open on the app thread, where the engine began */
		return NULL;
	}
	n = lanes == 0 || lanes > g_pyspdk_io.nthreads ? g_pyspdk_io.nthreads : lanes;
	size = sizeof(*dev) + n * sizeof(struct pyspdk_lane);
	size = (size + PYSPDK_CACHE_LINE - 1) & ~(size_t)(PYSPDK_CACHE_LINE - 1);
	dev = aligned_alloc(PYSPDK_CACHE_LINE, size);
	if (dev) {
		memset(dev, 0, size);
	}
	if (!dev) {
		*rc = -ENOMEM;
		return NULL;
	}
	*rc = spdk_bdev_open_ext(name, write, pyspdk_dev_event, dev, &dev->desc);
	if (*rc != 0) {
		free(dev);
		return NULL;
	}
	dev->bdev = spdk_bdev_desc_get_bdev(dev->desc);
	dev->block_size = spdk_bdev_get_block_size(dev->bdev);
	dev->size = spdk_bdev_get_num_blocks(dev->bdev) * dev->block_size;
	dev->owner = spdk_get_thread();
	dev->queue_depth = queue_depth;
	dev->nlanes = n;
	for (i = 0; i < n; i++) {
		lane = &dev->lanes[i];
		lane->dev = dev;
		lane->home = &g_pyspdk_io.threads[i];
		lane->accepting = true;
		lane->state = PYSPDK_DEV_OPEN;
		pthread_mutex_init(&lane->lock, NULL);
	}
	/* Lane 0 first, here: without its channel there is no device at all. */
	dev->lanes[0].ch = spdk_bdev_get_io_channel(dev->desc);
	if (!dev->lanes[0].ch) {
		spdk_bdev_close(dev->desc);
		for (i = 0; i < n; i++) {
			pthread_mutex_destroy(&dev->lanes[i].lock);
		}
		free(dev);
		*rc = -ENOMEM;
		return NULL;
	}
	dev->lanes[0].next = dev->lanes[0].home->lanes;
	dev->lanes[0].home->lanes = &dev->lanes[0];
	dev->lanes[0].linked = true;
	dev->lanes_open = n;
	dev->setting_up = n - 1;
	dev->state = PYSPDK_DEV_OPEN;
	dev->next = g_pyspdk_io.devs;
	g_pyspdk_io.devs = dev;
	for (i = 1; i < n; i++) {
		lane = &dev->lanes[i];
		if (spdk_thread_send_msg(lane->home->thread, pyspdk_lane_setup, lane) != 0) {
			dev->setup_rc = -ENOMEM;
			pyspdk_lane_refuse(lane, -ENOMEM, -ENOMEM);
			lane->state = PYSPDK_DEV_CLOSED;
			lane->unreached = true;
			dev->lanes_open--;
			__atomic_sub_fetch(&dev->setting_up, 1, __ATOMIC_ACQ_REL);
		}
	}
	return dev;
}

/* Any thread but the app thread: wait at most timeout_ns for every lane to
 * have its channel. 0; -ENOMEM when one could not get one (close the
 * device); -ETIMEDOUT or -EINTR while they are not all there. */
int
pyspdk_dev_wait_ready(struct pyspdk_dev *dev, int64_t timeout_ns)
{
	int rc = pyspdk_futex_wait_for(&dev->setting_up, 0, timeout_ns);

	return rc != 0 ? rc : __atomic_load_n(&dev->setup_rc, __ATOMIC_RELAXED);
}

uint32_t
pyspdk_dev_lanes(struct pyspdk_dev *dev)
{
	return dev->nlanes;
}

/* The SPDK threads the engine runs on (0 before the first device opens). */
uint32_t
pyspdk_io_engine_threads(void)
{
	return g_pyspdk_io.nthreads;
}

/* The lane the calling thread uses: threads are dealt lanes in turn, once,
 * so one thread's requests always share a lane and keep their order. */
static struct pyspdk_lane *
pyspdk_caller_lane(struct pyspdk_dev *dev)
{
	static __thread uint32_t ticket;

	if (ticket == 0) {
		ticket = __atomic_add_fetch(&g_pyspdk_io.callers, 1, __ATOMIC_RELAXED);
	}
	return &dev->lanes[(ticket - 1) % dev->nlanes];
}

int
pyspdk_dev_submit(struct pyspdk_dev *dev, struct pyspdk_io **ios, int count)
{
	struct pyspdk_lane *lane = pyspdk_caller_lane(dev);
	int64_t now;
	int i, refusal;

	if (count <= 0) {
		return -EINVAL;
	}
	for (i = 0; i < count; i++) {
		if (__atomic_load_n(&ios[i]->state, __ATOMIC_ACQUIRE) != PYSPDK_IO_DONE) {
			return -EBUSY; /* still the engine's: never queue a request twice */
		}
	}
	pthread_mutex_lock(&lane->lock);
	if (!lane->accepting) {
		refusal = lane->refusal;
		pthread_mutex_unlock(&lane->lock);
		return refusal;
	}
	now = pyspdk_now_ns();
	for (i = 0; i < count; i++) {
		ios[i]->dev = dev;
		ios[i]->lane = lane;
		ios[i]->submitted_ns = now;
		ios[i]->status = 0;
		__atomic_store_n(&ios[i]->state, PYSPDK_IO_PENDING, __ATOMIC_RELEASE);
		ios[i]->next = i + 1 < count ? ios[i + 1] : NULL;
	}
	if (lane->sq_tail) {
		lane->sq_tail->next = ios[0];
	} else {
		lane->sq_head = ios[0];
	}
	lane->sq_tail = ios[count - 1];
	pthread_mutex_unlock(&lane->lock);
	pyspdk_engine_kick(lane->home);
	return 0;
}

/* The futures and asyncio path in one call: check that [offset, offset +
 * length) is whole blocks inside the device as opened, fill `io` (whose buf,
 * cq and tag the caller set) for it and queue it. 0; -ERANGE when the range
 * is wrong (nothing queued); or what pyspdk_dev_submit returns. Every
 * argument costs the Python caller a conversion: there are few. */
int
pyspdk_dev_submit_range(struct pyspdk_dev *dev, struct pyspdk_io *io, int op, uint64_t offset,
			uint64_t length)
{
	uint32_t block_size = dev->block_size;

	if (length == 0 || offset % block_size || length % block_size || offset > dev->size ||
	    length > dev->size - offset) {
		return -ERANGE;
	}
	io->op = op;
	io->offset_blocks = offset / block_size;
	io->num_blocks = length / block_size;
	return pyspdk_dev_submit(dev, &io, 1);
}

bool
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
int
pyspdk_io_wait(struct pyspdk_io *io, int64_t spin_ns, int64_t timeout_ns)
{
	int64_t lend_ns = pyspdk_adapt_spin(&io->dev->adapt_io, &spin_ns);

	/* Nobody sleeps on the word before this waiter, so PENDING is "not over". */
	pyspdk_spin_while(&io->state, PYSPDK_IO_PENDING, spin_ns < timeout_ns ? spin_ns : timeout_ns,
			  &g_pyspdk_io_spinners, lend_ns);
	return pyspdk_io_sleep(io, timeout_ns);
}

/* Submit one request and wait for it at most timeout_ns: the blocking path,
 * one crossing when the I/O is quick. As pyspdk_io_wait, or the refusal. */
int
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

/* App thread: close once every lane's bdev layer hands back what it holds.
 * Queued requests end with -ECANCELED. */
void
pyspdk_dev_close(struct pyspdk_dev *dev)
{
	pyspdk_dev_begin_close(dev, -ECANCELED);
}

/* Any thread: wait at most timeout_ns for the device to be closed. 0, or
 * -ETIMEDOUT / -EINTR while it is not. */
int
pyspdk_dev_wait_closed(struct pyspdk_dev *dev, int64_t timeout_ns)
{
	return pyspdk_futex_wait_for(&dev->state, PYSPDK_DEV_CLOSED, timeout_ns);
}

void
pyspdk_dev_free(struct pyspdk_dev *dev)
{
	uint32_t i;

	for (i = 0; i < dev->nlanes; i++) {
		pthread_mutex_destroy(&dev->lanes[i].lock);
		free(dev->lanes[i].spare_slots);
	}
	free(dev);
}

/* What adaptive waits have learnt of the device: the smoothed completion
 * latency of its blocking requests, or of its jobs. */
int64_t
pyspdk_dev_latency_ns(struct pyspdk_dev *dev, bool jobs)
{
	return __atomic_load_n(jobs ? &dev->adapt_job.latency_ns : &dev->adapt_io.latency_ns,
			       __ATOMIC_RELAXED);
}

/* The spin (in this thread's own CPU time) an adaptive wait from this thread
 * would choose now: 0 on a CPU a reactor polls. */
int64_t
pyspdk_dev_adaptive_spin_ns(struct pyspdk_dev *dev, bool jobs)
{
	int64_t spin_ns = -1;

	pyspdk_adapt_spin(jobs ? &dev->adapt_job : &dev->adapt_io, &spin_ns);
	return spin_ns;
}

uint32_t
pyspdk_dev_inflight(struct pyspdk_dev *dev)
{
	uint32_t i, n = 0;

	for (i = 0; i < dev->nlanes; i++) {
		n += __atomic_load_n(&dev->lanes[i].inflight, __ATOMIC_RELAXED);
	}
	return n;
}

/* App thread, when the runtime stops, after every device began to close:
 * the pollers go, and the engine's own threads exit once their lanes have
 * given back their channels. */
void
pyspdk_io_engine_stop(void)
{
	uint32_t i;

	for (i = 0; i < g_pyspdk_io.nthreads; i++) {
		pyspdk_run_on(g_pyspdk_io.threads[i].thread, pyspdk_engine_thread_stop,
			      &g_pyspdk_io.threads[i]);
	}
	g_pyspdk_io.nthreads = 0;
}

int
pyspdk_io_open_count(void)
{
	int n = 0;
	struct pyspdk_dev *dev;

	for (dev = g_pyspdk_io.devs; dev; dev = dev->next) {
		n++;
	}
	return n;
}

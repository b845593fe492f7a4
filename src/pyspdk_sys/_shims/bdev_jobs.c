/* Jobs (declared in bdev_jobs.h): the throughput path: one call hands the engine `count` same-sized I/Os,
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
	int64_t posted_ns;           /* for pyspdk_adapt */
	/* Futex word: 0 the engine's, 1 over (or never posted): its owner's. */
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
	if (!job->cancelled) {
		pyspdk_adapt_learn(&dev->adapt_job, job->posted_ns, pyspdk_now_ns());
	}
	__atomic_store_n(&job->over, 1, __ATOMIC_RELEASE);
	pyspdk_futex_wake_all(&job->over);
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
	/* A freed queue-depth slot: requests queued behind the job move on
	 * (or the closing device is released). */
	pyspdk_io_pump(dev);
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
	struct pyspdk_job_slot *slot = arg;
	struct pyspdk_dev *dev = slot->job->dev;

	/* Still counted in flight: submit the same I/O again. */
	if (pyspdk_job_submit(slot) != 0) {
		pyspdk_job_next(slot);
		pyspdk_io_pump(dev);
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

	if (!__atomic_load_n(&job->over, __ATOMIC_ACQUIRE)) {
		return -EBUSY; /* still running: never post a job twice */
	}
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
	job->posted_ns = pyspdk_now_ns();
	pthread_mutex_lock(&dev->lock);
	if (!dev->accepting) {
		pthread_mutex_unlock(&dev->lock);
		job->over = 1;
		return dev->removed ? -ENODEV : -EBADF;
	}
	job->link = dev->jobs_posted;
	dev->jobs_posted = job;
	pthread_mutex_unlock(&dev->lock);
	__atomic_store_n(&g_pyspdk_io.pending, 1, __ATOMIC_RELEASE);
	return 0;
}

/* Any thread: wait at most timeout_ns for the job to be over (spinning
 * spin_ns first; < 0: as the device's job latency suggests). 0, or
 * -ETIMEDOUT / -EINTR while it is not. */
static int
pyspdk_job_wait(struct pyspdk_job *job, int64_t spin_ns, int64_t timeout_ns)
{
	int64_t lend_ns = pyspdk_adapt_spin(&job->dev->adapt_job, &spin_ns);

	return pyspdk_wait_word(&job->over, 0, spin_ns, timeout_ns, &g_pyspdk_io.spinners, lend_ns);
}

static bool
pyspdk_job_is_over(struct pyspdk_job *job)
{
	return __atomic_load_n(&job->over, __ATOMIC_ACQUIRE) != 0;
}

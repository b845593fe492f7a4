/* Jobs (declared in bdev_jobs.h): the throughput path: one call hands the
 * engine `count` same-sized I/Os, their offsets in an array and their data in
 * one buffer region (I/O i at base + i * io_bytes). When that region is not
 * DMA-able memory (`user`), `base` is instead two DMA bounce buffers per
 * slot, and the lane's thread copies each I/O's data between the two as it
 * goes: a completed read is copied out while the slot's next read already
 * runs in its other buffer; a write is copied in just before it starts.
 *
 * The job has a part on each lane of the device (the `depth` slots shared
 * out). On its lane's SPDK thread a part keeps its slots busy, starting the
 * next I/O from the completion of the last, as bdevperf does; parts claim the
 * job's I/Os in chunks from one cursor, so a lane whose core is also running
 * something else (the caller's thread, say) does less of the job instead of
 * holding up its end. Each failed I/O's status lands in statuses[i]. The
 * caller sleeps until the last part is over: one crossing for the lot.
 */
#include "bdev_jobs.h"

#include "bdev_io.h"
#include "wait.h"

struct pyspdk_job_slot {
	struct pyspdk_job_part *part;
	uint64_t index;
	char *bounce[2];             /* this slot's DMA buffers, with a `user` region */
	uint32_t which;              /* the one its current I/O uses */
	struct spdk_bdev_io_wait_entry wait;
};

/* Room for a part's slots, on pages of its own (pyspdk_slots_take). */
#define PYSPDK_SPARE_SLOTS_MAX 1024 /* a lane keeps no bigger block (90 KiB) */
struct pyspdk_slot_block {
	uint32_t capacity;
	struct pyspdk_job_slot slots[];
};

/* The lane's thread: claim the job's next chunk for this part. False when
 * none is left (or the part is cancelled). */
static bool
pyspdk_part_claim(struct pyspdk_job_part *part)
{
	struct pyspdk_job *job = part->job;
	uint64_t first;

	if (part->cancelled) {
		return false;
	}
	first = __atomic_fetch_add(&job->cursor, job->chunk, __ATOMIC_RELAXED);
	if (first >= job->count) {
		return false;
	}
	part->next = first;
	part->end = job->count - first < job->chunk ? job->count : first + job->chunk;
	return true;
}

/* Any thread: a block of at least `depth` slots for a part on `lane`: the
 * lane's spare if it is big enough, else a new one (NULL without memory).
 *
 * Each lane's core writes its part's slots at every I/O. With two parts'
 * slots in one page, the core going through its own slots had its
 * prefetcher fetch the other part's lines too, taking them from the core
 * writing them: two reactors on a null bdev ran at 0.73-0.81x of bdevperf's
 * rate, and at 0.92-1.01x with each part's slots on pages of their own. A
 * lane keeps the block of its last part, so a small job pays no allocation. */
static struct pyspdk_slot_block *
pyspdk_slots_take(struct pyspdk_lane *lane, uint32_t depth)
{
	struct pyspdk_slot_block *block;
	size_t page = 4096, size;

	block = __atomic_exchange_n((struct pyspdk_slot_block **)&lane->spare_slots, NULL,
				    __ATOMIC_ACQUIRE);
	if (block && block->capacity >= depth) {
		return block;
	}
	free(block);
	size = sizeof(*block) + (size_t)depth * sizeof(block->slots[0]);
	size = (size + page - 1) & ~(page - 1);
	block = aligned_alloc(page, size);
	if (block) {
		block->capacity = (uint32_t)((size - sizeof(*block)) / sizeof(block->slots[0]));
	}
	return block;
}

/* The part is over: its block becomes its lane's spare (the one it replaces
 * is freed), unless it is too big to keep: one job of a huge depth must not
 * leave its memory held until the device closes. */
static void
pyspdk_slots_give_back(struct pyspdk_job_part *part)
{
	struct pyspdk_slot_block *old = part->block;

	if (!old) {
		return;
	}
	if (old->capacity <= PYSPDK_SPARE_SLOTS_MAX) {
		old = __atomic_exchange_n((struct pyspdk_slot_block **)&part->lane->spare_slots,
					  old, __ATOMIC_ACQ_REL);
	}
	free(old);
	part->block = NULL;
	part->slots = NULL;
}

static void pyspdk_job_next(struct pyspdk_job_slot *slot);

/* A part is over. The last one ends the job: once `over` is set its owner
 * may free the job and its parts, so nothing here touches them after. */
static void
pyspdk_part_over(struct pyspdk_job_part *part)
{
	struct pyspdk_job *job = part->job;
	struct pyspdk_job_part **link;

	if (part->starting) {
		part->ended = true;
		return;
	}
	pyspdk_slots_give_back(part);
	if (part->linked) {
		for (link = &part->lane->jobs; *link; link = &(*link)->link) {
			if (*link == part) {
				*link = part->link;
				break;
			}
		}
		part->linked = false;
	}
	if (part->cancelled) {
		__atomic_store_n(&job->cancelled, 1, __ATOMIC_RELAXED);
	}
	if (part->failed) {
		__atomic_add_fetch(&job->failed, part->failed, __ATOMIC_RELAXED);
	}
	if (__atomic_sub_fetch(&job->parts_left, 1, __ATOMIC_ACQ_REL) != 0) {
		return;
	}
	if (!__atomic_load_n(&job->cancelled, __ATOMIC_RELAXED)) {
		pyspdk_adapt_learn(&job->dev->adapt_job, job->posted_ns, pyspdk_now_ns());
	}
	__atomic_store_n(&job->over, 1, __ATOMIC_RELEASE);
	pyspdk_futex_wake_all(&job->over);
}

/* A failed I/O's status: the close's status for one a closing lane aborted;
 * PYSPDK_JOB_ERRNO | errno when the bdev gave its error as an errno (an aio
 * status: a Python-served bdev's timeout, an aio bdev's error); else 1. */
static int
pyspdk_job_failure(struct spdk_bdev_io *bdev_io, struct pyspdk_lane *lane)
{
	uint32_t cdw0;
	int sct, sc, aio = 0;

	if (lane->state == PYSPDK_DEV_CLOSING) {
		spdk_bdev_io_get_nvme_status(bdev_io, &cdw0, &sct, &sc);
		if (sct == SPDK_NVME_SCT_GENERIC && sc == SPDK_NVME_SC_ABORTED_BY_REQUEST) {
			return lane->dev->close_status;
		}
	}
	spdk_bdev_io_get_aio_status(bdev_io, &aio);
	if (aio < 0 && aio > -PYSPDK_JOB_ERRNO) {
		return PYSPDK_JOB_ERRNO | -aio;
	}
	return 1;
}

static void
pyspdk_job_io_done(struct spdk_bdev_io *bdev_io, bool success, void *arg)
{
	struct pyspdk_job_slot *slot = arg;
	struct pyspdk_job_part *part = slot->part;
	struct pyspdk_lane *lane = part->lane;
	struct pyspdk_job *job = part->job;
	uint64_t index = slot->index;
	char *filled = NULL;

	if (!success) {
		/* A success leaves its zero (no line to fetch). */
		job->statuses[index] = pyspdk_job_failure(bdev_io, lane);
		part->failed++;
	} else if (job->user && job->op != PYSPDK_IO_WRITE) {
		filled = slot->bounce[slot->which];
		slot->which ^= 1;
	}
	spdk_bdev_free_io(bdev_io);
	lane->inflight--;
	pyspdk_engine_linger(lane->home);
	if (filled) {
		/* The slot's next read goes to its other buffer first, so this copy
		 * overlaps it; this I/O still counts, so the part (and the job,
		 * whose owner may then free `user`) cannot end before the copy. */
		pyspdk_job_next(slot);
		memcpy(job->user + index * job->io_bytes, filled, job->io_bytes);
		if (--part->inflight == 0) {
			pyspdk_part_over(part);
		}
	} else {
		part->inflight--;
		pyspdk_job_next(slot);
	}
	/* A freed queue-depth slot: requests queued behind the job move on
	 * (or the closing lane is released). */
	pyspdk_io_pump(lane);
}

static int pyspdk_job_submit(struct pyspdk_job_slot *slot);

/* Keep this slot busy with the part's next I/O; an I/O the bdev layer
 * refuses at once is recorded and the slot moves on. Ends the part when
 * nothing is left. */
static void
pyspdk_job_next(struct pyspdk_job_slot *slot)
{
	struct pyspdk_job_part *part = slot->part;

	while (!part->cancelled && (part->next < part->end || pyspdk_part_claim(part))) {
		slot->index = part->next++;
		part->inflight++;
		part->lane->inflight++;
		if (pyspdk_job_submit(slot) == 0) {
			return;
		}
	}
	if (part->inflight == 0) {
		pyspdk_part_over(part);
	}
}

static void
pyspdk_job_retry(void *arg)
{
	struct pyspdk_job_slot *slot = arg;
	struct pyspdk_lane *lane = slot->part->lane;

	/* Still counted in flight: submit the same I/O again. */
	if (pyspdk_job_submit(slot) != 0) {
		pyspdk_job_next(slot);
		pyspdk_io_pump(lane);
	}
}

/* Hand the slot's I/O to the bdev layer: 0 if it took it (or will, after
 * -ENOMEM), else the error, recorded as the I/O's status. */
static int
pyspdk_job_submit(struct pyspdk_job_slot *slot)
{
	struct pyspdk_job_part *part = slot->part;
	struct pyspdk_job *job = part->job;
	struct pyspdk_lane *lane = part->lane;
	struct pyspdk_dev *dev = job->dev;
	uint64_t index = slot->index;
	char *buf = job->user ? slot->bounce[slot->which] : job->base + index * job->io_bytes;
	int rc;

	if (job->op == PYSPDK_IO_WRITE) {
		if (job->user) {
			memcpy(buf, job->user + index * job->io_bytes, job->io_bytes);
		}
		rc = spdk_bdev_write_blocks(dev->desc, lane->ch, buf, job->offsets_blocks[index],
					    job->io_blocks, pyspdk_job_io_done, slot);
	} else {
		rc = spdk_bdev_read_blocks(dev->desc, lane->ch, buf, job->offsets_blocks[index],
					   job->io_blocks, pyspdk_job_io_done, slot);
	}
	if (rc == -ENOMEM) {
		slot->wait.bdev = dev->bdev;
		slot->wait.cb_fn = pyspdk_job_retry;
		slot->wait.cb_arg = slot;
		rc = spdk_bdev_queue_io_wait(dev->bdev, lane->ch, &slot->wait);
	}
	if (rc != 0) {
		job->statuses[index] = rc;
		part->failed++;
		part->inflight--;
		lane->inflight--;
	}
	return rc;
}

/* Lane thread, closing: abort each running part's I/Os in the bdev layer (a
 * slot's cb_arg is the slot; one with no I/O there makes a failed abort, no
 * harm). Stops at the first abort the bdev layer cannot take. */
void
pyspdk_jobs_abort(struct pyspdk_lane *lane)
{
	struct pyspdk_job_part *part, *next;
	uint32_t i;
	int rc = 0;

	for (part = lane->jobs; part && rc == 0; part = next) {
		next = part->link;
		/* Counted in flight while its slots are walked: an I/O aborted
		 * inline cannot end the part and give its slots back under us. */
		part->inflight++;
		for (i = 0; i < part->depth && part->inflight > 1 && rc == 0; i++) {
			rc = pyspdk_lane_abort(lane, &part->slots[i]);
		}
		if (--part->inflight == 0) {
			pyspdk_part_over(part);
		}
	}
}

/* What the part has not started, and what no part has claimed yet, ends
 * with -ECANCELED. On the lane's thread, or on any thread for a part the
 * lane never took. */
static void
pyspdk_part_cancel(struct pyspdk_job_part *part)
{
	struct pyspdk_job *job = part->job;
	uint64_t i, unclaimed;

	part->cancelled = true;
	for (i = part->next; i < part->end; i++) {
		job->statuses[i] = -ECANCELED;
	}
	part->failed += part->end - part->next;
	part->next = part->end;
	unclaimed = __atomic_exchange_n(&job->cursor, job->count, __ATOMIC_RELAXED);
	for (i = unclaimed; i < job->count; i++) {
		job->statuses[i] = -ECANCELED;
		part->failed++;
	}
	if (part->inflight == 0) {
		pyspdk_part_over(part);
	}
}

/* Cancel the posted parts in `posted` (never taken by a lane) and, with a
 * lane, on its thread, the parts it runs. */
void
pyspdk_jobs_cancel(struct pyspdk_lane *lane, struct pyspdk_job_part *posted)
{
	struct pyspdk_job_part *part, *next;

	for (part = posted; part; part = next) {
		next = part->link;
		pyspdk_part_cancel(part);
	}
	for (part = lane ? lane->jobs : NULL; part; part = next) {
		next = part->link;
		pyspdk_part_cancel(part);
	}
}

void
pyspdk_jobs_start(struct pyspdk_lane *lane, struct pyspdk_job_part *posted)
{
	struct pyspdk_job_part *part, *next;
	uint32_t i;

	for (part = posted; part; part = next) {
		next = part->link;
		part->link = lane->jobs;
		lane->jobs = part;
		part->linked = true;
		part->starting = true;
		for (i = 0; i < part->depth && !part->cancelled; i++) {
			pyspdk_job_next(&part->slots[i]);
			if (part->inflight <= i) {
				break; /* nothing left to claim (or refused at once) */
			}
		}
		part->starting = false;
		if (part->ended) {
			pyspdk_part_over(part);
		}
	}
}

/* Any thread: check the offsets (bytes), convert them to blocks in place,
 * give the job a part on at most `nparts` of the device's lanes, and post it.
 * -EINVAL with *bad set to the first bad index; the device's refusal
 * (-EBADF, -ENODEV) when it is closed. */
int
pyspdk_job_post(struct pyspdk_dev *dev, struct pyspdk_job *job, struct pyspdk_job_part *parts,
		uint32_t nparts, int op, uint64_t *offsets, uint64_t count, uint64_t io_bytes,
		void *base, void *user, int32_t *statuses, uint32_t depth, uint64_t *bad)
{
	struct pyspdk_job_slot *slots;
	struct pyspdk_slot_block *block;
	uint32_t block_size = spdk_bdev_get_block_size(dev->bdev);
	uint64_t size = spdk_bdev_get_num_blocks(dev->bdev) * block_size;
	uint64_t i;
	uint32_t p, n, slot0, refused = 0;
	struct pyspdk_job_part *part;
	int rc = 0;

	if (!__atomic_load_n(&job->over, __ATOMIC_ACQUIRE)) {
		return -EBUSY; /* still running: never post a job twice */
	}
	if (count == 0 || depth == 0 || io_bytes == 0 || io_bytes % block_size || nparts == 0) {
		*bad = 0;
		return -EINVAL;
	}
	if ((block_size & (block_size - 1)) == 0) {
		/* The usual case, without a division per I/O (a big job's cost
		 * on the caller's thread was mostly these). */
		uint32_t shift = (uint32_t)__builtin_ctz(block_size);

		for (i = 0; i < count; i++) {
			if ((offsets[i] & (block_size - 1)) || offsets[i] > size ||
			    size - offsets[i] < io_bytes) {
				*bad = i;
				return -EINVAL;
			}
			offsets[i] >>= shift;
		}
	} else {
		for (i = 0; i < count; i++) {
			if (offsets[i] % block_size || offsets[i] > size ||
			    size - offsets[i] < io_bytes) {
				*bad = i;
				return -EINVAL;
			}
			offsets[i] /= block_size;
		}
	}
	n = nparts < dev->nlanes ? nparts : dev->nlanes;
	n = n < depth ? n : depth;
	n = n < count ? n : (uint32_t)count;
	memset(job, 0, sizeof(*job));
	job->dev = dev;
	job->op = op;
	job->offsets_blocks = offsets;
	job->count = count;
	job->io_blocks = (uint32_t)(io_bytes / block_size);
	job->io_bytes = io_bytes;
	job->base = base;
	job->user = user;
	job->statuses = statuses;
	job->parts_left = n;
	/* Chunks small enough that the parts end together, large enough that
	 * the shared cursor moves rarely: a claim whose line the other core
	 * wrote last costs about what a few I/Os do (at most 256 I/Os a chunk:
	 * two reactors did 2% more than at most 64). */
	job->chunk = count / (n * 8ULL);
	job->chunk = job->chunk < 1 ? 1 : job->chunk > 256 ? 256 : job->chunk;
	for (p = 0; p < n; p++) {
		part = &parts[p];
		memset(part, 0, sizeof(*part));
		part->job = job;
		part->lane = &dev->lanes[p];
		slot0 = (uint32_t)((uint64_t)depth * p / n);
		part->depth = (uint32_t)((uint64_t)depth * (p + 1) / n) - slot0;
		block = pyspdk_slots_take(part->lane, part->depth);
		if (!block) {
			while (p-- > 0) {
				pyspdk_slots_give_back(&parts[p]);
			}
			job->over = 1;
			return -ENOMEM;
		}
		part->block = block;
		part->slots = slots = block->slots;
		for (i = 0; i < part->depth; i++) {
			slots[i].part = part;
			slots[i].which = 0;
			slots[i].bounce[0] = user ? job->base + 2 * (slot0 + i) * io_bytes : NULL;
			slots[i].bounce[1] = user ? slots[i].bounce[0] + io_bytes : NULL;
		}
	}
	job->posted_ns = pyspdk_now_ns();
	/* All lanes or none: a device that began closing takes no part. */
	for (p = 0; p < n; p++) {
		pthread_mutex_lock(&dev->lanes[p].lock);
		if (!dev->lanes[p].accepting && !refused++) {
			rc = dev->lanes[p].refusal;
		}
	}
	for (p = 0; p < n; p++) {
		if (!refused) {
			parts[p].link = dev->lanes[p].jobs_posted;
			dev->lanes[p].jobs_posted = &parts[p];
		}
		pthread_mutex_unlock(&dev->lanes[p].lock);
	}
	if (refused) {
		for (p = 0; p < n; p++) {
			pyspdk_slots_give_back(&parts[p]);
		}
		job->over = 1;
		return rc;
	}
	for (p = 0; p < n; p++) {
		pyspdk_engine_kick(dev->lanes[p].home);
	}
	return 0;
}

/* Any thread: wait at most timeout_ns for the job to be over (spinning
 * spin_ns first; < 0: as the device's job latency suggests). 0, or
 * -ETIMEDOUT / -EINTR while it is not. */
int
pyspdk_job_wait(struct pyspdk_job *job, int64_t spin_ns, int64_t timeout_ns)
{
	int64_t lend_ns = pyspdk_adapt_spin(&job->dev->adapt_job, &spin_ns);

	return pyspdk_wait_word(&job->over, 0, spin_ns, timeout_ns, &g_pyspdk_io_spinners, lend_ns);
}

/* Once over: how many of the job's I/Os failed (their statuses are not 0). */
uint64_t
pyspdk_job_failures(struct pyspdk_job *job)
{
	return __atomic_load_n(&job->failed, __ATOMIC_ACQUIRE);
}

bool
pyspdk_job_is_over(struct pyspdk_job *job)
{
	return __atomic_load_n(&job->over, __ATOMIC_ACQUIRE) != 0;
}

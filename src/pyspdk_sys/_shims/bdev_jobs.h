/* _shims/bdev_jobs.h: many same-sized I/Os in one call (bdev_jobs.c).
 * Offsets are in bytes, converted to blocks in place; I/O i uses
 * base + i * io_bytes; statuses[i] as struct pyspdk_io's status, or
 * PYSPDK_JOB_ERRNO | errno for a failure the bdev gave as an errno (an aio
 * status: a timeout, a backend's OSError); zeroed by the caller: only
 * failures are written. A job runs as a part on each of up
 * to nparts of the device's lanes. With `user` (memory that is not DMA-able),
 * the data is at user + i * io_bytes instead, and base holds 2 * depth bounce
 * buffers of io_bytes. While `over` is 0 the engine holds the job and every
 * array it names; a new job must have over = 1. */
#ifndef PYSPDK_SHIMS_BDEV_JOBS_H
#define PYSPDK_SHIMS_BDEV_JOBS_H

#include "spdk/stdinc.h"

#include "bdev_io.h"

/* cffi begin */
#define PYSPDK_JOB_ERRNO 0x10000
struct pyspdk_job;
struct pyspdk_job_part;
#ifdef PYSPDK_CDEF
struct pyspdk_job {
	uint32_t over;
	...;
};
struct pyspdk_job_part {
	...;
};
#endif
int pyspdk_job_post(struct pyspdk_dev *dev, struct pyspdk_job *job, struct pyspdk_job_part *parts,
		    uint32_t nparts, int op, uint64_t *offsets, uint64_t count, uint64_t io_bytes,
		    void *base, void *user, int32_t *statuses, uint32_t depth, uint64_t *bad);
int pyspdk_job_wait(struct pyspdk_job *job, int64_t spin_ns, int64_t timeout_ns);
bool pyspdk_job_is_over(struct pyspdk_job *job);
uint64_t pyspdk_job_failures(struct pyspdk_job *job);
/* cffi end */

struct pyspdk_job_slot;

/* What one lane runs of a job, with `depth` slots: the I/Os [next, end) of
 * the chunk it claimed last. */
struct pyspdk_job_part {
	struct pyspdk_job *job;
	struct pyspdk_lane *lane;
	struct pyspdk_job_slot *slots; /* in `block`, the part's until it is over */
	struct pyspdk_slot_block *block;
	uint32_t depth;
	/* The lane's thread only, once posted. */
	uint64_t next;
	uint64_t end;
	uint64_t inflight;           /* I/Os handed to the bdev layer, not back */
	uint64_t failed;             /* I/Os whose status is not 0 */
	bool cancelled;
	bool starting;               /* defer the end until the start loop is done */
	bool ended;
	bool linked;                 /* on lane->jobs */
	struct pyspdk_job_part *link;
} __attribute__((aligned(PYSPDK_CACHE_LINE))); /* the owner aligns the array too */

struct pyspdk_job {
	struct pyspdk_dev *dev;
	int op;
	const uint64_t *offsets_blocks;
	uint64_t count;
	uint32_t io_blocks;
	uint64_t io_bytes;
	char *base;
	char *user;                  /* NULL: the I/Os' data is at base */
	int32_t *statuses;
	int64_t posted_ns;           /* for pyspdk_adapt */
	uint32_t parts_left;         /* parts not over (atomic) */
	uint32_t cancelled;          /* some part was cancelled (atomic) */
	uint64_t failed;             /* the parts' failures, once over (atomic) */
	uint64_t chunk;              /* I/Os a part claims at a time */
	/* Futex word: 0 the engine's, 1 over (or never posted): its owner's. */
	uint32_t over;
	/* The first I/O no part has claimed (atomic), on a line of its own: the
	 * lanes' cores write it, and read the fields above per I/O. */
	uint64_t cursor __attribute__((aligned(PYSPDK_CACHE_LINE)));
} __attribute__((aligned(PYSPDK_CACHE_LINE))); /* the owner aligns it too */

/* For bdev_io.c, on the lane's thread. */

/* Start the parts a lane was posted (linked through part->link). */
void pyspdk_jobs_start(struct pyspdk_lane *lane, struct pyspdk_job_part *posted);
/* Cancel the posted parts in `posted` (never taken by a lane; any thread)
 * and, with a lane, on its thread, the parts it runs. */
void pyspdk_jobs_cancel(struct pyspdk_lane *lane, struct pyspdk_job_part *posted);
/* Closing: abort each running part's I/Os in the bdev layer. */
void pyspdk_jobs_abort(struct pyspdk_lane *lane);

#endif /* PYSPDK_SHIMS_BDEV_JOBS_H */

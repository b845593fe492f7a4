/* _shims/bdev_jobs.c: many same-sized I/Os in one call (offsets in bytes,
 * converted to blocks in place; I/O i uses base + i * io_bytes; statuses[i]
 * as struct pyspdk_io's status, zeroed by the caller: only failures are
 * written), run by a part on each of up to nparts of the device's lanes.
 * With `user` (memory that is not DMA-able), the data is at
 * user + i * io_bytes instead, and base holds 2 * depth bounce buffers of
 * io_bytes. While `over` is 0 the engine holds the job and every array it
 * names; a new job must have over = 1. */
struct pyspdk_job {
	uint32_t over;
	...;
};
struct pyspdk_job_part {
	...;
};
int pyspdk_job_post(struct pyspdk_dev *dev, struct pyspdk_job *job, struct pyspdk_job_part *parts,
		    uint32_t nparts, int op, uint64_t *offsets, uint64_t count, uint64_t io_bytes,
		    void *base, void *user, int32_t *statuses, uint32_t depth, uint64_t *bad);
int pyspdk_job_wait(struct pyspdk_job *job, int64_t spin_ns, int64_t timeout_ns);
bool pyspdk_job_is_over(struct pyspdk_job *job);
uint64_t pyspdk_job_failures(struct pyspdk_job *job);

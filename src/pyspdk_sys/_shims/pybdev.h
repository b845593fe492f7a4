/* _shims/pybdev.h: block devices served by Python code (pybdev.c). SPDK
 * queues each I/O in C; Python workers fetch them in batches into bounce
 * memory of their own and commit results; a poller on the submitting SPDK
 * thread completes them. See pybdev.py. */
#ifndef PYSPDK_SHIMS_PYBDEV_H
#define PYSPDK_SHIMS_PYBDEV_H

#include "spdk/stdinc.h"

/* cffi begin */
#define PYSPDK_PYBDEV_REQ_WORDS 8
#define PYSPDK_PYBDEV_MAX_BATCH 1024 /* I/Os one fetch takes at most */
#define PYSPDK_PYBDEV_MAX_ALIGN 4096 /* arena places are aligned to the block, up to this */
/* The largest read or write the bdev layer sends (it splits larger ones), so
 * that no I/O needs more arena than this: 4 MiB. */
#define PYSPDK_PYBDEV_MAX_IO 4194304

struct pyspdk_pybdev;

/* App thread only. */
struct pyspdk_pybdev *pyspdk_pybdev_create(const char *name, uint32_t block_size,
					   uint64_t num_blocks, uint32_t ops, int64_t timeout_ns,
					   int *rc);
void pyspdk_pybdev_unregister(struct pyspdk_pybdev *pb);

/* Any thread. */
void pyspdk_pybdev_cancel(struct pyspdk_pybdev *pb);
/* Fail every I/O submitted so far with -EINTR; the device serves on. */
void pyspdk_pybdev_interrupt(struct pyspdk_pybdev *pb);
void pyspdk_pybdev_stop_workers(struct pyspdk_pybdev *pb);
int pyspdk_pybdev_fd(struct pyspdk_pybdev *pb);
void pyspdk_pybdev_watch_fd(struct pyspdk_pybdev *pb);
/* what: 0 unregistered, 1 gone, 2 unregister rc, 3 queued, 4 expired count. */
int pyspdk_pybdev_state(struct pyspdk_pybdev *pb, int what);
/* Rows of out: io, ticket, op, offset, length, the I/O's place in arena
 * (start, end), iovcnt; with `reads`, the *reads reads first. *want: the
 * arena size one more I/O needed, or 0. */
int pyspdk_pybdev_fetch(struct pyspdk_pybdev *pb, uint64_t *out, int max, int64_t spin_ns,
			int64_t timeout_ns, char *arena, uint64_t cap, uint64_t *want, int *reads);
/* A successful read's data is copied from its place in arena (fetch's). */
int pyspdk_pybdev_commit(struct pyspdk_pybdev *pb, const uint64_t *words, const int32_t *statuses,
			 int count, const char *arena);
/* Once gone, while SPDK's environment is up: its DPDK memory back. */
void pyspdk_pybdev_release_env(struct pyspdk_pybdev *pb);
/* Only once gone, with no worker left. */
void pyspdk_pybdev_free(struct pyspdk_pybdev *pb);
/* cffi end */

#endif /* PYSPDK_SHIMS_PYBDEV_H */

/* _shims/cq.h: completion queues (cq.c). A request submitted with io->cq set
 * is pushed there when over; pyspdk_cq_reap takes up to max of them (writing
 * their tags), waiting at most timeout_ns (0: no wait), spinning spin_ns
 * first (< 0: up to -spin_ns, and not at all on a CPU a reactor polls;
 * yielding between looks on a thread with one CPU). The eventfd is readable
 * while any wait. */
#ifndef PYSPDK_SHIMS_CQ_H
#define PYSPDK_SHIMS_CQ_H

#include "spdk/stdinc.h"

struct pyspdk_io;

/* cffi begin */
struct pyspdk_cq;
struct pyspdk_cq *pyspdk_cq_create(void);
void pyspdk_cq_destroy(struct pyspdk_cq *cq);
int pyspdk_cq_fd(struct pyspdk_cq *cq);
int pyspdk_cq_reap(struct pyspdk_cq *cq, uint64_t *tags, int max, int64_t spin_ns,
		   int64_t timeout_ns);
/* Spin (never sleep, never yield) at most spin_ns, as pyspdk_cq_reap would,
 * for something to arrive; whether something is there. */
bool pyspdk_cq_spin(struct pyspdk_cq *cq, int64_t spin_ns);
/* cffi end */

/* The engine (any thread): publish a finished request. After this its owner
 * may reuse or free it. */
void pyspdk_cq_push(struct pyspdk_cq *cq, struct pyspdk_io *io);

#endif /* PYSPDK_SHIMS_CQ_H */

/* _shims/cq.c: completion queues. A request submitted with io->cq set is
 * pushed there when over; pyspdk_cq_reap takes up to max of them (writing
 * their tags), waiting at most timeout_ns (0: no wait), spinning spin_ns
 * first (< 0: up to -spin_ns, and not at all on a CPU a reactor polls;
 * yielding between looks on a thread with one CPU). The eventfd is readable
 * while any wait. */
struct pyspdk_cq;
struct pyspdk_cq *pyspdk_cq_create(void);
void pyspdk_cq_destroy(struct pyspdk_cq *cq);
int pyspdk_cq_fd(struct pyspdk_cq *cq);
int pyspdk_cq_reap(struct pyspdk_cq *cq, uint64_t *tags, int max, int64_t spin_ns,
		   int64_t timeout_ns);
/* Spin (never sleep, never yield) at most spin_ns, as pyspdk_cq_reap would,
 * for something to arrive; whether something is there. */
bool pyspdk_cq_spin(struct pyspdk_cq *cq, int64_t spin_ns);
